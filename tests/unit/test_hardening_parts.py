"""The hardening's parts, each alone: the JSON item splitter against json.loads, the memory budget,
token buckets, job cancellation and fair slots (with real PC training), config checks, storage
errors, recovery of a damaged memory, and the machine's memory as the budget reads it."""

from __future__ import annotations

import errno
import json
import resource
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from app.budget import MemoryBudget, available_memory
from app.exceptions import MemoryBudgetExceeded, ServerBusy, StorageFull, StorageUnavailable
from app.jobs import JobManager
from app.jsonbody import NotAnEnvelope, array_items, check_values, value_count
from app.kinds.base import check_caps, check_fields
from app.kinds.failed import FailedMemory
from app.ratelimit import TokenBuckets
from app.recovery import recover_all
from app.storage import NewPattern, SQLiteStorage, storage_error
from memory_core import PCConfig, PCMemory

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the JSON item splitter --------------------------------------------------------------------
_text = st.text(alphabet=st.sampled_from('ab"\\[]{},: \n\u00e9'), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-1, 1), _text)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)
_item = st.dictionaries(_text, _value, max_size=4)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(_item, max_size=5), indent=st.sampled_from([None, 1, 4]), ascii_only=st.booleans())
def test_array_items_finds_each_item_as_json_does(items, indent, ascii_only):
    body = json.dumps({"patterns": items}, indent=indent, ensure_ascii=ascii_only).encode()
    spans = array_items(body, "patterns")
    assert [json.loads(body[a:b]) for a, b in spans] == items


@pytest.mark.parametrize(
    ("body", "malformed"),
    [
        (b'{"patterns": [{}], "x": 1}', False),  # another member
        (b'{"x": 1, "patterns": [{}]}', False),
        (b'{"patterns": [1, 2]}', False),  # items that are no objects
        (b'{"patterns": {}}', False),
        (b'{"patterns": [{"a": "}"}', True),  # cut short
        (b'{"patterns": [{"a": 1}] } x', True),
        (b'{"patterns": [{"a": 1} {"b": 2}]}', True),
        (b'{"patterns": [{"a": "\\"}]}', True),  # the quote is escaped: the string never ends
        (b"", True),
    ],
)
def test_array_items_refuses_other_bodies(body, malformed):
    with pytest.raises(NotAnEnvelope) as refused:
        array_items(body, "patterns")
    assert refused.value.malformed is malformed


def test_values_are_counted_by_commas_in_slices():
    body = b"[" + b"0," * 3_000_000 + b"0]"
    assert value_count(body) == 3_000_001
    assert value_count(body, 0, 5) == 3
    check_values(body, 3_000_001, "x")
    with pytest.raises(Exception, match="takes at most 10"):
        check_values(body, 10, "a recall")


# --- the memory budget -------------------------------------------------------------------------
def test_budget_refuses_what_never_fits_and_waits_for_what_will():
    resident = [600]
    budget = MemoryBudget(1000, resident=lambda: resident[0], wait_s=0.3)
    with pytest.raises(MemoryBudgetExceeded) as too_big:
        budget.check(401, "a model")
    assert too_big.value.details == {"needed_bytes": 401, "free_bytes": 400, "limit_bytes": 1000}
    held = budget.hold(300, "a job")
    with pytest.raises(ServerBusy) as busy:  # fits once the job ends, not now
        budget.check(200, "a store")
    assert busy.value.headers == {"Retry-After": "1"}
    threading.Timer(0.1, held.release).start()
    with budget.reserve(200, "a store"):  # waits for the release
        assert budget.usage() == {"limit": 1000, "resident": 600, "transient": 200, "free": 200}
    held.release()  # idempotent
    assert budget.transient == 0


def test_available_memory_follows_the_address_space_limit():
    unlimited, _ = available_memory()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text().splitlines()
    size = int(next(line for line in status if line.startswith("VmSize:")).split()[1]) * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), hard))
        free, source = available_memory()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert source == "RLIMIT_AS" and 0 < free <= 1 << 30 and unlimited > 0


# --- rate limits -------------------------------------------------------------------------------
def test_token_buckets_refill_at_the_rate_and_hold_a_burst():
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", now=0.0) == pytest.approx(0.5)  # one token back in 1/rate s
    assert buckets.take("other", now=0.0) == 0.0  # each identity its own bucket
    assert buckets.take("k", now=0.6) == 0.0
    assert buckets.take("k", now=100.0) == 0.0 and buckets.take("k", now=100.0) == 0.0  # at most `burst`


