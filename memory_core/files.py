"""Files written atomically: a reader, and a crash, see the old file or the new one, never half.

Used for every file this project writes in place of another: ``PCMemory`` and ``PCGraph``
checkpoints (the service's model checkpoints among them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename or unlink inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, content: bytes | Callable[[Path], None]) -> None:
    """Write ``path`` atomically and durably: a temp file in the same folder, fsync, rename
    over ``path``, fsync the folder (so the rename itself survives a power loss).

    Arguments:
        path: the file to write; its folder is created if missing.
        content: the bytes, or a function that writes the content to the temp path it is given.

    On any error the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
