"""Soak: two minutes of mixed concurrent traffic against a real server: no error, and bounded
memory (the server's RSS at the end within 10% of what it was after warm-up).

Eight clients at once, each its own mix: vector and picture retrieves, completions,
cross-modal lookups both ways, stores balanced by deletes (so the data stays the same
size), memories created, filled, recalled and deleted, listings, single patterns as
JSON and PNG, /metrics, /v1/info, /v1/jobs, and bad requests that must get their 4xx.
Every answer's status is checked (and recalls' answers too); any other is an error.
RSS is sampled every second from /proc; warm-up is the first WARMUP seconds (every code
path, the caption model included, has run by then).
"""

from __future__ import annotations

import base64
import io
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from live_server import LiveServer
from PIL import Image

from memory_core.data import fashion_mnist

DURATION = float(os.environ.get("AMS_SOAK_SECONDS", "120"))
WARMUP = DURATION / 4  # seconds
DIM = 64


def _png(image: np.ndarray) -> bytes:
    """(28, 28) float in [0, 1] -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray((image * 255).round().astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Soak:
    """Shared state of the clients: what went wrong, and how much was done."""

    def __init__(self, server: LiveServer, images: np.ndarray, vectors: np.ndarray) -> None:
        self.server, self.images, self.vectors = server, images, vectors
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.done: Counter[str] = Counter()
        self.lock = threading.Lock()

    def expect(
        self, what: str, r: httpx.Response, status: int, check: Callable[[dict], bool] | None = None
    ) -> None:
        ok = r.status_code == status and (check is None or check(r.json()))
        with self.lock:
            self.done[what] += 1
            if not ok:
                self.errors.append(f"{what}: {r.status_code} {r.text[:300]}")

    def run(self, name: str, step: Callable[[httpx.Client, random.Random, int], None]) -> threading.Thread:
        def loop() -> None:
            rng = random.Random(name)
            with self.server.client() as c:
                i = 0
                while not self.stop.is_set():
                    try:
                        step(c, rng, i)
                    except Exception as exc:  # a transport error or a bug in the client: an error
                        with self.lock:
                            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    i += 1

        thread = threading.Thread(target=loop, name=name)
        thread.start()
        return thread


def _retrieve_vectors(s: Soak) -> Callable:
    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        j = rng.randrange(len(s.vectors))
        cue = s.vectors[j] + np.float32(0.05) * np.random.default_rng(i).standard_normal(
            DIM, dtype=np.float32
        )
        r = c.post("/v1/memories/vec/retrieve", json={"vector": cue.tolist(), "k": 3})
        s.expect("retrieve vector", r, 200, lambda b: b["matches"][0]["id"] == f"v{j}")

    return step


def _retrieve_pictures(s: Soak) -> Callable:
    known = np.zeros((28, 28), bool)
    known[:14] = True
    mask_png = _png(known.astype(np.float32))

    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        j = rng.randrange(len(s.images))
        if i % 2:
            r = c.post("/v1/memories/img/retrieve", json={"image": _b64(_png(s.images[j])), "k": 2})
            s.expect("retrieve picture", r, 200, lambda b: b["matches"][0]["id"] == f"i{j}")
        else:
            half = s.images[j] * known
            r = c.post(
                "/v1/memories/img/complete",
                files={"image": ("c.png", _png(half)), "mask": ("m.png", mask_png)},
            )
            s.expect("complete", r, 200, lambda b: b["matches"][0]["id"] == f"i{j}")

    return step


def _lookups(s: Soak) -> Callable:
    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        j = rng.randrange(20)
        if i % 2:
            r = c.post("/v1/memories/txt/lookup", json={"text": f"a picture of garment number {j}", "k": 2})
            s.expect("lookup text", r, 200)
        else:
            r = c.post("/v1/memories/txt/lookup", json={"image": _b64(_png(s.images[j])), "k": 1})
            s.expect("lookup picture", r, 200, lambda b: b["captions"][0]["id"] == f"t{j}")

    return step


def _store_and_delete(s: Soak) -> Callable:
    live: list[str] = []

    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        ids = [f"w{i}-{k}" for k in range(4)]
        vecs = np.random.default_rng(10_000 + i).random((4, DIM), dtype=np.float32) + 2  # far from the v's
        body = {
            "patterns": [{"id": pid, "vector": v.tolist(), "metadata": {"i": i}} for pid, v in zip(ids, vecs)]
        }
        s.expect("store", c.post("/v1/memories/vec/patterns", json=body), 201)
        live.extend(ids)
        while len(live) > 40:  # the memory stays the same size
            s.expect("delete pattern", c.delete(f"/v1/memories/vec/patterns/{live.pop(0)}"), 204)

    return step


def _churn(s: Soak) -> Callable:
    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        name = f"tmp{i % 3}"
        s.expect(
            "create", c.post("/v1/memories", json={"name": name, "kind": "hopfield", "shape": [DIM]}), 201
        )
        body = {"patterns": [{"id": f"x{k}", "vector": s.vectors[k].tolist()} for k in range(20)]}
        s.expect("store batch", c.post(f"/v1/memories/{name}/patterns", json=body), 201)
        r = c.post(f"/v1/memories/{name}/retrieve", json={"vector": s.vectors[7].tolist()})
        s.expect("retrieve new", r, 200, lambda b: b["matches"][0]["id"] == "x7")
        s.expect("delete memory", c.delete(f"/v1/memories/{name}"), 204)

    return step


def _reads(s: Soak) -> Callable:
    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        j = rng.randrange(len(s.images))
        s.expect("list", c.get("/v1/memories/img/patterns", params={"limit": 50}), 200)
        s.expect("get json", c.get(f"/v1/memories/img/patterns/i{j}"), 200)
        r = c.get(f"/v1/memories/img/patterns/i{j}", headers={"Accept": "image/png"})
        s.expect("get png", r, 200)
        s.expect("memories", c.get("/v1/memories"), 200)
        if i % 5 == 0:
            s.expect("metrics", c.get("/metrics"), 200)
            s.expect("info", c.get("/v1/info"), 200)
            s.expect("jobs", c.get("/v1/jobs"), 200)

    return step


def _bad_requests(s: Soak) -> Callable:
    def step(c: httpx.Client, rng: random.Random, i: int) -> None:
        s.expect(
            "bad json",
            c.post(
                "/v1/memories/vec/retrieve", content=b"{nope", headers={"Content-Type": "application/json"}
            ),
            400,
        )
        s.expect("wrong dim", c.post("/v1/memories/vec/retrieve", json={"vector": [1.0, 2.0]}), 422)
        s.expect("unknown memory", c.post("/v1/memories/nope/retrieve", json={"vector": [1.0]}), 404)
        s.expect("bad picture", c.post("/v1/memories/img/retrieve", json={"image": _b64(b"not a png")}), 422)
        time.sleep(0.05)

    return step


@pytest.mark.slow
def test_two_minutes_of_mixed_traffic_no_error_bounded_memory(tmp_path):
    images = fashion_mnist("train", limit=300)[0][:, 0].numpy()  # (300, 28, 28) in [0, 1]
    vectors = np.random.default_rng(0).random((500, DIM), dtype=np.float32)  # (500, 64)
    server = LiveServer(tmp_path / "data")
    try:
        with server.client() as c:
            for body in (
                {"name": "vec", "kind": "hopfield", "shape": [DIM]},
                {"name": "img", "kind": "hopfield", "shape": [1, 28, 28]},
                {"name": "txt", "kind": "hopfield", "shape": [1, 28, 28], "text": True},
            ):
                assert c.post("/v1/memories", json=body).status_code == 201
            for at in range(0, 500, 250):
                body = {
                    "patterns": [{"id": f"v{k}", "vector": vectors[k].tolist()} for k in range(at, at + 250)]
                }
                assert c.post("/v1/memories/vec/patterns", json=body).status_code == 201
            body = {"patterns": [{"id": f"i{k}", "image": _b64(_png(images[k]))} for k in range(300)]}
            assert c.post("/v1/memories/img/patterns", json=body).status_code == 201
            body = {
                "patterns": [
                    {"id": f"t{k}", "image": _b64(_png(images[k])), "text": f"garment number {k}"}
                    for k in range(20)
                ]
            }
            assert c.post("/v1/memories/txt/patterns", json=body).status_code == 201
        soak = Soak(server, images, vectors)
        steps = [
            _retrieve_vectors,
            _retrieve_vectors,
            _retrieve_pictures,
            _lookups,
            _store_and_delete,
            _churn,
            _reads,
            _bad_requests,
        ]
        start = time.monotonic()
        threads = [soak.run(f"{make.__name__}-{n}", make(soak)) for n, make in enumerate(steps)]
        samples: list[tuple[float, int]] = []  # (seconds since start, RSS bytes)
        try:
            while (t := time.monotonic() - start) < DURATION and not soak.errors:
                samples.append((t, server.rss_bytes()))
                time.sleep(1.0)
        finally:
            soak.stop.set()
            for thread in threads:
                thread.join(120)
        assert not soak.errors, f"{len(soak.errors)} errors, e.g. {soak.errors[:5]}"
        warm = [rss for t, rss in samples if WARMUP - 10 <= t < WARMUP]
        end = [rss for t, rss in samples if t >= DURATION - 10]
        growth = statistics.median(end) / statistics.median(warm) - 1
        with server.client() as c:
            metrics = c.get("/metrics").text
        # No 5xx (the /readyz 503 of the start-up wait is the documented "not ready yet").
        assert not [
            line
            for line in metrics.splitlines()
            if line.startswith("ams_requests_total") and 'status="5' in line and 'route="/readyz"' not in line
        ]
        total = sum(soak.done.values())
        print(
            f"soak {DURATION:.0f} s: {total} requests ({total / DURATION:.0f}/s), "
            f"RSS {statistics.median(warm) / 2**20:.0f} -> {statistics.median(end) / 2**20:.0f} MiB "
            f"({100 * growth:+.1f}%); {dict(soak.done)}"
        )
        assert all(
            soak.done[what] > 0
            for what in (
                "retrieve vector",
                "complete",
                "lookup text",
                "store",
                "delete memory",
                "get png",
                "bad json",
            )
        )
        assert growth < 0.10, f"RSS grew {100 * growth:.1f}% after warm-up: {samples}"
    finally:
        server.stop()
