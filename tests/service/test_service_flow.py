"""The service end to end through HTTP (TestClient) on real Fashion-MNIST images:
create, store (JSON and multipart), page, get, retrieve, complete, delete; restart;
concurrent recalls while stores run; readiness while recovering."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading

import numpy as np
import pytest
import torch
from service_helpers import count, decode_png, error_code, mask_png, png, png_b64, rgba_png
from sklearn.datasets import load_digits

from memory_core.masks import bottom_half_unknown

HALF = bottom_half_unknown(28, 28)  # (28, 28) True = known (top half)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


def _create(client, name="fashion", shape=(1, 28, 28), **extra):
    r = client.post(
        "/v1/memories", json={"name": name, "kind": "hopfield", "shape": list(shape), "config": {}, **extra}
    )
    assert r.status_code == 201, r.text
    return r.json()


def _store_fashion(client, fashion, n_json=150, n_multipart=50):
    for start in range(0, n_json, 50):
        batch = [
            {"id": f"f{i}", "image": png_b64(fashion[i]), "metadata": {"index": i}}
            for i in range(start, min(start + 50, n_json))
        ]
        r = client.post("/v1/memories/fashion/patterns", json={"patterns": batch})
        assert r.status_code == 201, r.text
        assert r.json()["ids"] == [p["id"] for p in batch]
    files = [("images", (f"m{i}.png", png(fashion[n_json + i]), "image/png")) for i in range(n_multipart)]
    data = {
        "ids": [f"m{i}" for i in range(n_multipart)],
        "texts": [f"caption {i}" for i in range(n_multipart)],
    }
    r = client.post("/v1/memories/fashion/patterns", files=files, data=data)
    assert r.status_code == 201, r.text
    assert r.json() == {"ids": data["ids"], "count": n_json + n_multipart}
    return [f"f{i}" for i in range(n_json)] + data["ids"]


def _all_ids(client, name, limit=64):
    ids, cursor = [], None
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        r = client.get(f"/v1/memories/{name}/patterns", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["patterns"]) <= limit
        ids += [p["id"] for p in page["patterns"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def test_fashion_mnist_flow(client, fashion):
    details = _create(client)
    assert details["config"] == {
        "similarity": "euclidean",
        "separation": "softmax",
        "beta": 100.0,
        "n": 2.0,
        "k": 5,
        "radius": 0.0,
    }
    assert (details["count"], details["state"], details["dim"]) == (0, "ready", 784)
    ids = _store_fashion(client, fashion)
    # one process: the count is always every pattern's, and there is no placement
    listed = client.get("/v1/memories").json()["memories"][0]
    assert (listed["count"], listed["count_complete"], "placement" in listed) == (len(ids), True, False)
    images = fashion[:200]  # pattern ids[i] is images[i]

    assert _all_ids(client, "fashion") == ids  # storage order, each once, cursor paging
    page = client.get("/v1/memories/fashion/patterns", params={"limit": 2}).json()
    assert page["patterns"][0] == {"id": "f0", "text": None, "metadata": {"index": 0}}
    assert client.get("/v1/memories/fashion/patterns/m7").json()["text"] == "caption 7"

    # One pattern back, as JSON (base64 PNG) and as the PNG itself: the stored picture, exactly.
    one = client.get("/v1/memories/fashion/patterns/f5").json()
    assert torch.equal(decode_png(base64.b64decode(one["image"])), images[5])
    r = client.get("/v1/memories/fashion/patterns/m2", headers={"Accept": "image/png"})
    assert r.headers["content-type"] == "image/png"
    assert torch.equal(decode_png(r.content), images[152])

    gen = torch.Generator().manual_seed(0)
    picks = torch.randperm(200, generator=gen)[:15].tolist()
    for i in picks:
        # Half-masked cue (bottom half unknown, blacked out), mask as H*W booleans.
        cue = images[i] * HALF
        r = client.post(
            "/v1/memories/fashion/retrieve",
            json={"image": png_b64(cue), "mask": HALF.flatten().tolist(), "k": 3},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["matches"][0]["id"] == ids[i] and len(body["matches"]) == 3
        assert body["matches"][0]["score"] >= body["matches"][1]["score"] >= body["matches"][2]["score"]
        assert _mse(decode_png(base64.b64decode(body["pattern"]["image"])), images[i]) < 0.001
        assert np.isfinite(body["energy"]) and body["state"] == "ready" and body["trained_count"] == 200
        # Noisy cue (std 0.2), no mask.
        noisy = (images[i] + 0.2 * torch.randn(images[i].shape, generator=gen)).clamp(0, 1)
        body = client.post("/v1/memories/fashion/retrieve", json={"image": png_b64(noisy)}).json()
        assert body["matches"][0]["id"] == ids[i]
        assert _mse(decode_png(base64.b64decode(body["pattern"]["image"])), images[i]) < 0.005

    # A vector cue with a D-long mask, and the result as a vector too.
    i = picks[0]
    cue = (images[i] * HALF).flatten()
    body = client.post(
        "/v1/memories/fashion/retrieve",
        json={"vector": cue.tolist(), "mask": (HALF.flatten()).tolist(), "include_vector": True},
    ).json()
    assert body["matches"][0]["id"] == ids[i]
    assert _mse(torch.tensor(body["pattern"]["vector"]), images[i].flatten()) < 0.001

    # A cue of another size is centre-cropped and resized to 28x28 (DESIGN.md).
    big = torch.nn.functional.interpolate(images[i][None], size=(56, 56), mode="bilinear")[0]
    assert (
        client.post("/v1/memories/fashion/retrieve", json={"image": png_b64(big)}).json()["matches"][0]["id"]
        == ids[i]
    )

    # Complete: multipart image + mask picture; known pixels kept, the rest filled.
    j = picks[1]
    r = client.post(
        "/v1/memories/fashion/complete",
        files={
            "image": ("cue.png", png(images[j] * HALF), "image/png"),
            "mask": ("mask.png", mask_png(HALF), "image/png"),
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    done = decode_png(base64.b64decode(body["image"]))
    assert body["unknown_pixels"] == 14 * 28 and body["matches"][0]["id"] == ids[j]
    assert _mse(done, images[j]) < 0.001
    assert torch.equal(done[:, :14], images[j][:, :14])  # known half as given
    # RGBA alpha marks the unknown pixels; raw PNG back with Accept: image/png.
    garbage = torch.rand(images[j].shape, generator=gen)  # unknown pixels hold noise: ignored
    cue = torch.where(HALF, images[j], garbage)
    r = client.post(
        "/v1/memories/fashion/complete",
        headers={"Accept": "image/png"},
        files={"image": ("cue.png", rgba_png(cue, HALF), "image/png")},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert json.loads(r.headers["x-ams-matches"])[0]["id"] == ids[j]
    assert float(r.headers["x-ams-energy"]) == float(r.headers["x-ams-energy"])  # a number
    assert _mse(decode_png(r.content)[:1], images[j]) < 0.001
    # JSON with base64 pictures.
    body = client.post(
        "/v1/memories/fashion/complete",
        json={"image": png_b64(images[j] * HALF), "mask": base64.b64encode(mask_png(HALF)).decode()},
    ).json()
    assert body["matches"][0]["id"] == ids[j]

    # Delete one pattern: gone from reads and from recall.
    assert client.delete("/v1/memories/fashion/patterns/f3").status_code == 204
    assert error_code(client.get("/v1/memories/fashion/patterns/f3")) == "pattern_not_found"
    body = client.post("/v1/memories/fashion/retrieve", json={"image": png_b64(images[3]), "k": 5}).json()
    assert "f3" not in [m["id"] for m in body["matches"]]
    assert count(client, "fashion") == 199 and "f3" not in _all_ids(client, "fashion", limit=1000)
    # Recall still names the right ids after the rows moved up.
    body = client.post("/v1/memories/fashion/retrieve", json={"image": png_b64(images[150])}).json()
    assert body["matches"][0]["id"] == "m0"

    # Delete the memory: its data goes with it.
    assert client.delete("/v1/memories/fashion").status_code == 204
    assert error_code(client.get("/v1/memories/fashion")) == "memory_not_found"
    assert client.get("/v1/memories").json() == {"memories": []}
    assert _create(client)["count"] == 0
    assert _all_ids(client, "fashion") == []


def test_vector_memory_flow(client):
    digits = load_digits()
    x = torch.from_numpy(digits.data[:300].astype(np.float32) / 16.0)  # (300, 64) in [0, 1]
    r = client.post(
        "/v1/memories",
        json={
            "name": "digits",
            "kind": "hopfield",
            "shape": [64],
            "config": {"similarity": "euclidean", "beta": 5},
        },
    )
    assert r.status_code == 201 and r.json()["config"]["similarity"] == "euclidean"
    patterns = [
        {
            "id": f"d{i}",
            "vector": x[i].tolist(),
            "text": str(digits.target[i]),
            "metadata": {"label": int(digits.target[i])},
        }
        for i in range(300)
    ]
    assert client.post("/v1/memories/digits/patterns", json={"patterns": patterns}).json()["count"] == 300
    one = client.get("/v1/memories/digits/patterns/d7").json()
    assert (
        one["vector"] == x[7].tolist()
        and one["metadata"] == {"label": int(digits.target[7])}
        and one["image"] is None
    )
    gen = torch.Generator().manual_seed(1)
    right = 0
    for i in range(0, 300, 15):
        noisy = x[i] + 0.1 * torch.randn(64, generator=gen)
        body = client.post("/v1/memories/digits/retrieve", json={"vector": noisy.tolist()}).json()
        right += body["matches"][0]["id"] == f"d{i}"
        assert len(body["pattern"]["vector"]) == 64 and body["pattern"]["image"] is None
    assert right == 20
    # A masked vector cue: only the first 40 entries known.
    mask = [True] * 40 + [False] * 24
    cue = x[30].clone()
    cue[40:] = 0
    body = client.post("/v1/memories/digits/retrieve", json={"vector": cue.tolist(), "mask": mask}).json()
    assert body["matches"][0]["id"] == "d30"


def test_restart_keeps_everything(make_client, tmp_path, fashion):
    first = make_client()
    _create(first, "img")
    _create(first, "cap", shape=(1, 28, 28), text=True)
    r = first.post(
        "/v1/memories/img/patterns",
        json={"patterns": [{"id": f"p{i}", "image": png_b64(fashion[i])} for i in range(40)]},
    )
    assert r.status_code == 201
    first.post(
        "/v1/memories/cap/patterns",
        json={
            "patterns": [
                {"id": "c1", "image": png_b64(fashion[50]), "text": "a shoe", "metadata": {"x": [1, 2]}}
            ]
        },
    )
    assert first.delete("/v1/memories/img/patterns/p7").status_code == 204
    first.post("/v1/memories", json={"name": "gone", "kind": "hopfield", "shape": [4]})
    assert first.delete("/v1/memories/gone").status_code == 204
    cue = {"image": png_b64(fashion[11] * HALF), "mask": HALF.flatten().tolist(), "k": 5}
    before = {
        "memories": first.get("/v1/memories").json(),
        "ids": _all_ids(first, "img"),
        "recall": first.post("/v1/memories/img/retrieve", json=cue).json(),
        "cap": first.get("/v1/memories/cap/patterns/c1").json(),
    }
    make_client.stop(first)

    second = make_client()  # same data directory: rebuilt from storage
    after = {
        "memories": second.get("/v1/memories").json(),
        "ids": _all_ids(second, "img"),
        "recall": second.post("/v1/memories/img/retrieve", json=cue).json(),
        "cap": second.get("/v1/memories/cap/patterns/c1").json(),
    }
    assert after == before
    assert [m["name"] for m in after["memories"]["memories"]] == ["img", "cap"]
    assert after["memories"]["memories"][1]["text"] is True and after["cap"]["text"] == "a shoe"
    assert "p7" not in after["ids"] and len(after["ids"]) == 39
    assert after["recall"]["matches"][0]["id"] == "p11"


def test_concurrent_recalls_while_storing(client, fashion):
    _create(client)
    base = [{"id": f"b{i}", "image": png_b64(fashion[i])} for i in range(40)]
    assert client.post("/v1/memories/fashion/patterns", json={"patterns": base}).status_code == 201
    failures: list[str] = []
    stop = threading.Event()

    def recaller(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        while not stop.is_set():
            i = int(torch.randint(40, (1,), generator=gen))
            r = client.post(
                "/v1/memories/fashion/retrieve",
                json={"image": png_b64(fashion[i] * HALF), "mask": HALF.flatten().tolist()},
            )
            if r.status_code != 200 or r.json()["matches"][0]["id"] != f"b{i}":
                failures.append(f"{r.status_code} {r.text[:200]}")

    def writer() -> None:
        for b in range(8):
            batch = [{"id": f"w{b}-{i}", "image": png_b64(fashion[100 + 10 * b + i])} for i in range(10)]
            r = client.post("/v1/memories/fashion/patterns", json={"patterns": batch})
            if r.status_code != 201:
                failures.append(f"store {r.status_code} {r.text[:200]}")
            if client.delete(f"/v1/memories/fashion/patterns/w{b}-0").status_code != 204:
                failures.append("delete failed")

    threads = [threading.Thread(target=recaller, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    writer()
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    expected = [f"b{i}" for i in range(40)] + [f"w{b}-{i}" for b in range(8) for i in range(1, 10)]
    assert _all_ids(client, "fashion", limit=1000) == expected and count(client, "fashion") == len(expected)


def test_readyz_is_503_until_memories_are_loaded(make_client, tmp_path):
    data = tmp_path / "locked"
    data.mkdir()
    # Another process holds the database locked: recovery waits for it (busy timeout).
    holder = sqlite3.connect(data / "ams.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    c = make_client(data_dir=data, wait=False)
    try:
        assert c.get("/livez").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 503 and error_code(r) == "not_ready"
        assert error_code(c.get("/v1/memories")) == "not_ready"
        assert c.get("/metrics").text.count("ams_ready 0.0") == 1
    finally:
        holder.execute("COMMIT")
        holder.close()
    from service_helpers import wait_ready

    wait_ready(c)
    assert c.get("/v1/memories").status_code == 200


def test_failed_recovery_stays_not_ready_and_says_why(make_client, tmp_path):
    data = tmp_path / "corrupt"
    data.mkdir()
    (data / "ams.sqlite3").write_bytes(b"this is not a database" * 100)
    c = make_client(data_dir=data, wait=False)
    for _ in range(200):
        body = c.get("/readyz").json()
        if "recovery failed" in body["error"]["message"]:
            break
        threading.Event().wait(0.02)
    assert "recovery failed" in body["error"]["message"]
    assert c.get("/livez").status_code == 200


@pytest.mark.timeout(60)  # were the wait on the event loop, the calls below would hang
def test_a_recall_waiting_on_a_lock_does_not_hold_up_the_service(client):
    for name in ("busy", "free"):
        client.post("/v1/memories", json={"name": name, "kind": "hopfield", "shape": [4]})
        client.post(f"/v1/memories/{name}/patterns", json={"patterns": [{"id": "a", "vector": [1, 0, 0, 1]}]})
    busy = client.app.state.service.registry.get("busy")
    answers: list[int] = []
    with busy.rw.write():  # as if a long write to "busy" were in progress
        waiter = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/memories/busy/retrieve", json={"vector": [1, 0, 0, 1]}).status_code
            )
        )
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and answers == []  # the recall waits for the lock ...
        # ... on a worker thread: the event loop still serves everything else.
        assert client.get("/livez").status_code == 200
        assert client.get("/v1/memories/free").status_code == 200
        r = client.post("/v1/memories/free/retrieve", json={"vector": [1, 0, 0, 1]})
        assert r.status_code == 200 and r.json()["matches"][0]["id"] == "a"
    waiter.join(30)
    assert answers == [200]
