"""The Ray mode's durability claims, on a real local Ray cluster (app/cluster/local.py).

- kill -9 of a shard's worker process during a stream of stores and recalls: Ray
  restarts the shard, on its own node, which reloads its partition from its SQLite file
  in that node's data dir; meanwhile requests that need it get 503 with Retry-After (no
  other 5xx, no answer computed without it), and afterwards every acknowledged pattern is
  there and nothing else is;
- /readyz is 503 from the moment a shard's process dies until the shard is back;
- the whole cluster stopped (every Ray process) and started again, the gateway too: a
  sharded memory and a trained memory with read replicas come back intact, answering as
  before, each shard on the node it was first placed on (the local cluster's worker nodes
  have addresses of their own, 127.0.0.3 and 127.0.0.4, and data dirs of their own);
  the replicas answer what the trained model itself answers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from cluster_helpers import ask, create, create_trained, start_client, store

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


def _on_own_node(placement: list[dict], cluster) -> None:
    """Each shard's file is in the data dir of the node it runs on (AMS_SHARD_STORAGE=node)."""
    for p in placement:
        assert p["node_ip"] in ("127.0.0.3", "127.0.0.4"), p
        assert Path(p["file"]).parent.parent.parent.parent == cluster.node_dir(p["node_ip"]), p
        assert Path(p["file"]).is_file(), p


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
        assert placement[1]["node_ip"] == victim["node_ip"]  # on its node, with its file
        assert placement[1]["file"] == victim["file"]
        _on_own_node(placement, ray_local_cluster.get())
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


def test_readyz_is_503_while_a_shard_restarts(tmp_path, ray_local_cluster, fashion_vectors):
    gateway = start_client(tmp_path / "gw", ray_local_cluster.get())
    try:
        create(gateway, "r", {}, shards=1)
        store(gateway, "r", fashion_vectors[:50])
        victim = _wait_up(gateway, "r")[0]
        os.kill(victim["pid"], signal.SIGKILL)  # and no request meanwhile: /readyz alone must see it
        killed = time.monotonic()
        while (ready := gateway.get("/readyz")).status_code == 200:
            # Ray's control store knows at once (the prober alone would take up to 2 + 4 s)
            assert time.monotonic() - killed < 2.0, "/readyz stayed 200 after the shard's process died"
            time.sleep(0.05)
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"]["code"] == "not_ready"
        assert "memory 'r': shard 0 of 1" in ready.json()["error"]["message"]
        assert gateway.get("/v1/memories/r").json()["placement"][0]["state"] == "down"
        back = _wait_up(gateway, "r")  # /readyz 200 again, the shard up in a new process
        assert back[0]["pid"] != victim["pid"] and back[0]["patterns"] == 50
        body = {"vector": fashion_vectors[7].tolist(), "k": 1}
        assert ask(gateway, "r", "retrieve", body)["matches"][0]["id"] == "p7"
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
        create_trained(gateway, "pc", small, sizes=[16, 49], epochs=30, replicas=2)
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
        assert all(p["node_ip"] in ("127.0.0.3", "127.0.0.4") and "file" not in p for p in replicas)
        listing = _all_ids(gateway, "h")
        placed = gateway.get("/v1/memories/h").json()["placement"]
        assert {p["node_ip"] for p in placed} == {"127.0.0.3", "127.0.0.4"}  # spread, one per node
        _on_own_node(placed, ray_local_cluster.get())
        assert not (tmp_path / "gw" / "shards").exists()  # nothing on the gateway's disk
    finally:
        gateway.__exit__(None, None, None)
    cluster = ray_local_cluster.restart()  # every process of the old one stopped: no actor survives
    gateway = start_client(tmp_path / "gw", cluster)
    try:
        assert gateway.get("/v1/memories/h").json()["count"] == 300
        replaced = gateway.get("/v1/memories/h").json()["placement"]
        assert [(p["node_ip"], p["file"]) for p in replaced] == [(p["node_ip"], p["file"]) for p in placed]
        assert [p["node_id"] for p in replaced] != [p["node_id"] for p in placed]  # new Ray nodes
        assert _all_ids(gateway, "h") == listing
        after = ask(gateway, "h", "retrieve", cue)
        assert after == before  # the same shards' files, the same arithmetic
        pc_after = ask(gateway, "pc", "retrieve", pc_cue)
        assert pc_after == pc_before  # the same checkpoint, loaded by new replicas
    finally:
        gateway.__exit__(None, None, None)


