"""Kind "pc" over HTTP: store, train in the background, recall, states, restart, checkpoints."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from service_helpers import error_code, png_b64, wait_job

from memory_core.data import flatten

N = 16
# A small network: the tests are about the service, the science is tested in test_pc.py.
CONFIG = {"sizes": [64, 256, 784], "epochs": 80}


def _store(client, name: str, images: torch.Tensor, start: int = 0) -> None:
    r = client.post(
        f"/v1/memories/{name}/patterns",
        json={"patterns": [{"id": f"f{start + i}", "image": png_b64(img)} for i, img in enumerate(images)]},
    )
    assert r.status_code == 201, r.json()


def _state(client, name: str) -> dict:
    return client.get(f"/v1/memories/{name}").json()


@pytest.fixture
def trained(make_client, fashion):
    client = make_client()
    assert (
        client.post(
            "/v1/memories", json={"name": "pc", "kind": "pc", "shape": [1, 28, 28], "config": CONFIG}
        ).status_code
        == 201
    )
    _store(client, "pc", fashion[:N])
    assert _state(client, "pc")["state"] == "untrained"
    r = client.post("/v1/memories/pc/retrieve", json={"image": png_b64(fashion[0])})
    assert r.status_code == 409 and error_code(r) == "not_trained"
    started = client.post("/v1/memories/pc/train", json={})
    assert started.status_code == 202 and started.json()["patterns"] == N
    assert _state(client, "pc")["state"] in ("training", "ready")
    job = wait_job(client, started.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["energy"] is not None and job["epoch"] >= 1 and job["progress"] == 1.0
    return client


def test_trained_memory_recalls_noisy_and_partial_cues(trained, fashion):
    details = _state(trained, "pc")
    assert details["state"] == "ready" and details["trained_count"] == N and details["count"] == N
    gen = torch.Generator().manual_seed(0)
    vectors = flatten(fashion[:N])
    noisy_ok = half_ok = 0
    for i in range(N):
        noisy = (vectors[i] + 0.2 * torch.randn(784, generator=gen)).tolist()
        r = trained.post("/v1/memories/pc/retrieve", json={"vector": noisy, "k": 2})
        assert r.status_code == 200 and r.json()["state"] == "ready"
        noisy_ok += r.json()["matches"][0]["id"] == f"f{i}"
        report = r.json()["recall"]  # the index landed on the stored pattern, and says so
        assert report["index"] and report["stored"] and report["nearest"]["id"] == f"f{i}", report
        assert report["nearest"]["mse"] < 0.005 and report["nearest"]["evidence"] <= 1.0
        known = [True] * 392 + [False] * 392  # top half
        r = trained.post(
            "/v1/memories/pc/retrieve",
            json={"vector": vectors[i].tolist(), "mask": known, "include_vector": True},
        )
        out = torch.tensor(r.json()["pattern"]["vector"])
        assert torch.equal(out[:392], vectors[i][:392])  # known entries come back as given
        half_ok += r.json()["matches"][0]["id"] == f"f{i}"
    assert noisy_ok >= 0.9 * N and half_ok >= 0.9 * N, (noisy_ok, half_ok)


def test_recall_reports_say_whether_the_answer_is_a_stored_pattern(trained, make_client, fashion, tmp_path):
    """``recall`` in the JSON answers and ``X-AMS-Recall`` on the PNG route: a stored pattern's
    cue lands on it; an image never stored, or stored since the last training (not in the
    model), gets the network's reconstruction, ``stored: false``; a trained pattern deleted
    since is still in the model, named, with no MSE to compare. A damaged index file is
    damage: the memory restarts failed, with the reason, as with a damaged checkpoint."""
    vectors = flatten(fashion[: N + 8])
    unseen = [
        trained.post("/v1/memories/pc/retrieve", json={"image": png_b64(fashion[i])}) for i in range(N, N + 8)
    ]
    assert not any(r.json()["recall"]["stored"] for r in unseen)
    assert all(r.json()["recall"]["nearest"]["id"] in {f"f{i}" for i in range(N)} for r in unseen)
    known = torch.zeros(1, 28, 28, dtype=torch.bool)
    known[:, :14] = True
    cue = {"image": png_b64(fashion[2]), "mask": png_b64(known.float())}
    as_json = trained.post("/v1/memories/pc/complete", json=cue).json()["recall"]
    as_png = trained.post("/v1/memories/pc/complete", json=cue, headers={"Accept": "image/png"})
    assert as_png.headers["content-type"] == "image/png"
    assert json.loads(as_png.headers["X-AMS-Recall"]) == as_json
    assert as_json["stored"] and as_json["unique"] and as_json["nearest"]["id"] == "f2"
    assert as_json["nearest"]["mse"] < 0.001 and as_json["rounds"] == 1
    _store(trained, "pc", fashion[N : N + 1], start=N)  # f16: stored, not yet trained on
    assert trained.delete("/v1/memories/pc/patterns/f3").status_code == 204
    new = trained.post("/v1/memories/pc/retrieve", json={"vector": vectors[N].tolist()}).json()
    assert new["state"] == "stale" and new["trained_count"] == N and not new["recall"]["stored"]
    noisy = vectors[3] + 0.2 * torch.randn(784, generator=torch.Generator().manual_seed(5))
    gone = trained.post("/v1/memories/pc/retrieve", json={"vector": noisy.tolist()}).json()["recall"]
    assert gone["stored"] and gone["nearest"] == {**gone["nearest"], "id": "f3", "mse": None}
    make_client.stop(trained)
    (index,) = (tmp_path / "data" / "checkpoints").rglob("*.index.safetensors")
    index.write_bytes(b"damaged")
    again = make_client()
    details = _state(again, "pc")
    assert details["state"] == "failed" and "index" in details["error"], details
    refused = again.post("/v1/memories/pc/retrieve", json={"vector": vectors[0].tolist()})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "memory_failed"


def test_a_pc_memory_without_its_index_recalls_as_the_paper_does(make_client, fashion, tmp_path):
    """``config.index: false``: the network's pure recall, reported as such, no index files."""
    client = make_client()
    config = {**CONFIG, "index": False}
    created = client.post(
        "/v1/memories", json={"name": "pure", "kind": "pc", "shape": [1, 28, 28], "config": config}
    )
    assert created.status_code == 201 and created.json()["config"]["index"] is False
    _store(client, "pure", fashion[:N])
    assert (
        wait_job(client, client.post("/v1/memories/pure/train", json={}).json()["id"])["status"]
        == "succeeded"
    )
    noisy = flatten(fashion[:1])[0] + 0.2 * torch.randn(784, generator=torch.Generator().manual_seed(6))
    got = client.post(
        "/v1/memories/pure/retrieve", json={"vector": noisy.tolist(), "include_vector": True}
    ).json()
    report = got["recall"]
    assert not report["index"] and not report["stored"] and report["rounds"] is None
    assert report["nearest"]["id"] == got["matches"][0]["id"] and report["nearest"]["evidence"] is None
    nearest = flatten(fashion[int(report["nearest"]["id"][1:]) : int(report["nearest"]["id"][1:]) + 1])[0]
    mse = float((torch.tensor(got["pattern"]["vector"]) - nearest).square().mean())
    assert report["nearest"]["mse"] == pytest.approx(mse, rel=1e-4)
    files = [p.name for p in (tmp_path / "data" / "checkpoints").rglob("*.safetensors")]
    assert len(files) == 1 and ".index." not in files[0]
    make_client.stop(client)
    again = make_client()  # the pure model comes back as it was
    assert _state(again, "pure")["state"] == "ready"
    back = again.post("/v1/memories/pure/retrieve", json={"vector": noisy.tolist()}).json()["recall"]
    assert back == report
    hopfield = again.post("/v1/memories", json={"name": "h", "kind": "hopfield", "shape": [2]})
    assert hopfield.status_code == 201
    again.post("/v1/memories/h/patterns", json={"patterns": [{"vector": [1, 0]}]})
    assert again.post("/v1/memories/h/retrieve", json={"vector": [1, 0]}).json()["recall"] is None


