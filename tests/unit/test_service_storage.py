"""Storage (SQLite), the readers-writer lock and the job manager, tested directly."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.exceptions import JobRunning
from app.jobs import JobManager
from app.rwlock import RWLock
from app.storage import MemoryExists, NewPattern, PatternExists, SQLiteStorage, StorageDamaged
from memory_core.files import atomic_write


@pytest.fixture
def storage(tmp_path):
    s = SQLiteStorage(tmp_path)
    yield s
    s.close()


def _patterns(ids, dim=3):
    return [
        NewPattern(id=i, vector=np.full(dim, k, dtype=np.float32), text=f"t{i}", metadata={"k": k})
        for k, i in enumerate(ids)
    ]


def test_durability_settings(storage):
    conn = storage._reader()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_memories_and_patterns_round_trip(storage, tmp_path):
    rec = storage.create_memory("m", "hopfield", (1, 2, 2), True, {"beta": 2.0})
    assert rec.dim == 4
    with pytest.raises(MemoryExists):
        storage.create_memory("m", "hopfield", (3,), False, {})
    seqs = storage.add_patterns(rec.id, _patterns(["a", "b", "c"], dim=4))
    assert seqs == sorted(seqs)
    # A batch with a taken id stores nothing, not even its good patterns.
    with pytest.raises(PatternExists):
        storage.add_patterns(rec.id, _patterns(["d", "b"], dim=4))
    assert [r.id for r in storage.page_patterns(rec.id, -1, 10)] == ["a", "b", "c"]
    row = storage.get_pattern(rec.id, "b")
    assert row.text == "tb" and row.metadata == {"k": 1} and row.vector.tolist() == [1.0] * 4
    page = storage.page_patterns(rec.id, -1, 2)
    assert [r.id for r in page] == ["a", "b"] and page[0].vector is None
    assert [r.id for r in storage.page_patterns(rec.id, page[-1].seq, 2)] == ["c"]
    assert storage.delete_pattern(rec.id, "b") and not storage.delete_pattern(rec.id, "b")
    batches = list(storage.iter_vectors(rec.id, batch=1))
    assert [b[1] for b in batches] == [["a"], ["c"]] and batches[1][2].shape == (1, 4)
    # A second storage on the same directory (a restart) sees the same.
    again = SQLiteStorage(tmp_path)
    (back,) = again.list_memories()
    assert (back.name, back.shape, back.text, back.config) == ("m", (1, 2, 2), True, {"beta": 2.0})
    again.close()


def test_delete_memory_deletes_its_data(storage, tmp_path):
    a = storage.create_memory("a", "hopfield", (3,), False, {})
    b = storage.create_memory("b", "hopfield", (3,), False, {})
    storage.add_patterns(a.id, _patterns(["x", "y"]))
    storage.add_patterns(b.id, _patterns(["x"]))
    ckpt = storage.checkpoint_dir(a.id) / "model.safetensors"
    ckpt.write_bytes(b"weights")
    storage.delete_memory(a.id)
    assert not ckpt.parent.exists()
    assert storage.page_patterns(a.id, -1, 10) == []
    assert [r.id for r in storage.page_patterns(b.id, -1, 10)] == ["x"]
    # The name is free again, under a new id: nothing of the old memory shows.
    a2 = storage.create_memory("a", "hopfield", (3,), False, {})
    assert a2.id != a.id and storage.page_patterns(a2.id, -1, 10) == []
    count = storage._reader().execute("SELECT COUNT(*) FROM patterns").fetchone()[0]
    assert count == 1


def test_orphan_checkpoints_are_removed_on_start_unknown_ones_stop_it(tmp_path):
    s = SQLiteStorage(tmp_path)
    rec = s.create_memory("a", "hopfield", (3,), False, {})
    gone = s.create_memory("b", "hopfield", (3,), False, {})
    kept, orphan = s.checkpoint_dir(rec.id), s.checkpoint_dir(gone.id)
    s._write(lambda conn: conn.execute("DELETE FROM memories WHERE id = ?", (gone.id,)))  # a delete cut short
    s.close()
    SQLiteStorage(tmp_path).close()
    assert kept.exists() and not orphan.exists()  # a leftover of a delete: removed
    unknown = tmp_path / "checkpoints" / "999"  # an id the database never gave out
    unknown.mkdir()
    with pytest.raises(StorageDamaged, match="999"):
        SQLiteStorage(tmp_path)
    assert unknown.exists() and kept.exists()  # nothing deleted
    unknown.rmdir()
    (tmp_path / "ams.sqlite3").write_bytes(b"")  # an emptied database beside a memory's checkpoints
    for extra in ("ams.sqlite3-wal", "ams.sqlite3-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    with pytest.raises(StorageDamaged, match="new"):
        SQLiteStorage(tmp_path)
    assert kept.exists()


def test_atomic_write(tmp_path):
    path = tmp_path / "ckpt" / "model.bin"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"one"))
    assert path.read_bytes() == b"one"

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fails)
    assert path.read_bytes() == b"one"  # the old file, whole
    assert [p.name for p in path.parent.iterdir()] == ["model.bin"]  # no temp file left


def test_rwlock_readers_share_writers_exclude():
    lock = RWLock()
    inside, peak, order = [0], [0], []
    guard = threading.Lock()

    def reader():
        with lock.read():
            with guard:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    def writer():
        with lock.write(), guard:
            order.append(("w", inside[0]))  # no reader inside while writing

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] >= 2  # readers overlapped
    assert order == [("w", 0)]


def test_job_manager_progress_conflict_cancel_and_failure():
    jobs = JobManager(workers=1, keep=10)
    release = threading.Event()

    def work(ctx):
        for epoch in range(1, 6):
            if not ctx.report(epoch, 5, energy=1.0 / epoch):
                return
            if epoch == 2:
                release.wait(5)

    job = jobs.submit("m", "train", work, patterns=3)
    with pytest.raises(JobRunning):
        jobs.submit("m", "train", work)
    deadline = time.monotonic() + 5
    while jobs.get(job.id)["epoch"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    mid = jobs.get(job.id)
    assert mid["status"] == "running" and mid["progress"] == pytest.approx(0.4) and mid["energy"] == 0.5
    assert mid["eta_seconds"] is not None and mid["eta_seconds"] >= 0
    release.set()
    while not jobs.get(job.id)["finished_at"] and time.monotonic() < deadline:
        time.sleep(0.01)
    done = jobs.get(job.id)
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["epoch"] == 5

    # Cancel: the work sees report() return False and stops.
    release.clear()
    job2 = jobs.submit("m", "train", work)
    while jobs.get(job2.id)["epoch"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    jobs.cancel(job2.id)
    release.set()
    while not jobs.get(job2.id)["finished_at"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert jobs.get(job2.id)["status"] == "cancelled" and jobs.get(job2.id)["epoch"] == 3

    def boom(ctx):
        raise ValueError("diverged")

    ended: list[str] = []
    job3 = jobs.submit("m", "train", boom, on_finish=ended.append)
    while not jobs.get(job3.id)["finished_at"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert jobs.get(job3.id)["status"] == "failed" and "diverged" in jobs.get(job3.id)["error"]
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended == ["failed"]  # on_finish runs however the job ends
    assert [j["id"] for j in jobs.list("m")] == [job.id, job2.id, job3.id]
    jobs.shutdown()


def test_job_queued_behind_another_and_cancelled_never_runs():
    jobs = JobManager(workers=1, keep=10)
    release, ran, ended = threading.Event(), [], []
    first = jobs.submit("a", "train", lambda ctx: release.wait(5))
    second = jobs.submit("b", "train", lambda ctx: ran.append(1), on_finish=ended.append)
    assert jobs.get(second.id)["status"] == "queued"  # one worker: waits for the first
    jobs.cancel(second.id)
    release.set()
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended == ["cancelled"] and ran == [] and jobs.get(first.id)["status"] == "succeeded"
    jobs.shutdown()
