"""Durable file writes: a file is either completely there or not there at all after a crash."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, *, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A temporary path for the caller to write `path`'s new contents to, in `tmp_dir` (as
    Maildir wants) or beside `path`. When the block ends without an exception the file is
    fsynced, renamed into place and the directory fsynced, so readers see the old file or the
    whole new one, even after a crash; when it raises, the temporary file is removed (a full
    disk must not keep a half-written one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique, because a replayed push may write the same file concurrently with the first.
    tmp = (tmp_dir / path.name) if tmp_dir else path.with_name(
        f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)  # the rename itself, not only the contents


def write_atomic(path: Path, data: bytes, *, tmp_dir: Path | None = None) -> Path:
    """`data` as the whole of `path`, durably (see `atomic_path`)."""
    with atomic_path(path, tmp_dir=tmp_dir) as tmp:
        tmp.write_bytes(data)
    return path


def _fsync(path: Path) -> None:
    """A file's contents, or a directory's entries, to disk: any descriptor of it will do."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
