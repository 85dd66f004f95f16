"""The storage's failures: damage found on open or on read, and what a failed write is answered with.

``storage_error`` maps an exception of a write to the service's answer: a full disk or
quota (``StorageFull``, 507) or any other I/O error (``StorageUnavailable``, 503); the
write itself was rolled back whole (``storage.SQLiteStorage._write``).
"""

from __future__ import annotations

import errno
import sqlite3

from .exceptions import StorageFull, StorageUnavailable  # answered as 507, 503

__all__ = ["DamagedPattern", "StorageDamaged", "storage_error"]

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class StorageDamaged(RuntimeError):
    """The data directory is not in a state the service may start from (see the module docstring)."""


class DamagedPattern(ValueError):
    """Stored vectors that cannot be right: a wrong length or non-finite numbers; ``ids`` names them."""

    def __init__(self, message: str, ids: list[str]) -> None:
        super().__init__(message)
        self.ids = ids


def storage_error(exc: BaseException) -> Exception | None:
    """The service's error for a failed write (``StorageFull`` for a full disk or quota,
    ``StorageUnavailable`` for other I/O errors), or None when ``exc`` is neither."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return StorageFull(f"the disk is full: nothing was written ({exc.strerror})")
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL or "full" in str(exc).lower():
            return StorageFull("the disk is full: nothing was written (database or disk is full)")
        if type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError):
            return StorageUnavailable(f"storage failed: nothing was written ({exc})")
    if isinstance(exc, OSError):
        return StorageUnavailable(f"storage failed: nothing was written ({exc})")
    return None
