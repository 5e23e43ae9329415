"""One service per data directory, and a way for operator commands to nudge it.

Two services on one database would each treat the other's faxes in flight as crashed (they
would become `unknown` at the second start), so the service holds an exclusive `flock` on
`<data_dir>/fax-bridge.pid` while it runs; the kernel drops it when the process dies, even by
SIGKILL. The file holds the PID, so `fax-bridge retry` and `replay-quarantine` can send SIGUSR1
("look at the queues now") instead of leaving the service to notice within a minute, as
`postqueue -f` does for Postfix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from pathlib import Path

from bridge.errors import BridgeError

PID_FILE = "fax-bridge.pid"


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PID_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = _read_pid(self.path)
            raise BridgeError(f"another fax-bridge (pid {pid or '?'}) is already running on "
                              f"{self.path.parent}; stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays, harmlessly
            self._fd = None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(data_dir: Path) -> int | None:
    """The PID of the service running on `data_dir`, or None if none runs there."""
    path = data_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(path)  # held: the service is running
    else:
        return None  # nobody holds it: no service runs here
    finally:
        os.close(fd)


def wake_running(data_dir: Path) -> bool:
    """SIGUSR1 to the service running on `data_dir`, if one is; True if it was told.
    PermissionError when it runs as another user (it still looks at its queues every minute)."""
    pid = running_pid(data_dir)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):  # it ended just now
        os.kill(pid, signal.SIGUSR1)
        return True
    return False
