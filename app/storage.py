"""Durable storage of memories and their patterns, behind a small interface.

``Storage`` is the interface the registry uses (``storage_interface.py``, with the records
it reads and writes; all re-exported here); ``SQLiteStorage`` implements it with
one SQLite file in WAL mode and ``synchronous=FULL``: a commit returns only once the
write-ahead log is fsynced, so an acknowledged write survives ``kill -9`` and power
loss. A server database (e.g. PostgreSQL) can be added later as another ``Storage``.

Layout under ``data_dir``:

    ams.sqlite3 (+ -wal, -shm)      memories, patterns and facts
    checkpoints/<memory id>/...     model checkpoints, written atomically (memory_core.files)
    cluster.sqlite3, shards/        the Ray mode's (app/cluster/): a sharded memory's patterns
                                    are in its shards' files, not in ams.sqlite3

Patterns are stored as float32 vectors (C-major image flattening) with their id,
caption (text) and metadata. Each row gets a sequence number from one global,
never-reused counter: it orders a memory's patterns (storage order = recall order
after a restart) and is the cursor of listings. Memory ids are never reused either,
so a checkpoint can never be mistaken for another memory's. Facts of relational
memories (a relation name and the argument names, as a JSON list) are kept the same
way in a table of their own, once each per memory; their sequence number is their id.

Failures. A write that fails (disk full: ``StorageFull``, 507; any other I/O error:
``StorageUnavailable``, 503) is rolled back whole: nothing of it is visible afterwards,
in this process or after a restart. On open, a checkpoint folder whose memory the
database does not hold is a leftover of a delete interrupted by a crash, and removed,
only if the database's id counter has passed it; a folder of an id the database never
gave out, or any folder beside a database that holds no memories (a lost or replaced
database file), stops the start with ``StorageDamaged`` rather than delete a model.
Stored vectors are checked as they are read (``iter_vectors``): a wrong length or a
non-finite number is ``DamagedPattern``, naming the patterns.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import MemoryExists, PatternExists  # raised here, answered as 409
from .storage_errors import DamagedPattern, StorageDamaged, storage_error
from .storage_interface import Fact, FactRow, MemoryRecord, NewPattern, PatternRow, Storage

__all__ = [
    "CLUSTER_FILE",
    "DamagedPattern",
    "Fact",
    "FactRow",
    "MemoryExists",
    "MemoryRecord",
    "NewPattern",
    "PatternExists",
    "PatternRow",
    "SQLiteStorage",
    "Storage",
    "StorageDamaged",
    "storage_error",
]


CLUSTER_FILE = "cluster.sqlite3"  # in a data directory of the Ray mode (app/cluster/storage.py)


# --- SQLite ---------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    shape TEXT NOT NULL,
    text INTEGER NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS patterns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    pid TEXT NOT NULL,
    vector BLOB NOT NULL,
    text TEXT,
    metadata TEXT,
    UNIQUE (memory_id, pid)
);
CREATE INDEX IF NOT EXISTS patterns_by_memory ON patterns (memory_id, seq);
CREATE TABLE IF NOT EXISTS facts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    relation TEXT NOT NULL,
    args TEXT NOT NULL,
    UNIQUE (memory_id, relation, args)
);
CREATE INDEX IF NOT EXISTS facts_by_memory ON facts (memory_id, seq);
"""