def test_concurrent_recalls_are_batched_and_each_gets_its_answer_alone(make_client, fashion):
    """Concurrent retrieves of a pc memory share batched calls, and each caller gets what the
    same request gets alone: clean, mildly and strongly noisy cues and half images, mixed in
    one burst. Each noisy cue runs its own rounds of F: with ``recall_tol`` 1e-4 a clean cue
    settles after one round (it moves by 2e-5, a strongly noisy one by 0.1), and when F
    stopped batch-wide it was held back for the others' rounds (1.7e-2 from its answer alone)."""
    client = make_client(recall_batch_max=64, recall_batch_wait_ms=300)
    assert (
        client.post(
            "/v1/memories",
            json={"name": "pc", "kind": "pc", "shape": [1, 28, 28], "config": {**CONFIG, "recall_tol": 1e-4}},
        ).status_code
        == 201
    )
    _store(client, "pc", fashion[:N])
    assert (
        wait_job(client, client.post("/v1/memories/pc/train", json={}).json()["id"])["status"] == "succeeded"
    )
    vectors = flatten(fashion[:N])
    gen = torch.Generator().manual_seed(1)
    half = [True] * 392 + [False] * 392
    asks = []
    for i in range(N):
        std = (0.0, 0.05, 0.3)[i % 3]
        asks.append({"vector": (vectors[i] + std * torch.randn(784, generator=gen)).tolist(), "k": 1 + i % 2})
        if i % 4 == 0:
            asks.append({"vector": vectors[i].tolist(), "mask": half})
    barrier = threading.Barrier(len(asks))

    def ask(body: dict, wait: bool = True) -> dict:
        if wait:
            barrier.wait()
        r = client.post("/v1/memories/pc/retrieve", json={**body, "include_vector": True})
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks))
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith("ams_recall_batch_size")
    }
    assert samples['ams_recall_batch_size_sum{kind="pc"}'] == len(asks)
    assert samples['ams_recall_batch_size_count{kind="pc"}'] < len(asks) / 2
    for body, got in zip(asks, together, strict=True):
        alone = ask(body, wait=False)
        assert [m["id"] for m in got["matches"]] == [m["id"] for m in alone["matches"]]
        # float32 rounding differs between batch sizes (measured up to 6.1e-6)
        torch.testing.assert_close(
            torch.tensor(got["pattern"]["vector"]),
            torch.tensor(alone["pattern"]["vector"]),
            rtol=0,
            atol=5e-5,
        )
        assert got["energy"] == pytest.approx(alone["energy"], rel=1e-3, abs=1e-4)


