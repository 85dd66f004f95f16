"""Micro-batching of recalls (app/batching.py): concurrent recalls of one memory are answered
by one batched call, and each caller gets exactly its own answer, the one an unbatched
recall gives. On real Fashion-MNIST images in a real HopfieldMemory."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from app.batching import Batcher
from app.kinds import HopfieldMemory, Recall
from app.metrics import Metrics
from app.storage import MemoryRecord
from memory_core import EmptyMemoryError

N = 300


def run_async(coroutine):
    """Run a coroutine to completion on a fresh event loop in a thread of its own: the same
    whether or not a loop runs in this thread (pytest-playwright's sync API keeps one running
    in the main thread while its session's browser is open, for every test after the e2e tier's)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _memory(vectors: torch.Tensor, config: dict | None = None) -> HopfieldMemory:
    record = MemoryRecord(
        id=1,
        name="m",
        kind="hopfield",
        shape=(1, 28, 28),
        text=False,
        config=HopfieldMemory.resolve_config(config or {}, (1, 28, 28)),
        created_at=0.0,
    )
    live = HopfieldMemory(record, torch.device("cpu"))
    if len(vectors) == 0:
        return live
    with live.rw.write():
        live.add(list(range(len(vectors))), [f"p{i}" for i in range(len(vectors))], vectors)
    return live


def _batches(metrics: Metrics) -> tuple[float, float]:
    """(batched calls, recalls they answered) so far."""
    get = metrics.registry.get_sample_value
    return (
        get("ams_recall_batch_size_count", {"kind": "hopfield"}) or 0.0,
        get("ams_recall_batch_size_sum", {"kind": "hopfield"}) or 0.0,
    )


def _same(got: Recall, want: Recall) -> None:
    assert [m for m, _ in got.matches] == [m for m, _ in want.matches]
    assert [s for _, s in got.matches] == pytest.approx([s for _, s in want.matches], rel=1e-5, abs=1e-3)
    torch.testing.assert_close(got.output, want.output, rtol=1e-5, atol=1e-5)
    assert got.energy == pytest.approx(want.energy, rel=1e-4, abs=1e-4)


def test_concurrent_recalls_share_one_call_and_each_gets_its_own_answer(fashion_vectors):
    stored = fashion_vectors[:N]
    live = _memory(stored)
    metrics = Metrics()
    batcher = Batcher(max_batch=64, max_wait_ms=50, metrics=metrics)
    gen = torch.Generator().manual_seed(0)
    picks = torch.randperm(N, generator=gen)[:40]
    noisy = (stored[picks] + 0.2 * torch.randn(40, 784, generator=gen)).clamp(0, 1)  # (40, D)
    half = torch.zeros(784, dtype=torch.bool)
    half[:392] = True  # top half known
    # Mixed requests: plain and masked cues, several k and steps, as concurrent HTTP calls send.
    asks = [(noisy[i], half if i % 3 == 0 else None, 1 + i % 5, 1 + (i % 4 == 1)) for i in range(40)]

    async def main() -> list[Recall]:
        return await asyncio.gather(*(batcher.recall(live, (c, m), k, s) for c, m, k, s in asks))

    got = run_async(main())
    for (cue, mask, k, steps), rec, pick in zip(asks, got, picks.tolist(), strict=True):
        want = live.recall(cue, mask, k, steps)  # alone, unbatched
        assert len(rec.matches) == k
        _same(rec, want)
        assert rec.matches[0][0] == f"p{pick}"  # the right image came back for this caller
    calls, answered = _batches(metrics)
    assert answered == 40
    # 4 groups (steps 1/2 x masked or not), each one call: far fewer calls than callers.
    assert calls == 4


