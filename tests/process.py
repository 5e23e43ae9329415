"""The real `fax-bridge serve` as a child process, for the tests that kill, stop or starve it.

Settings are written as the TOML file an operator would write (secrets come from the
environment, as in production); the ports are read from the service's own "listening" log line,
so every start may bind fresh ephemeral ports on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bridge import config
from bridge.config import Settings
from bridge.simulators import FaxMaxSimulator
from tests.relay import RelaySink
from tests.settings import settings_for
from tests.sql import read

LISTENING = re.compile(r"fax-bridge listening: SMTP [^:]+:(\d+), HTTP [^:]+:(\d+)")


class ServeProcess:
    """`fax-bridge serve -c FILE`, started and stopped by the test; its log is kept in one
    file across restarts."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "fax-bridge.toml"
        self.log_path = workdir / "serve.log"
        self.db_path = settings.data_path / "fax-bridge.sqlite3"
        self.settings = settings
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FAX_BRIDGE_")}
        self.env["FAX_BRIDGE_FAXMAX__TOKEN"] = settings.faxmax.token
        self.env["FAX_BRIDGE_HTTP__PUSH_TOKEN"] = settings.http.push_token
        secrets_masked = config.masked(replace(settings, source=""))
        self.config_path.write_text(config.to_toml(secrets_masked))
        self.proc: asyncio.subprocess.Process | None = None
        self.smtp_port = 0
        self.http_port = 0
        self.starts = 0

    async def start(self, timeout: float = 30.0) -> None:
        """Start the service and return once both listeners are bound."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "serve", "-c", str(self.config_path),
                cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            with self.log_path.open("rb") as fp:
                fp.seek(offset)
                found = LISTENING.search(fp.read().decode(errors="replace"))
            if found:
                self.smtp_port, self.http_port = int(found[1]), int(found[2])
                return
            if self.proc.returncode is not None:
                raise AssertionError(f"fax-bridge serve exited with {self.proc.returncode}:\n"
                                     f"{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"fax-bridge serve did not start:\n{self.log()[-4000:]}")
            await asyncio.sleep(0.02)

    async def start_failing(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a start that is to fail: its exit code, standard output and standard error."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "-c", str(self.config_path),
            cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"fax-bridge serve did not exit within {timeout}s") from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    @property
    def push_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/faxmax/push/{self.settings.http.push_token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs, as in an OOM kill."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        """The exit code; a service that does not exit in time is killed and the test fails."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"fax-bridge did not exit within {timeout}s:\n"
                                 f"{self.log()[-4000:]}") from None

    async def stop(self) -> None:
        """SIGTERM and wait; used at the end of a test."""
        if self.running():
            self.signal(signal.SIGTERM)
            await self.wait()

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read the store from outside, as an operator's tools would."""
        return read(self.db_path, sql, params)

    def integrity(self) -> str:
        db = sqlite3.connect(self.db_path, timeout=10)
        try:
            return str(db.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            db.close()


# --- started against the test's FaxMAX simulator and relay sink ----------------------------


async def start(started: list[ServeProcess], tmp_path: Path, sim: FaxMaxSimulator,
                relay: RelaySink, /, *, shutdown_timeout: float = 30,
                **sections: dict[str, object]) -> ServeProcess:
    """Start `fax-bridge serve` on `settings_for` settings and point the simulator's pushes at
    it; `started` is the `serve` fixture's list, whose processes are stopped after the test."""
    settings = settings_for(tmp_path, sim.url, relay.port, **sections)
    process = ServeProcess(replace(settings, shutdown_timeout=shutdown_timeout), tmp_path)
    started.append(process)
    await process.start()
    sim.push_url = process.push_url
    return process


def job_states(process: ServeProcess) -> list[str]:
    """Every job's state, oldest first, read from the store of a running or stopped service."""
    return [str(state) for (state,) in process.query("SELECT state FROM jobs ORDER BY id")]
