"""Every figure of bench/RESULTS.md, one script after another: never two at once, since on a
small machine they would measure each other.

    .venv/bin/python bench/run.py                      # all, at full size (about 10 minutes)
    .venv/bin/python bench/run.py --only intake,webhook

Each script prints its own figures beside the ceiling it measured in the same run, the machine,
a digest of the code and the command that produced them; this only runs them in turn and says
which failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = {  # RESULTS.md order: intake, webhook, latency, memory, documents, poller, stalls
    "intake": "intake.py",
    "webhook": "webhook.py",
    "latency": "latency.py",
    "memory": "memory.py",
    "documents": "documents.py",
    "poller": "poller.py",
    "stalls": "loop_stalls.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCRIPTS),
                        help=f"comma-separated, of: {', '.join(SCRIPTS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCRIPTS]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}")
    failed = []
    for name in chosen:
        print(f"\n===== {name}: bench/{SCRIPTS[name]} =====", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / SCRIPTS[name])], cwd=BENCH.parent)
        print(f"===== {name}: exit {code} after {time.monotonic() - started:.0f} s =====",
              flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