def test_state_goes_stale_survives_restart_and_retraining_refreshes(trained, make_client, fashion, tmp_path):
    before = trained.post(
        "/v1/memories/pc/retrieve", json={"image": png_b64(fashion[3]), "include_vector": True}
    ).json()
    _store(trained, "pc", fashion[N : N + 4], start=N)
    details = _state(trained, "pc")
    assert details["state"] == "stale" and details["trained_count"] == N and details["count"] == N + 4
    make_client.stop(trained)
    again = make_client()
    details = _state(again, "pc")
    assert details["state"] == "stale" and details["trained_count"] == N  # the checkpoint was reloaded
    after = again.post(
        "/v1/memories/pc/retrieve", json={"image": png_b64(fashion[3]), "include_vector": True}
    ).json()
    assert torch.allclose(
        torch.tensor(after["pattern"]["vector"]), torch.tensor(before["pattern"]["vector"]), atol=1e-5
    )  # the same model, restored
    assert after["recall"] == before["recall"] and after["recall"]["stored"]  # and its index
    job = wait_job(again, again.post("/v1/memories/pc/train", json={"epochs": 5}).json()["id"])
    assert job["status"] == "succeeded" and job["epochs"] == 5
    details = _state(again, "pc")
    assert details["state"] == "ready" and details["trained_count"] == N + 4
    files = sorted(p.name for p in (tmp_path / "data" / "checkpoints").rglob("*.safetensors"))
    # the new checkpoint and its index; the old pair was removed once the new one took over
    assert len(files) == 2 and files[0] == files[1].replace(".safetensors", ".index.safetensors"), files


def test_cancelled_training_changes_nothing_and_one_job_at_a_time(make_client, fashion):
    client = make_client()
    client.post(
        "/v1/memories",
        json={
            "name": "pc",
            "kind": "pc",
            "shape": [1, 28, 28],
            "config": {**CONFIG, "epochs": 5000, "stop_energy": 0.0},
        },
    )
    _store(client, "pc", fashion[:N])
    job = client.post("/v1/memories/pc/train", json={}).json()
    second = client.post("/v1/memories/pc/train", json={})
    assert second.status_code == 409 and error_code(second) == "job_running"
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200
    assert wait_job(client, job["id"])["status"] == "cancelled"
    assert _state(client, "pc")["state"] == "untrained"  # nothing half-trained was swapped in


