"""The Ray mode's durability claims, on a real local Ray cluster (app/cluster/local.py).

- kill -9 of a shard's worker process during a stream of stores and recalls: Ray
  restarts the shard, which reloads its partition from its SQLite file; meanwhile
  requests that need it get 503 with Retry-After (no other 5xx, no answer computed
  without it), and afterwards every acknowledged pattern is there and nothing else is;
- the whole cluster stopped (every Ray process) and started again, the gateway too: a
  sharded memory and a trained memory with read replicas come back intact, answering as
  before; the replicas answer what the trained model itself answers.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from cluster_helpers import ask, create, start_client, store
from service_helpers import wait_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _all_ids(client, name: str) -> list[str]:
    ids, cursor = [], None
    while True:
        page = client.get(
            f"/v1/memories/{name}/patterns?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        ).json()
        ids += [p["id"] for p in page["patterns"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


def _wait_up(client, name: str, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        placement = client.get(f"/v1/memories/{name}").json()["placement"]
        if client.get("/readyz").status_code == 200 and all(p["state"] == "up" for p in placement):
            return placement
        assert time.monotonic() < deadline, placement
        time.sleep(0.2)


def test_kill_9_of_a_shard_during_stores_and_recalls_loses_nothing(
    tmp_path, ray_local_cluster, fashion_vectors
):
    vectors = fashion_vectors[:600]
    gateway = start_client(tmp_path / "gw", ray_local_cluster.get(), shard_timeout_s=5.0)
    try:
        create(gateway, "s", {}, shards=2)
        store(gateway, "s", vectors[:100])
        victim = gateway.get("/v1/memories/s").json()["placement"][1]
        acked, doubt, statuses, retry_after = set(), set(), [], []
        stop = threading.Event()

        def writer() -> None:
            at = 100
            while not stop.is_set() and at < len(vectors):
                batch = {
                    "patterns": [{"id": f"p{i}", "vector": vectors[i].tolist()} for i in range(at, at + 10)]
                }
                r = gateway.post("/v1/memories/s/patterns", json=batch)
                statuses.append(r.status_code)
                if r.status_code == 201:
                    acked.update(r.json()["ids"])
                    at += 10
                elif r.status_code == 503:
                    retry_after.append(r.headers.get("retry-after"))
                    doubt.update((r.json()["error"]["details"] or {}).get("stored_unknown", []))
                    time.sleep(0.2)

        def reader() -> None:
            gen = torch.Generator().manual_seed(0)
            while not stop.is_set():
                i = int(torch.randint(0, 100, (1,), generator=gen))
                r = gateway.post("/v1/memories/s/retrieve", json={"vector": vectors[i].tolist(), "k": 1})
                statuses.append(r.status_code)
                if r.status_code == 200:  # never an answer without a shard
                    assert r.json()["matches"][0]["id"] == f"p{i}"
                elif r.status_code == 503:
                    retry_after.append(r.headers.get("retry-after"))

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(6.0)
        stop.set()
        for t in threads:
            t.join(60)
        placement = _wait_up(gateway, "s")
        assert placement[1]["pid"] != victim["pid"]  # Ray restarted it in a new process
        assert set(statuses) <= {200, 201, 503}, sorted(set(statuses))
        assert all(v == "1" for v in retry_after)
        assert len(acked) > 20  # the stream went on around the restart
        stored = _all_ids(gateway, "s")
        assert len(stored) == len(set(stored))
        assert {f"p{i}" for i in range(100)} | acked <= set(stored)  # nothing acknowledged lost
        assert set(stored) - acked - {f"p{i}" for i in range(100)} <= doubt  # nothing half-stored
        assert gateway.get("/v1/memories/s").json()["count"] == len(stored)
        for pid in sorted(acked)[:5]:
            i = int(pid[1:])
            assert (
                ask(gateway, "s", "retrieve", {"vector": vectors[i].tolist(), "k": 1})["matches"][0]["id"]
                == pid
            )
    finally:
        gateway.__exit__(None, None, None)


def test_whole_cluster_restart_keeps_sharded_and_replicated_memories(
    tmp_path, ray_local_cluster, fashion_vectors
):
    vectors = fashion_vectors[:300]
    small = torch.nn.functional.avg_pool2d(vectors.reshape(-1, 1, 28, 28), 4).reshape(-1, 49)[:40]  # (40, 49)
    cue = {"vector": (vectors[5] * 0.7).tolist(), "k": 3, "steps": 2}
    pc_cue = {"vector": (small[3] + 0.05).tolist(), "k": 2}
    gateway = start_client(tmp_path / "gw", ray_local_cluster.get())
    try:
        create(gateway, "h", {"similarity": "manhattan", "beta": 0.05}, shards=2)
        store(gateway, "h", vectors)
        pc = {
            "name": "pc",
            "kind": "pc",
            "shape": [49],
            "config": {"sizes": [16, 49], "epochs": 30, "replicas": 2},
        }
        assert gateway.post("/v1/memories", json=pc).status_code == 201
        r = gateway.post(
            "/v1/memories/pc/patterns",
            json={"patterns": [{"id": f"q{i}", "vector": v.tolist()} for i, v in enumerate(small)]},
        )
        assert r.status_code == 201
        job = gateway.post("/v1/memories/pc/train", json={}).json()
        assert wait_job(gateway, job["id"])["status"] == "succeeded"
        before = ask(gateway, "h", "retrieve", cue)
        pc_before = ask(gateway, "pc", "retrieve", pc_cue)
        assert pc_before["state"] == "ready" and pc_before["trained_count"] == 40
        # the replicas answer what the gateway's own trained model answers
        live = gateway.app.state.service.registry.get("pc")
        local = type(live).__mro__[2].recall_batch(live, torch.tensor([pc_cue["vector"]]), None, 2, 1)[0]
        assert torch.allclose(torch.tensor(pc_before["pattern"]["vector"]), local.output, atol=1e-6)
        assert [m["id"] for m in pc_before["matches"]] == [i for i, _ in local.matches]
        replicas = gateway.get("/v1/memories/pc").json()["placement"]
        assert [p["role"] for p in replicas] == ["replica", "replica"]
        listing = _all_ids(gateway, "h")
    finally:
        gateway.__exit__(None, None, None)
    cluster = ray_local_cluster.restart()  # every process of the old one stopped: no actor survives
    gateway = start_client(tmp_path / "gw", cluster)
    try:
        assert gateway.get("/v1/memories/h").json()["count"] == 300
        assert _all_ids(gateway, "h") == listing
        after = ask(gateway, "h", "retrieve", cue)
        assert after == before  # the same shards' files, the same arithmetic
        pc_after = ask(gateway, "pc", "retrieve", pc_cue)
        assert pc_after == pc_before  # the same checkpoint, loaded by new replicas
    finally:
        gateway.__exit__(None, None, None)