# --- jobs ----------------------------------------------------------------------------------------
def _fit_forever(model: PCMemory, patterns: torch.Tensor):
    def work(ctx):
        model.fit(
            patterns,
            epochs=10**9,
            progress=False,
            callback=lambda i: ctx.report(i["epoch"], None, i["energy"]),
        )

    return work


def _wait(jobs: JobManager, job_id: str, status: set[str], timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(job_id)
        if job["status"] in status:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} not {status} after {timeout} s: {jobs.get(job_id)}")


def test_a_job_is_cancelled_within_one_step_of_a_long_fit():
    PCMemory([4, 8], device="cpu").fit(torch.rand(4, 8), epochs=1, progress=False)  # Adam's first use imports
    jobs = JobManager(workers=1)
    patterns = torch.rand(64, 32)
    slow = PCMemory([64, 128, 32], device="cpu", train_steps=10_000, batch_size=64)  # one minibatch: ~seconds
    job = jobs.submit("m", "train", _fit_forever(slow, patterns))
    _wait(jobs, job.id, {"running"})
    time.sleep(0.2)
    start = time.monotonic()
    jobs.cancel(job.id)
    assert _wait(jobs, job.id, {"cancelled"}, 5)["epoch"] == 0  # stopped inside its first epoch
    assert time.monotonic() - start < 1.0
    jobs.shutdown()


def test_jobs_share_one_slot_in_time_slices():
    jobs = JobManager(workers=1, slice_s=0.05)
    patterns = torch.rand(16, 16)
    first = jobs.submit("a", "train", _fit_forever(PCMemory([8, 16], device="cpu"), patterns))
    _wait(jobs, first.id, {"running"})
    second = jobs.submit("b", "train", _fit_forever(PCMemory([8, 16], device="cpu"), patterns))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and jobs.get(second.id)["epoch"] < 3:
        time.sleep(0.02)
    a, b = jobs.get(first.id), jobs.get(second.id)
    assert b["epoch"] >= 3 and a["status"] == b["status"] == "running", (a, b)
    jobs.shutdown(5)
    assert {jobs.get(j.id)["status"] for j in (first, second)} == {"cancelled"}


def test_cancelling_a_memory_at_once_after_submitting_never_fails():
    jobs, ended = JobManager(workers=1), []
    for i in range(50):  # the cancel may come before the job's thread has started
        jobs.submit(f"m{i}", "train", lambda ctx: time.sleep(0.01), on_finish=ended.append)
        assert jobs.cancel_memory(f"m{i}", wait=5)
    assert len(ended) == 50
    again = jobs.submit("m0", "train", lambda ctx: None)  # the name is free again
    _wait(jobs, again.id, {"succeeded"})
    jobs.shutdown()


# --- config checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"seed": 2**70}, "config.seed must be an integer"),
        ({"epochs": 1.5}, "config.epochs must be an integer"),
        ({"infer_lr": float("nan")}, "config.infer_lr must be a finite number"),
        ({"precisions": [1.0, "x"]}, "config.precisions must be a list"),
        ({"restart_adam": 1}, "config.restart_adam must be a boolean"),
        ({"batch_size": None}, None),
        ({"sizes": [8, 16]}, None),
    ],
)
def test_check_fields_follows_the_dataclass_types(config, message):
    if message is None:
        check_fields(config, PCConfig)
    else:
        with pytest.raises(ValueError, match=message):
            check_fields(config, PCConfig)


def test_check_caps_by_key_name():
    check_caps({"epochs": 10, "train_steps": 10, "recall_iters": 3, "seed": 10**6}, 10, 10)
    with pytest.raises(ValueError, match="AMS_MAX_EPOCHS"):
        check_caps({"epochs": 11}, 10, 10)
    with pytest.raises(ValueError, match=r"config\.complete_steps = 11 is over AMS_MAX_SOLVER_STEPS"):
        check_caps({"complete_steps": 11}, 10, 10)


# --- storage -------------------------------------------------------------------------------------
def test_storage_errors_say_full_or_failing():
    assert isinstance(storage_error(OSError(errno.ENOSPC, "No space left on device")), StorageFull)
    assert isinstance(storage_error(OSError(errno.EDQUOT, "Disk quota exceeded")), StorageFull)
    assert isinstance(storage_error(sqlite3.OperationalError("database or disk is full")), StorageFull)
    assert isinstance(storage_error(sqlite3.OperationalError("disk I/O error")), StorageUnavailable)
    assert storage_error(ValueError("not storage")) is None


