"""Durable state of the Ray mode: each shard's SQLite file, and the gateway's sequence numbers.

``ShardStorage`` is ``SQLiteStorage`` (the same file format: one memory row and its
patterns) with what a shard needs beyond it: patterns inserted at sequence numbers the
gateway hands out (one counter per memory across all its shards, so that storage order,
listing cursors and ties between equal scores are those of one machine), and deletes of
a batch's ids when a store is called off.

``SeqCounter`` is the gateway's side: per memory, the next sequence number, with a
high-water mark made durable (in ``cluster.sqlite3`` beside the catalog) before any
number under it is handed out, so numbers are never reused across restarts.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import PatternExists
from ..storage import (
    CLUSTER_FILE,
    Fact,
    FactRow,
    MemoryRecord,
    NewPattern,
    PatternRow,
    SQLiteStorage,
    Storage,
)

__all__ = [
    "CLUSTER_FILE",
    "ClusterStorage",
    "SeqCounter",
    "ShardFileFault",
    "ShardFiles",
    "ShardStorage",
    "connect_cluster_file",
    "open_shard_file",
]

_BLOCK = 1 << 16  # sequence numbers reserved per durable write of the high-water mark
_META_TABLE = "CREATE TABLE IF NOT EXISTS shard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def connect_cluster_file(path: Path, *schema: str) -> sqlite3.Connection:
    """A connection to the gateway's ``cluster.sqlite3`` (WAL, every commit fsynced; shared by
    threads), with ``schema``'s statements run (``CREATE TABLE IF NOT EXISTS ...``)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in schema:
        conn.execute(statement)
    return conn


class ShardFileFault(Exception):
    """A shard's file is missing, or is not the one its shard made: the shard refuses to serve
    (it never starts empty in its place).

    Arguments (kept in ``args``, so that it pickles across Ray):
        message: what is wrong and what to do, naming the file.
        file: the file's path.
        reason: "shard_file_missing" or "shard_file_foreign".
    """

    def __init__(self, message: str, file: str = "", reason: str = "shard_file_missing") -> None:
        super().__init__(message, file, reason)
        self.message, self.file, self.reason = message, file, reason

    def __str__(self) -> str:
        return self.message


class ShardStorage(SQLiteStorage):
    """One shard's SQLite file (``data_dir/ams.sqlite3``), holding one memory's partition,
    and the file's identity token (table ``shard_meta``: see ``open_shard_file``)."""

    def file_token(self) -> str | None:
        """The identity token written into this file when its shard made it (None: none yet)."""
        conn = self._reader()
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'shard_meta'").fetchone() is None:
            return None
        row = conn.execute("SELECT value FROM shard_meta WHERE key = 'file_token'").fetchone()
        return None if row is None else str(row[0])

    def set_file_token(self, token: str) -> None:
        """Write the file's identity token (durable on return)."""

        def put(conn: sqlite3.Connection) -> None:
            conn.execute(_META_TABLE)
            conn.execute("INSERT OR REPLACE INTO shard_meta VALUES ('file_token', ?)", (token,))

        self._write(put)

    def open_memory(
        self, name: str, kind: str, shape: tuple[int, ...], text: bool, config: dict
    ) -> MemoryRecord:
        """The shard's memory row: created on the shard's first start, read on every restart."""
        for record in self.list_memories():
            if record.name == name:
                return record
        return self.create_memory(name, kind, shape, text, config)

    def add_patterns_at(self, memory_id: int, patterns: list[NewPattern], seqs: list[int]) -> None:
        """Insert patterns at the given sequence numbers in one transaction (durable on return);
        ``PatternExists`` (nothing stored) when an id is taken."""
        rows = [
            (
                seq,
                memory_id,
                p.id,
                np.ascontiguousarray(p.vector, dtype="<f4").tobytes(),
                p.text,
                None if p.metadata is None else json.dumps(p.metadata),
            )
            for p, seq in zip(patterns, seqs, strict=True)
        ]

        def insert(conn: sqlite3.Connection) -> None:
            for row in rows:
                try:
                    conn.execute(
                        "INSERT INTO patterns (seq, memory_id, pid, vector, text, metadata) VALUES (?, ?, ?, ?, ?, ?)",
                        row,
                    )
                except sqlite3.IntegrityError:
                    raise PatternExists(f"#{memory_id}", [row[2]]) from None

        self._write(insert)

    def delete_staged(self, memory_id: int, rows: list[tuple[str, int]]) -> None:
        """Delete the rows of these (id, sequence number) pairs where present, in one transaction
        (durable on return). Sequence numbers are never reused, so a pattern of that id stored
        earlier (at another number) stays."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM patterns WHERE memory_id = ? AND pid = ? AND seq = ?",
                [(memory_id, pid, seq) for pid, seq in rows],
            )

        self._write(delete)

    def max_seq(self, memory_id: int) -> int:
        """The largest sequence number stored (0 when none)."""
        row = (
            self._reader()
            .execute("SELECT MAX(seq) FROM patterns WHERE memory_id = ?", (memory_id,))
            .fetchone()
        )
        return int(row[0] or 0)


_PUT_BACK = (
    "put the shard's file back (from the node's disk or a backup) and restart the shard, or delete the memory"
)


def _read_token(path: Path) -> tuple[bool, str | None]:
    """(whether ``path`` is a shard file of this service, its identity token or None), read
    through a read-only connection (``immutable=1``, or ``mode=ro`` beside a -wal file):
    nothing is ever written to a file that may be another's, nor to one that is no shard's at
    all. An empty database (no tables: a shard stopped while making its file) counts as a
    shard's file without a token; a file that is not SQLite, or whose tables are none of this
    service's, does not count."""
    # without a -wal file everything is in the file itself: read it as immutable (no locks,
    # no -wal or -shm made beside it); with one, read-only through it (its -shm may be made)
    mode = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=30.0)
    except sqlite3.Error:
        return False, None
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "shard_meta" not in tables:
            return not tables or "memories" in tables, None
        row = conn.execute("SELECT value FROM shard_meta WHERE key = 'file_token'").fetchone()
        return True, None if row is None else str(row[0])
    except sqlite3.DatabaseError:  # not a SQLite file at all
        return False, None
    finally:
        conn.close()