def test_deleting_a_memory_while_it_trains(make_client, fashion, tmp_path):
    client = make_client()
    client.post(
        "/v1/memories",
        json={
            "name": "pc",
            "kind": "pc",
            "shape": [1, 28, 28],
            "config": {**CONFIG, "epochs": 5000, "stop_energy": 0.0},
        },
    )
    _store(client, "pc", fashion[:N])
    job = client.post("/v1/memories/pc/train", json={}).json()
    assert client.delete("/v1/memories/pc").status_code == 204
    assert wait_job(client, job["id"])["status"] == "cancelled"
    assert client.get("/v1/memories/pc").status_code == 404
    assert not list((tmp_path / "data" / "checkpoints").rglob("*.safetensors"))


def test_pc_config_is_checked(client):
    def create(config):
        return client.post(
            "/v1/memories", json={"name": "x", "kind": "pc", "shape": [1, 28, 28], "config": config}
        )

    r = create({"sizes": [64, 100]})
    assert (
        r.status_code == 422 and error_code(r) == "invalid_config" and "784" in r.json()["error"]["message"]
    )
    r = create({"beta": 3})
    assert r.status_code == 422 and error_code(r) == "invalid_config"
    r = create({"epochs": 0})
    assert r.status_code == 422 and error_code(r) == "invalid_config"
    r = create({"activation": "swish"})
    assert r.status_code == 422 and error_code(r) == "invalid_config"
    r = create({"cycles": 2, "restart_adam": "yes"})
    assert r.status_code == 422 and "restart_adam must be a boolean" in r.json()["error"]["message"]
    info = client.get("/v1/info").json()
    assert "pc" in info["kinds"] and info["default_configs"]["pc"]["sizes"][-1] == "D"
    for bad in ({"index": "yes"}, {"index": {"candidates": 0}}, {"index": {"radius": 1}}):
        r = create(bad)
        assert r.status_code == 422 and error_code(r) == "invalid_config" and "index" in r.text, bad
    assert info["default_configs"]["pc"]["index"]["candidates"] >= 1
    ok = create({})
    assert ok.status_code == 201 and ok.json()["config"]["sizes"] == [256, 1024, 784]
    assert ok.json()["config"]["index"] == info["default_configs"]["pc"]["index"]  # on by default
    pure = client.post(
        "/v1/memories", json={"name": "p", "kind": "pc", "shape": [4], "config": {"index": False}}
    )
    assert pure.status_code == 201 and pure.json()["config"]["index"] is False
    text = client.post(
        "/v1/memories", json={"name": "t", "kind": "pc", "shape": [4], "text": True, "config": {}}
    )
    assert text.status_code == 201 and text.json()["config"]["sizes"] == [256, 1024, 4 + 384]
    big = client.post("/v1/memories", json={"name": "b", "kind": "pc", "shape": [3, 64, 64]})
    assert big.status_code == 201 and big.json()["config"]["sizes"] == [256, 512, 3 * 64 * 64]


def test_pcgraph_kind_trains_and_recalls(make_client, fashion, tmp_path):
    """Kind pcgraph: the same store / train / recall cycle, on a fully connected graph."""
    client = make_client()
    config = {"hidden": 64, "topology": "fully_connected", "epochs": 50, "batch_size": 16, "lr": 3e-3}
    created = client.post(
        "/v1/memories", json={"name": "g", "kind": "pcgraph", "shape": [1, 28, 28], "config": config}
    )
    assert created.status_code == 201 and created.json()["state"] == "untrained"
    _store(client, "g", fashion[:N])
    job = wait_job(client, client.post("/v1/memories/g/train", json={}).json()["id"])
    assert job["status"] == "succeeded" and job["energy"] is not None
    assert _state(client, "g")["state"] == "ready" and _state(client, "g")["trained_count"] == N
    vectors = flatten(fashion[:N])
    known = [True] * 392 + [False] * 392
    hits = 0
    for i in range(N):
        r = client.post(
            "/v1/memories/g/retrieve",
            json={"vector": vectors[i].tolist(), "mask": known, "include_vector": True},
        ).json()
        assert torch.equal(torch.tensor(r["pattern"]["vector"])[:392], vectors[i][:392])
        hits += r["matches"][0]["id"] == f"f{i}"
    assert hits >= 0.9 * N
    make_client.stop(client)
    again = make_client()  # the checkpoint comes back
    assert _state(again, "g")["state"] == "ready"
    r = again.post("/v1/memories/g/retrieve", json={"vector": vectors[0].tolist(), "mask": known})
    assert r.status_code == 200 and r.json()["matches"][0]["id"] == "f0"
    too_big = again.post("/v1/memories", json={"name": "big", "kind": "pcgraph", "shape": [3, 64, 64]})
    assert too_big.status_code == 422 and "vertices" in too_big.json()["error"]["message"]