def test_recovery_fails_one_memory_and_loads_the_others(tmp_path):
    storage = SQLiteStorage(tmp_path)
    good = storage.create_memory("good", "hopfield", (2,), False, {})
    bad = storage.create_memory("bad", "hopfield", (2,), False, {})
    newer = storage.create_memory("newer", "relational-v9", (2,), False, {})
    for record in (good, bad):
        storage.add_patterns(record.id, [NewPattern("a", torch.tensor([0.1, 0.2]).numpy())])
    storage._write(
        lambda conn: conn.execute("UPDATE patterns SET vector = ? WHERE memory_id = ?", (b"\0" * 12, bad.id))
    )
    memories = {m.name: m for m in recover_all(storage, torch.device("cpu"))}
    assert memories["good"].state == "ready" and memories["good"].count == 1
    for name, reason in (("bad", "wrong length"), ("newer", "not served by this version")):
        assert isinstance(memories[name], FailedMemory) and reason in memories[name].failure
    assert memories["bad"].details() == {
        "count": 1,
        "state": "failed",
        "trained_count": 0,
        "error": memories["bad"].failure,
    }
    assert newer.kind == memories["newer"].kind  # listed as what it was stored as
    storage.close()


# --- bytes held by bodies at once ----------------------------------------------------------------
def test_bodies_in_flight_are_capped_and_given_back():
    """A stalled upload holds its declared length from the start: a second body that would pass
    AMS_MAX_INFLIGHT_BYTES gets 503 server_busy with Retry-After at once; once the first ends,
    its bytes are free again."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from app.limits import BodyLimitMiddleware

    seen: list[int] = []

    async def app(scope, receive, send) -> None:
        body = (await receive())["body"]
        seen.append(len(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limiter = BodyLimitMiddleware(app, max_bytes=1 << 20, max_inflight=1000, timeout=5)

    def scope(length: int) -> dict:
        return {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(b"content-length", str(length).encode())],
        }

    async def request(length: int, release: asyncio.Event | None = None) -> tuple[int, dict]:
        sent: list[dict] = []
        parts = [b"x" * (length // 2), b"x" * (length - length // 2)]

        async def receive() -> dict:
            if len(parts) == 1 and release is not None:
                await release.wait()  # the client stalls half-way
            return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

        async def send(message: dict) -> None:
            sent.append(message)

        await limiter(scope(length), receive, send)
        start = sent[0]
        return start["status"], {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}

    async def main() -> None:
        release = asyncio.Event()
        stalled = asyncio.create_task(request(800, release))
        await asyncio.sleep(0.05)
        status, headers = await request(300)  # 800 + 300 > 1000
        assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
        assert (await request(200))[0] == 200  # 800 + 200 fits
        release.set()
        assert (await stalled)[0] == 200
        assert limiter.inflight.held == 0 and (await request(1000))[0] == 200
        assert seen == [200, 800, 1000]

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: no other loop may run in it
        pool.submit(asyncio.run, main()).result()


def test_a_json_body_of_too_many_values_is_refused_at_the_chunk_that_passes_them():
    """With ``ams.max_values`` in the scope (the gate's, for a recall), the limiter counts each
    chunk's commas as it arrives and answers 422 too_many_values at the first chunk past the
    count: of a 30 MB vector, it reads what it must drain (1 MiB), not 30 MB."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from app.limits import BodyLimitMiddleware

    async def app(scope, receive, send) -> None:
        raise AssertionError("a body over its values reached the app")

    limiter = BodyLimitMiddleware(app, max_bytes=64 << 20, timeout=5)
    chunk = b"0," * (32 << 10)  # 64 KiB, 32768 values
    total = 480  # chunks: 30 MiB
    received = [0]
    sent: list[dict] = []

    async def receive() -> dict:
        received[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": received[0] < total}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-length", str(total * len(chunk)).encode())],
        "ams.max_values": (100_000, "a recall of memory 'img' (D = 784)"),
    }
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, limiter(scope, receive, send)).result()
    assert sent[0]["status"] == 422
    body = json.loads(sent[1]["body"])
    assert body["error"]["code"] == "too_many_values" and "D = 784" in body["error"]["message"]
    assert body["error"]["details"]["limit"] == 100_000
    assert received[0] <= 4 + (1 << 20) // len(chunk) + 1  # 4 chunks to pass 100,000, then 1 MiB drained
    assert limiter.inflight.held == 0