def _check_token(path: Path, expected: str | None, may_create: bool) -> str | None:
    """The existing file's token, or ``ShardFileFault`` (nothing opened for writing) when it
    is not the shard's own file (see ``open_shard_file``)."""
    ours, found = _read_token(path)
    if not ours:
        raise ShardFileFault(
            f"its file {path} is not a shard file of this service: it is not served (and left "
            f"as it is); {_PUT_BACK}",
            str(path),
            "shard_file_foreign",
        )
    if found is None and expected is not None and not may_create:
        raise ShardFileFault(
            f"its file {path} has no identity token, but the shard's file had one: it is not "
            f"this shard's file; {_PUT_BACK}",
            str(path),
            "shard_file_foreign",
        )
    if found is not None and expected is not None and found != expected:
        raise ShardFileFault(
            f"its file {path} is another shard's file (identity token {found[:8]}..., "
            f"expected {expected[:8]}...): it is not served; {_PUT_BACK}",
            str(path),
            "shard_file_foreign",
        )
    return found


def open_shard_file(data_dir: Path, expected: str | None, may_create: bool) -> tuple[ShardStorage, str]:
    """A shard's file, checked to be the one its shard made: (storage, the file's token).

    Arguments:
        data_dir: the shard's folder (its file is ``data_dir/ams.sqlite3``).
        expected: the token the gateway recorded for this shard; None for a shard made
            before tokens existed (an existing file is adopted: its token, or a new one
            written into it, is the shard's from now on).
        may_create: the shard is new (the gateway is creating it, and it has never reported
            its file): a missing file is made, with ``expected`` (or a new token) in it.

    ``ShardFileFault`` when the file is missing and the shard is not new, or when its token
    differs from ``expected`` (another shard's or another cluster's file), or it has none
    though the gateway expects one, or it is no shard file of this service. The file is
    checked through a read-only connection before it is opened for writing, so a refused
    file (and its folder) is left byte for byte as it was, however often it is checked
    (a shard without its file looks again every 2 s).
    """
    path = Path(data_dir) / "ams.sqlite3"
    found = None
    if path.is_file():
        found = _check_token(path, expected, may_create)
    elif not may_create:
        raise ShardFileFault(
            f"its file {path} is missing (the node's disk was wiped, or AMS_NODE_DATA_DIR / "
            f"AMS_SHARD_DATA_DIR points elsewhere than when the shard was made): it does not start "
            f"empty; {_PUT_BACK}",
            str(path),
        )
    storage = ShardStorage(Path(data_dir))
    try:
        if found is None:
            found = expected or secrets.token_hex(16)
            storage.set_file_token(found)
    except BaseException:
        storage.close()
        raise
    return storage, found