def test_a_shard_whose_node_is_gone_answers_503_and_is_not_replaced(
    tmp_path, ray_local_cluster, fashion_vectors
):
    cluster = ray_local_cluster.get()  # (first: it sets the environment Ray reads on import)
    import ray

    from app.cluster.actors import actor_state

    gateway = start_client(tmp_path / "gw", cluster, shard_timeout_s=2.0)
    body = {"vector": fashion_vectors[7].tolist(), "k": 1}
    try:
        create(gateway, "g", {}, shards=2)
        store(gateway, "g", fashion_vectors[:100])
        placed = _wait_up(gateway, "g")
        lost = placed[1]["node_ip"]
        handle = gateway.app.state.service.registry.get("g").shards.handles[1]
        cluster.stop_worker(int(lost.rsplit(".", 1)[1]) - 3)  # every process of that node
        deadline = time.monotonic() + 90.0
        while any(n["Alive"] for n in ray.nodes() if n["NodeManagerAddress"] == lost):
            assert time.monotonic() < deadline, "Ray never noticed the node had gone"
            time.sleep(0.5)
        time.sleep(3.0)  # time enough for Ray to restart the shard on the other node, were it free to
        assert actor_state(handle) != "ALIVE"
        r = gateway.post("/v1/memories/g/retrieve", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shard_unavailable", r.text
        assert r.headers["retry-after"] == "1"
        assert f"pinned to node {lost}" in r.json()["error"]["message"], r.text  # what it waits for
        ready = gateway.get("/readyz")
        assert ready.status_code == 503 and f"pinned to node {lost}" in ready.json()["error"]["message"]
        details = gateway.get("/v1/memories/g").json()
        down = details["placement"][1]
        assert down["state"] == "down" and down["index"] == 1 and down["node_ip"] == lost, down
        assert (details["count"], details["count_complete"]) == (100, False)  # as last heard
        other = next(ip for ip in ("127.0.0.3", "127.0.0.4") if ip != lost)
        assert not (
            cluster.node_dir(other) / Path(placed[1]["file"]).relative_to(cluster.node_dir(lost))
        ).exists()
        cluster.start_worker(int(lost.rsplit(".", 1)[1]) - 3)  # the node is back: so is its shard
        back = _wait_up(gateway, "g")
        assert (back[1]["node_ip"], back[1]["file"], back[1]["patterns"]) == (
            lost,
            placed[1]["file"],
            placed[1]["patterns"],
        )
        assert ask(gateway, "g", "retrieve", body)["matches"][0]["id"] == "p7"
        assert gateway.get("/v1/memories").json()["memories"][0]["count_complete"] is True
    finally:
        gateway.__exit__(None, None, None)


def test_a_memory_no_node_can_hold_is_refused_whole(tmp_path, ray_local_cluster):
    gateway = start_client(tmp_path / "gw", ray_local_cluster.get(), shard_cpus=64.0)  # nodes have 8
    try:
        body = {"name": "big", "kind": "hopfield", "shape": [4], "config": {"shards": 2}}
        r = gateway.post("/v1/memories", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shard_unavailable", r.text
        assert r.headers["retry-after"] == "5"
        assert gateway.get("/v1/memories/big").status_code == 404  # nothing of it remains
        assert gateway.get("/readyz").status_code == 200
    finally:
        gateway.__exit__(None, None, None)