class SQLiteStorage(Storage):
    """SQLite in WAL mode with synchronous=FULL; one writer connection, one reader per thread.

    Arguments:
        data_dir: the directory of the database and checkpoints (created if missing).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "ams.sqlite3"
        self._write_lock = threading.Lock()  # SQLite has one writer at a time anyway
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._writer = self._connect()
        fresh = self._writer.execute("SELECT 1 FROM sqlite_master WHERE name = 'memories'").fetchone() is None
        try:
            with self._write_lock:
                self._writer.executescript(_SCHEMA)
            self._check_checkpoints(fresh)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn`` in one IMMEDIATE transaction; committed (and fsynced) on return. On any
        failure (``fn``'s, or the commit's: a full disk) the transaction is rolled back whole
        and the error raised, I/O errors as ``storage_error`` says."""
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:  # SQLite may have rolled back itself (SQLITE_FULL)
                        pass
                mapped = storage_error(exc)
                if mapped is not None:
                    raise mapped from exc
                raise
            return result

    # --- memories -------------------------------------------------------------------
    @staticmethod
    def _record(row: tuple) -> MemoryRecord:
        mid, name, kind, shape, text, config, created_at, extra = row
        return MemoryRecord(
            id=mid,
            name=name,
            kind=kind,
            shape=tuple(json.loads(shape)),
            text=bool(text),
            config=json.loads(config),
            created_at=created_at,
            extra=json.loads(extra),
        )

    def create_memory(
        self, name: str, kind: str, shape: tuple[int, ...], text: bool, config: dict[str, Any]
    ) -> MemoryRecord:
        created = time.time()

        def insert(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO memories (name, kind, shape, text, config, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, kind, json.dumps(list(shape)), int(text), json.dumps(config), created),
                )
            except sqlite3.IntegrityError:
                raise MemoryExists(name) from None
            return int(cur.lastrowid)

        mid = self._write(insert)
        return MemoryRecord(
            id=mid,
            name=name,
            kind=kind,
            shape=tuple(shape),
            text=text,
            config=dict(config),
            created_at=created,
        )

    def delete_memory(self, memory_id: int) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM patterns WHERE memory_id = ?", (memory_id,))
            conn.execute("DELETE FROM facts WHERE memory_id = ?", (memory_id,))
            conn.execute("DELETE FROM memories WHERE id = ?", (memory_id,))

        self._write(delete)
        # After the commit: a crash in between leaves an orphan directory that the next
        # start removes (_remove_orphan_checkpoints), never a memory without its files.
        ckpt = self._checkpoint_root() / str(memory_id)
        if ckpt.exists():
            shutil.rmtree(ckpt, ignore_errors=True)

    def list_memories(self) -> list[MemoryRecord]:
        rows = (
            self._reader()
            .execute(
                "SELECT id, name, kind, shape, text, config, created_at, extra FROM memories ORDER BY id"
            )
            .fetchall()
        )
        return [self._record(r) for r in rows]

    def set_extra(self, memory_id: int, extra: dict[str, Any]) -> None:
        payload = json.dumps(extra)
        self._write(
            lambda conn: conn.execute("UPDATE memories SET extra = ? WHERE id = ?", (payload, memory_id))
        )

    # --- patterns -------------------------------------------------------------------
    def add_patterns(self, memory_id: int, patterns: list[NewPattern]) -> list[int]:
        rows = [
            (
                memory_id,
                p.id,
                np.ascontiguousarray(p.vector, dtype="<f4").tobytes(),
                p.text,
                None if p.metadata is None else json.dumps(p.metadata),
            )
            for p in patterns
        ]

        def insert(conn: sqlite3.Connection) -> list[int]:
            seqs = []
            for row in rows:
                try:
                    cur = conn.execute(
                        "INSERT INTO patterns (memory_id, pid, vector, text, metadata) VALUES (?, ?, ?, ?, ?)",
                        row,
                    )
                except sqlite3.IntegrityError:
                    raise PatternExists(f"#{memory_id}", [row[1]]) from None
                seqs.append(int(cur.lastrowid))
            return seqs

        return self._write(insert)

    def delete_pattern(self, memory_id: int, pattern_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM patterns WHERE memory_id = ? AND pid = ?", (memory_id, pattern_id)
            )
            return cur.rowcount > 0

        return self._write(delete)

    @staticmethod
    def _row(row: tuple, with_vector: bool) -> PatternRow:
        seq, pid, text, metadata = row[:4]
        vector = np.frombuffer(row[4], dtype="<f4").astype(np.float32) if with_vector else None
        return PatternRow(
            seq=seq,
            id=pid,
            text=text,
            metadata=None if metadata is None else json.loads(metadata),
            vector=vector,
        )

    def get_pattern(self, memory_id: int, pattern_id: str) -> PatternRow | None:
        row = (
            self._reader()
            .execute(
                "SELECT seq, pid, text, metadata, vector FROM patterns WHERE memory_id = ? AND pid = ?",
                (memory_id, pattern_id),
            )
            .fetchone()
        )
        return None if row is None else self._row(row, with_vector=True)

    def get_texts(self, memory_id: int, pattern_ids: list[str]) -> dict[str, str | None]:
        wanted = list(dict.fromkeys(pattern_ids))
        out: dict[str, str | None] = {}
        conn = self._reader()
        for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
            part = wanted[start : start + 500]
            rows = conn.execute(
                f"SELECT pid, text FROM patterns WHERE memory_id = ? AND pid IN ({','.join('?' * len(part))})",
                (memory_id, *part),
            ).fetchall()
            out.update(rows)
        return out

    def page_patterns(self, memory_id: int, after_seq: int, limit: int) -> list[PatternRow]:
        rows = (
            self._reader()
            .execute(
                "SELECT seq, pid, text, metadata FROM patterns WHERE memory_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (memory_id, after_seq, limit),
            )
            .fetchall()
        )
        return [self._row(r, with_vector=False) for r in rows]

    def iter_vectors(
        self, memory_id: int, batch: int = 4096, dim: int | None = None
    ) -> Iterator[tuple[list[int], list[str], np.ndarray]]:
        after = -1
        conn = self._reader()
        while True:
            rows = conn.execute(
                "SELECT seq, pid, vector FROM patterns WHERE memory_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (memory_id, after, batch),
            ).fetchall()
            if not rows:
                return
            seqs = [r[0] for r in rows]
            ids = [r[1] for r in rows]
            want = 4 * dim if dim is not None else len(rows[0][2])
            odd = [r[1] for r in rows if not isinstance(r[2], bytes) or len(r[2]) != want or want == 0]
            if odd:
                raise DamagedPattern(f"stored vectors of a wrong length: patterns {odd[:10]}", odd)
            vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), -1)
            vectors = vectors.astype(np.float32)  # (n, D), a copy of its own
            bad = ~np.isfinite(vectors).all(axis=1)
            if bad.any():
                named = [ids[i] for i in np.flatnonzero(bad)]
                raise DamagedPattern(
                    f"stored vectors with NaN or infinite numbers: patterns {named[:10]}", named
                )
            yield seqs, ids, vectors
            after = seqs[-1]

    def count_patterns(self, memory_id: int) -> int:
        row = (
            self._reader()
            .execute("SELECT COUNT(*) FROM patterns WHERE memory_id = ?", (memory_id,))
            .fetchone()
        )
        return int(row[0])

    # --- facts ----------------------------------------------------------------------
    @staticmethod
    def _args_json(args: tuple[str, ...]) -> str:
        return json.dumps(list(args), ensure_ascii=False, separators=(",", ":"))  # one text per fact

    def add_facts(self, memory_id: int, facts: list[Fact]) -> tuple[list[int], int]:
        rows = [(memory_id, relation, self._args_json(args)) for relation, args in facts]

        def insert(conn: sqlite3.Connection) -> tuple[list[int], int]:
            ids, new = [], 0
            for row in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO facts (memory_id, relation, args) VALUES (?, ?, ?)", row
                )
                if cur.rowcount:
                    ids.append(int(cur.lastrowid))
                    new += 1
                else:
                    found = conn.execute(
                        "SELECT seq FROM facts WHERE memory_id = ? AND relation = ? AND args = ?", row
                    ).fetchone()
                    ids.append(int(found[0]))
            return ids, new

        return self._write(insert)

    def delete_fact(self, memory_id: int, fact_id: int) -> Fact | None:
        def delete(conn: sqlite3.Connection) -> Fact | None:
            rows = conn.execute(
                "DELETE FROM facts WHERE memory_id = ? AND seq = ? RETURNING relation, args",
                (memory_id, fact_id),
            ).fetchall()  # all: the statement ends before the commit
            return (rows[0][0], tuple(json.loads(rows[0][1]))) if rows else None

        return self._write(delete)

    def get_fact(self, memory_id: int, fact_id: int) -> FactRow | None:
        row = (
            self._reader()
            .execute(
                "SELECT seq, relation, args FROM facts WHERE memory_id = ? AND seq = ?", (memory_id, fact_id)
            )
            .fetchone()
        )
        return None if row is None else FactRow(row[0], row[1], tuple(json.loads(row[2])))

    def page_facts(self, memory_id: int, after_seq: int, limit: int) -> list[FactRow]:
        rows = (
            self._reader()
            .execute(
                "SELECT seq, relation, args FROM facts WHERE memory_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (memory_id, after_seq, limit),
            )
            .fetchall()
        )
        return [FactRow(seq, relation, tuple(json.loads(args))) for seq, relation, args in rows]

    # --- checkpoints ----------------------------------------------------------------
    def _checkpoint_root(self) -> Path:
        return self.data_dir / "checkpoints"

    def checkpoint_dir(self, memory_id: int) -> Path:
        path = self._checkpoint_root() / str(memory_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _check_checkpoints(self, fresh: bool) -> None:
        """Remove the checkpoint folders of memories deleted by an interrupted delete; raise
        ``StorageDamaged`` for folders the database cannot account for (module docstring)."""
        root = self._checkpoint_root()
        if not root.exists():
            return
        folders = [c for c in root.iterdir() if c.is_dir() and c.name.isdigit()]
        live = {r.id for r in self.list_memories()}
        row = self._reader().execute("SELECT seq FROM sqlite_sequence WHERE name = 'memories'").fetchone()
        given_out = 0 if row is None else int(row[0])  # the highest memory id ever given out
        unknown = sorted(int(c.name) for c in folders if int(c.name) not in live and int(c.name) > given_out)
        if unknown:  # ids past the counter: the database is older than the files, or new
            state = "is new (it had no tables)" if fresh else f"gave out memory ids up to {given_out} only"
            raise StorageDamaged(
                f"{self.path} {state}, but {root} holds checkpoints of memories {unknown[:10]}: the "
                "database file may have been lost, emptied or replaced. Restore it from a backup; or, "
                "to start without those models, move the checkpoints folder away."
            )
        for child in folders:
            if int(child.name) not in live:
                shutil.rmtree(child, ignore_errors=True)

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