class ShardFiles:
    """Per memory and shard, the identity token of the shard's file, in the gateway's
    ``cluster.sqlite3`` (table ``shard_files``): recorded before a new shard first starts
    (``confirmed`` 0), confirmed once the shard reports its file made; a shard made before
    tokens existed has no row until it reports the token of the file it adopted.

    Arguments:
        path: the gateway's ``cluster.sqlite3`` (the table is created if missing).
    """

    def __init__(self, path: Path) -> None:
        self._conn = connect_cluster_file(
            path,
            "CREATE TABLE IF NOT EXISTS shard_files (memory_id INTEGER NOT NULL, shard INTEGER NOT NULL,"
            " token TEXT NOT NULL, confirmed INTEGER NOT NULL, PRIMARY KEY (memory_id, shard))",
        )
        self._lock = threading.Lock()
        self._confirmed: set[tuple[int, int]] = set()

    def expected(self, memory_id: int, shards: int, new: bool) -> list[tuple[str | None, bool]]:
        """Per shard, (the token its file must hold or None, whether it may make its file).
        ``new``: the memory is being created now (fresh tokens are recorded first)."""
        with self._lock:
            if new:
                tokens = [secrets.token_hex(16) for _ in range(shards)]
                self._conn.execute("DELETE FROM shard_files WHERE memory_id = ?", (memory_id,))
                self._conn.executemany(
                    "INSERT INTO shard_files VALUES (?, ?, ?, 0)",
                    [(memory_id, i, t) for i, t in enumerate(tokens)],
                )
                return [(t, True) for t in tokens]
            rows = {
                shard: (token, bool(confirmed))
                for shard, token, confirmed in self._conn.execute(
                    "SELECT shard, token, confirmed FROM shard_files WHERE memory_id = ?", (memory_id,)
                )
            }
            # a shard never confirmed never made its file (or never reported it): it may make it
            return [(rows[i][0], not rows[i][1]) if i in rows else (None, False) for i in range(shards)]

    def confirm(self, memory_id: int, shard: int, token: str) -> None:
        """The shard reported its file's ``token``: record it (a shard made before tokens:
        the file it adopted) or confirm the recorded one. A different recorded token stays."""
        if (memory_id, shard) in self._confirmed:
            return
        with self._lock:
            self._conn.execute(
                "INSERT INTO shard_files VALUES (?, ?, ?, 1) ON CONFLICT(memory_id, shard) "
                "DO UPDATE SET confirmed = 1 WHERE token = excluded.token",
                (memory_id, shard, token),
            )
            row = self._conn.execute(
                "SELECT token, confirmed FROM shard_files WHERE memory_id = ? AND shard = ?",
                (memory_id, shard),
            ).fetchone()
            if row == (token, 1):
                self._confirmed.add((memory_id, shard))

    def forget(self, memory_id: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM shard_files WHERE memory_id = ?", (memory_id,))
            self._confirmed = {k for k in self._confirmed if k[0] != memory_id}

    def close(self) -> None:
        self._conn.close()


class SeqCounter:
    """Per memory, sequence numbers for new patterns, never reused (see the module docstring).

    Arguments:
        path: the SQLite file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect_cluster_file(
            path,
            "CREATE TABLE IF NOT EXISTS seqs (memory_id INTEGER PRIMARY KEY, high INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('cluster_id', ?)", (secrets.token_hex(4),))
        # Names this data directory's actors, so that two services never share one by name.
        self.cluster_id: str = self._conn.execute(
            "SELECT value FROM meta WHERE key = 'cluster_id'"
        ).fetchone()[0]
        self._lock = threading.Lock()
        self._next: dict[int, int] = {}
        self._high: dict[int, int] = dict(self._conn.execute("SELECT memory_id, high FROM seqs").fetchall())

    def start(self, memory_id: int, at_least: int) -> None:
        """Before the first ``take`` after a start: numbers continue above ``at_least`` (the
        largest stored) and above every number reserved before."""
        with self._lock:
            self._next[memory_id] = max(at_least + 1, self._high.get(memory_id, 0) + 1)
            self._high[memory_id] = self._next[memory_id] - 1  # the next take reserves a block

    def take(self, memory_id: int, n: int) -> list[int]:
        """``n`` new increasing sequence numbers (their block's high-water mark durable first)."""
        with self._lock:
            first = self._next.get(memory_id, self._high.get(memory_id, 0) + 1)
            last = first + n - 1
            if last > self._high.get(memory_id, 0):
                high = last + _BLOCK
                self._conn.execute(
                    "INSERT INTO seqs (memory_id, high) VALUES (?, ?) "
                    "ON CONFLICT(memory_id) DO UPDATE SET high = excluded.high",
                    (memory_id, high),
                )
                self._high[memory_id] = high
            self._next[memory_id] = last + 1
            return list(range(first, last + 1))

    def forget(self, memory_id: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM seqs WHERE memory_id = ?", (memory_id,))
            self._next.pop(memory_id, None)
            self._high.pop(memory_id, None)

    def close(self) -> None:
        self._conn.close()


class ClusterStorage(Storage):
    """The gateway's storage: the catalog (``SQLiteStorage``: memories, and the patterns of
    memories that are not sharded), with the reads of a sharded memory's patterns (pages,
    one pattern, captions) answered by its shards.

    Arguments:
        catalog: the catalog.
        sharded: memory id -> its ``ShardedMemory``, or None for a memory held whole.
    """

    def __init__(self, catalog: Storage, sharded: Callable[[int], Any]) -> None:
        self.catalog, self._sharded = catalog, sharded

    def create_memory(self, name, kind, shape, text, config):  # type: ignore[no-untyped-def]
        return self.catalog.create_memory(name, kind, shape, text, config)

    def delete_memory(self, memory_id: int) -> None:
        self.catalog.delete_memory(memory_id)

    def list_memories(self) -> list[MemoryRecord]:
        return self.catalog.list_memories()

    def set_extra(self, memory_id: int, extra: dict[str, Any]) -> None:
        self.catalog.set_extra(memory_id, extra)

    def add_patterns(self, memory_id: int, patterns: list[NewPattern]) -> list[int]:
        return self.catalog.add_patterns(memory_id, patterns)

    def delete_pattern(self, memory_id: int, pattern_id: str) -> bool:
        return self.catalog.delete_pattern(memory_id, pattern_id)

    def get_pattern(self, memory_id: int, pattern_id: str) -> PatternRow | None:
        sharded = self._sharded(memory_id)
        if sharded is not None:
            return sharded.get_pattern(pattern_id)
        return self.catalog.get_pattern(memory_id, pattern_id)

    def get_texts(self, memory_id: int, pattern_ids: list[str]) -> dict[str, str | None]:
        sharded = self._sharded(memory_id)
        if sharded is not None:
            return sharded.get_texts(pattern_ids)
        return self.catalog.get_texts(memory_id, pattern_ids)

    def page_patterns(self, memory_id: int, after_seq: int, limit: int) -> list[PatternRow]:
        sharded = self._sharded(memory_id)
        if sharded is not None:
            return sharded.page(after_seq, limit)
        return self.catalog.page_patterns(memory_id, after_seq, limit)

    def iter_vectors(
        self, memory_id: int, batch: int = 4096, dim: int | None = None
    ) -> Iterator[tuple[list[int], list[str], np.ndarray]]:
        return self.catalog.iter_vectors(memory_id, batch, dim)

    def count_patterns(self, memory_id: int) -> int:
        sharded = self._sharded(memory_id)
        return sharded.count if sharded is not None else self.catalog.count_patterns(memory_id)

    # A relational memory's facts are never sharded: the catalog holds them, as in one process.
    def add_facts(self, memory_id: int, facts: list[Fact]) -> tuple[list[int], int]:
        return self.catalog.add_facts(memory_id, facts)

    def delete_fact(self, memory_id: int, fact_id: int) -> Fact | None:
        return self.catalog.delete_fact(memory_id, fact_id)

    def get_fact(self, memory_id: int, fact_id: int) -> FactRow | None:
        return self.catalog.get_fact(memory_id, fact_id)

    def page_facts(self, memory_id: int, after_seq: int, limit: int) -> list[FactRow]:
        return self.catalog.page_facts(memory_id, after_seq, limit)

    def checkpoint_dir(self, memory_id: int) -> Path:
        return self.catalog.checkpoint_dir(memory_id)

    def close(self) -> None:
        self.catalog.close()
