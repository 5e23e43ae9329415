"""`fax-bridge COMMAND` run as a user runs it: `python -m bridge` in a child process, from the
repository, with none of the caller's FAX_BRIDGE_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAX_BRIDGE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bridge", *args], input=stdin,
                          capture_output=True, text=True, env=full_env, cwd=cwd or REPO,
                          timeout=60, check=False)