def test_batches_are_cut_at_max_batch(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    metrics = Metrics()
    batcher = Batcher(max_batch=4, max_wait_ms=1000, metrics=metrics)

    async def main() -> list[Recall]:
        return await asyncio.gather(
            *(batcher.recall(live, (fashion_vectors[i], None), 1, 1) for i in range(10))
        )

    start = time.perf_counter()
    got = run_async(main())
    # 4 + 4 are cut when full; the last 2 wait out max_wait (1 s) for company that never comes.
    assert time.perf_counter() - start < 30
    assert [r.matches[0][0] for r in got] == [f"p{i}" for i in range(10)]
    get = metrics.registry.get_sample_value
    assert get("ams_recall_batch_size_count", {"kind": "hopfield"}) == 3
    assert get("ams_recall_batch_size_bucket", {"kind": "hopfield", "le": "4.0"}) == 3


def test_a_recall_waits_for_company_up_to_max_wait(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    metrics = Metrics()
    batcher = Batcher(max_batch=2, max_wait_ms=10_000, metrics=metrics)

    async def main() -> list[Recall]:
        first = asyncio.ensure_future(batcher.recall(live, (fashion_vectors[0], None), 1, 1))
        await asyncio.sleep(0.05)
        assert not first.done()  # still waiting for a second recall
        second = batcher.recall(live, (fashion_vectors[1], None), 1, 1)
        return await asyncio.gather(first, second)

    got = run_async(main())
    assert [r.matches[0][0] for r in got] == ["p0", "p1"]
    assert _batches(metrics) == (1.0, 2.0)  # one call answered both


def test_batching_off_with_max_batch_one(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    metrics = Metrics()
    batcher = Batcher(max_batch=1, max_wait_ms=0, metrics=metrics)

    async def main() -> list[Recall]:
        return await asyncio.gather(
            *(batcher.recall(live, (fashion_vectors[i], None), 2, 1) for i in range(6))
        )

    got = run_async(main())
    assert [r.matches[0][0] for r in got] == [f"p{i}" for i in range(6)]
    assert _batches(metrics) == (6.0, 6.0)


def test_a_bad_cue_fails_its_caller_only(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    batcher = Batcher(max_batch=16, max_wait_ms=50)
    bad = torch.zeros(784)
    bad_mask = torch.zeros(784, dtype=torch.bool)  # no known entry: memory_core refuses it

    async def main() -> list:
        cues = [(fashion_vectors[i], torch.ones(784, dtype=torch.bool)) for i in range(5)]
        cues.insert(2, (bad, bad_mask))
        return await asyncio.gather(
            *(batcher.recall(live, (c, m), 1, 1) for c, m in cues), return_exceptions=True
        )

    got = run_async(main())
    assert isinstance(got[2], ValueError) and "no known entr" in str(got[2])
    assert [r.matches[0][0] for i, r in enumerate(got) if i != 2] == [f"p{i}" for i in range(5)]


def test_an_empty_memory_fails_every_caller_with_its_own_error(fashion_vectors):
    live = _memory(fashion_vectors[:0])
    batcher = Batcher(max_batch=16, max_wait_ms=20)

    async def main() -> list:
        return await asyncio.gather(
            *(batcher.recall(live, (fashion_vectors[i], None), 1, 1) for i in range(3)),
            return_exceptions=True,
        )

    got = run_async(main())
    assert all(isinstance(e, EmptyMemoryError) for e in got)
    assert len({id(e) for e in got}) == 3  # one exception object per caller


def test_a_caller_that_goes_away_does_not_disturb_the_others(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    metrics = Metrics()
    batcher = Batcher(max_batch=8, max_wait_ms=100, metrics=metrics)

    async def main() -> list[Recall]:
        gone = asyncio.ensure_future(batcher.recall(live, (fashion_vectors[9], None), 1, 1))
        rest = [
            asyncio.ensure_future(batcher.recall(live, (fashion_vectors[i], None), 1, 1)) for i in range(3)
        ]
        await asyncio.sleep(0)
        gone.cancel()
        return await asyncio.gather(*rest)

    got = run_async(main())
    assert [r.matches[0][0] for r in got] == ["p0", "p1", "p2"]
    assert _batches(metrics) == (1.0, 3.0)  # the cancelled one was left out of the call


def test_over_http_concurrent_retrieves_are_batched(make_client, fashion):
    """Through the service: 24 concurrent retrieves (half JSON, half multipart: batched
    together), fewer batched calls than requests, every answer the caller's own image, and the
    batch metrics on /metrics."""
    from service_helpers import png, png_b64

    client = make_client(recall_batch_max=64, recall_batch_wait_ms=200)
    assert (
        client.post("/v1/memories", json={"name": "f", "kind": "hopfield", "shape": [1, 28, 28]}).status_code
        == 201
    )
    r = client.post(
        "/v1/memories/f/patterns",
        json={"patterns": [{"id": f"i{i}", "image": png_b64(fashion[i])} for i in range(100)]},
    )
    assert r.status_code == 201
    barrier = threading.Barrier(24)

    def ask(i: int) -> dict:
        if i % 2:
            request = {
                "files": {"image": ("q.png", png(fashion[i]), "image/png")},
                "data": {"k": str(1 + i % 3)},
            }
        else:
            request = {"json": {"image": png_b64(fashion[i]), "k": 1 + i % 3}}
        barrier.wait()
        resp = client.post("/v1/memories/f/retrieve", **request)
        assert resp.status_code == 200, resp.text
        return resp.json()

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(ask, range(24)))
    for i, a in enumerate(answers):
        assert [m["id"] for m in a["matches"]][:1] == [f"i{i}"] and len(a["matches"]) == 1 + i % 3
        assert a["pattern"]["image"] == png_b64(fashion[i])  # exactly the stored picture back
    text = client.get("/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("ams_")
    }
    calls = samples['ams_recall_batch_size_count{kind="hopfield"}']
    assert samples['ams_recall_batch_size_sum{kind="hopfield"}'] == 24
    assert calls < 24
    assert samples['ams_recall_queue_depth{memory="f"}'] == 0
    assert samples['ams_memory_bytes{kind="hopfield",memory="f"}'] == 100 * 784 * 4


def test_over_http_concurrent_lookups_and_recalls_are_batched(make_client):
    """A text memory under a mix of concurrent caption lookups, picture lookups and retrieves:
    each answer is the one the same request gets alone, and the memory calls were batched."""
    from service_helpers import png_b64

    from memory_core.captions import photo_caption_pairs
    from memory_core.masks import bottom_half_unknown

    n = 16
    pairs = photo_caption_pairs(64)  # 64x64 photos and their captions
    client = make_client(recall_batch_max=64, recall_batch_wait_ms=200)
    assert (
        client.post(
            "/v1/memories", json={"name": "p", "kind": "hopfield", "shape": [3, 64, 64], "text": True}
        ).status_code
        == 201
    )
    r = client.post(
        "/v1/memories/p/patterns",
        json={
            "patterns": [
                {"id": pairs.ids[i], "image": png_b64(pairs.images[i]), "text": pairs.captions[i]}
                for i in range(n)
            ]
        },
    )
    assert r.status_code == 201, r.text
    known = bottom_half_unknown(64, 64)
    mask = png_b64(known.float()[None])
    asks = [("lookup", {"text": pairs.paraphrases[i], "k": 1 + i % 3}) for i in range(0, n, 2)]
    asks += [("lookup", {"image": png_b64(pairs.images[i] * known), "mask": mask, "k": 2}) for i in range(n)]
    asks += [("retrieve", {"image": png_b64(pairs.images[i]), "k": 2}) for i in range(0, n, 2)]
    barrier = threading.Barrier(len(asks))

    def ask(item: tuple[str, dict], wait: bool = True) -> dict:
        endpoint, body = item
        if wait:
            barrier.wait()
        resp = client.post(f"/v1/memories/p/{endpoint}", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks))
    text = client.get("/metrics").text
    calls = sum(
        float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("ams_recall_batch_size_count")
    )
    assert calls < len(asks)
    for item, got in zip(asks, together, strict=True):
        alone = ask(item, wait=False)
        for key in ("patterns", "captions", "matches"):
            if got.get(key) is not None:
                assert [m["id"] for m in got[key]] == [m["id"] for m in alone[key]]
                # Scores to float32 rounding: a batch sums in another order than one cue alone.
                assert [m["score"] for m in got[key]] == pytest.approx(
                    [m["score"] for m in alone[key]], rel=1e-5, abs=1e-4
                )
        assert len(got.get("patterns") or got.get("captions") or got["matches"]) == item[1]["k"]
        assert got["energy"] == pytest.approx(alone["energy"], rel=1e-4, abs=1e-4)


def test_callers_are_answered_when_the_queue_task_is_cancelled(fashion_vectors):
    """Shutdown cancels the queue's task: its callers get an error, never a hang."""
    live = _memory(fashion_vectors[:N])
    batcher = Batcher(max_batch=8, max_wait_ms=10_000)

    async def main() -> list:
        calls = [
            asyncio.ensure_future(batcher.recall(live, (fashion_vectors[i], None), 1, 1)) for i in range(3)
        ]
        await asyncio.sleep(0.05)  # all three wait for company
        (queue,) = [q for _, q in batcher._queues.items()]
        queue.task.cancel()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)

    got = run_async(main())
    assert all(isinstance(e, RuntimeError) and "shutting down" in str(e) for e in got)


def test_finish_builds_each_callers_response_and_its_errors_stay_its_own(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    metrics = Metrics()
    batcher = Batcher(max_batch=16, max_wait_ms=50, metrics=metrics)
    threads: set[str] = set()

    def finish(i: int):
        def build(rec: Recall) -> str:
            threads.add(threading.current_thread().name)
            if i == 2:
                raise KeyError("caller 2's own trouble")
            return f"{i}:{rec.matches[0][0]}"

        return build

    async def main() -> list:
        return await asyncio.gather(
            *(batcher.recall(live, (fashion_vectors[i], None), 1, 1, finish(i)) for i in range(5)),
            return_exceptions=True,
        )

    got = run_async(main())
    assert isinstance(got[2], KeyError)
    assert [g for i, g in enumerate(got) if i != 2] == ["0:p0", "1:p1", "3:p3", "4:p4"]
    assert _batches(metrics) == (1.0, 5.0)  # one call; the failing finish did not rerun the batch
    assert threading.main_thread().name not in threads  # built on the batch's worker thread


def test_cues_decoded_on_the_batch_thread_and_a_bad_one_fails_its_caller_only(fashion_vectors):
    live = _memory(fashion_vectors[:N])
    metrics = Metrics()
    batcher = Batcher(max_batch=16, max_wait_ms=50, metrics=metrics)
    threads: set[str] = set()

    def decode(i: int):
        def cue():
            threads.add(threading.current_thread().name)
            if i == 1:
                raise ValueError("caller 1's picture does not decode")
            return fashion_vectors[i], None

        return cue

    async def main() -> list:
        return await asyncio.gather(
            *(batcher.recall(live, decode(i), 1, 1) for i in range(4)), return_exceptions=True
        )

    got = run_async(main())
    assert isinstance(got[1], ValueError)
    assert [g.matches[0][0] for i, g in enumerate(got) if i != 1] == ["p0", "p2", "p3"]
    assert _batches(metrics) == (1.0, 3.0)
    assert threading.main_thread().name not in threads
