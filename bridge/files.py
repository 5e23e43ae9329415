"""Durable file writes: a file is either completely there or not there at all after a crash."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, tmp_dir: Path | None = None) -> Path:
    """Write to a temporary name (in `tmp_dir`, as Maildir wants, or beside `path`), fsync,
    rename into place, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique, because a replayed push may write the same file concurrently with the first.
    tmp = (tmp_dir / path.name) if tmp_dir else path.with_name(
        f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep a half-written file
        raise
    os.replace(tmp, path)
    fsync_directory(path.parent)
    return path


def fsync_directory(directory: Path) -> None:
    """Make a rename itself durable, not only the file's contents."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
