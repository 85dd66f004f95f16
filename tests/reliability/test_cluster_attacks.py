"""Issue 22's attacks, a short subset, against a gateway in the Ray mode (``python -m app`` with
AMS_RAY_ADDRESS, over the session's real local Ray cluster, app/cluster/local.py): the same
answers as one process (tests/reliability/test_attacks.py), /livez answering throughout
(probed every 20 ms from a process of its own), and a writer storing small batches into a
memory of two shards the whole time, none of whose acknowledged stores is lost, after a
SIGKILL of the gateway too (the shards outlive it).

- keyless 30 MiB bodies: 401 on the headers; 30 MB cue vectors: 413 (a vector memory) and
  422 ``too_many_values`` (an image memory) before they are read;
- memory: a model over the gateway's budget is refused at create, and a store whose part
  would pass a shard's AMS_SHARD_MEMORY_BUDGET is refused (422 ``memory_budget_exceeded``
  naming it) with nothing of it stored;
- a flood gets 429 with Retry-After; bad configs (shards, replicas) get 422 ``invalid_config``.
"""

from __future__ import annotations

import attacks as A
import attacks_state as S
import numpy as np
import pytest
from live_server import LiveServer

pytestmark = pytest.mark.slow

SHARD_BUDGET = 4 << 20  # bytes each shard's patterns may take (AMS_SHARD_MEMORY_BUDGET)
D = 784  # the budget test's memory: 3136 bytes per pattern


@pytest.fixture(scope="module")
def target(tmp_path_factory, ray_local_cluster):
    cluster = ray_local_cluster.get()
    env = {
        **A.SERVER_ENV,
        "AMS_RAY_ADDRESS": cluster.env["AMS_RAY_ADDRESS"],
        "AMS_RAY_NODE_IP": cluster.env["AMS_RAY_NODE_IP"],
        "AMS_RAY_NAMESPACE": "ams-attacks",
        "AMS_SHARD_CPUS": "0.5",
        "AMS_SHARD_TIMEOUT_S": "10",
        "AMS_SHARD_MEMORY_BUDGET": str(SHARD_BUDGET),
        "AMS_MEMORY_BUDGET": "512MiB",
        "AMS_MAX_INFLIGHT_BYTES": "160MiB",  # as one process under the attacks (its budget / 8)
    }
    server = LiveServer(tmp_path_factory.mktemp("cluster-attacks") / "data", main=True, **env)
    t = A.Target(server)
    try:
        with t.client(timeout=120) as c:
            body = {"name": "ledger", "kind": "hopfield", "shape": [4], "config": {"shards": 2}}
            assert c.post("/v1/memories", json=body).status_code == 201
            for name in ("vec", "img"):
                t.fixture(name)
                c.post(
                    f"/v1/memories/{name}/retrieve", json={"vector": [0.5] * (64 if name == "vec" else 784)}
                )
        t.ledger = S.Ledger(t)
        yield t
        t.ledger.stop()
    finally:
        with t.client(timeout=120) as c:  # the shards are detached actors: deleting a memory ends them
            for name in ("vec", "img", "ledger", "budget", "huge"):
                c.delete(f"/v1/memories/{name}")
        server.stop()


def test_keyless_bodies_and_huge_cues_are_refused_before_they_are_read(target):
    r = A.run(target, lambda t: A.unauthenticated_stalled_bodies(t, connections=20, mib=30))
    A.survived(r)
    assert r["statuses"] == [401] * 20
    r = A.run(target, A.huge_cue)
    A.survived(r)
    assert r["statuses"] == {"vec": [413] * 4, "img": [422] * 4}


def test_over_the_gateways_and_a_shards_budget_is_refused(target):
    r = A.run(target, S.huge_model)
    A.survived(r)
    assert (r["create"]["status"], r["create"]["code"]) == (422, "memory_budget_exceeded"), r

    def over_a_shard(t: A.Target) -> dict:
        with t.client() as c:
            body = {"name": "budget", "kind": "hopfield", "shape": [D], "config": {"shards": 2}}
            assert c.post("/v1/memories", json=body).status_code == 201
            rng = np.random.default_rng(0)

            def batch(start: int, n: int) -> dict:
                rows = rng.random((n, D)).round(3).tolist()
                return {"patterns": [{"id": f"b{start + i}", "vector": v} for i, v in enumerate(rows)]}

            # ~100 rows per shard (120 at most): (3 x 120 + 2 x 120) x 3136 B = 1.9 MB < 4 MiB
            small = c.post("/v1/memories/budget/patterns", json=batch(0, 200))
            # ~500 more per shard: (3 x 600 + 2 x 500) x 3136 B = 8.8 MB > 4 MiB
            big = c.post("/v1/memories/budget/patterns", json=batch(200, 1000))
            count = c.get("/v1/memories/budget").json()["count"]
        return {"small": small.status_code, "big": big.json(), "count": count, "result": f"{big.status_code}"}

    r = A.run(target, over_a_shard)
    A.survived(r)
    assert r["small"] == 201 and r["count"] == 200, r  # nothing of the refused batch is stored
    error = r["big"]["error"]
    assert error["code"] == "memory_budget_exceeded" and "AMS_SHARD_MEMORY_BUDGET" in error["message"], error
    assert error["details"]["limit_bytes"] == SHARD_BUDGET and "shard" in error["message"]


def test_a_flood_is_rate_limited_and_bad_configs_are_refused(target):
    r = A.run(target, A.request_flood)
    A.survived(r)
    assert r["statuses"].get(429, 0) > 0 and r["retry_after"] == ["1"], r
    bad = {
        "shards 0": {"kind": "hopfield", "shape": [4], "config": {"shards": 0}},
        "shards 'two'": {"kind": "hopfield", "shape": [4], "config": {"shards": "two"}},
        "shards 10^6": {"kind": "hopfield", "shape": [4], "config": {"shards": 10**6}},
        "replicas of a hopfield memory": {"kind": "hopfield", "shape": [4], "config": {"replicas": 2}},
        "shards of a pc memory": {"kind": "pc", "shape": [4], "config": {"sizes": [4, 4], "shards": 2}},
        "a seed of 2^70": {"kind": "pc", "shape": [4], "config": {"sizes": [4, 4], "seed": 2**70}},
    }
    with target.client() as c:
        answers = {what: c.post("/v1/memories", json={"name": "bad", **body}) for what, body in bad.items()}
        listed = [m["name"] for m in c.get("/v1/memories").json()["memories"]]
    assert {what: (r.status_code, r.json()["error"]["code"]) for what, r in answers.items()} == dict.fromkeys(
        bad, (422, "invalid_config")
    )
    assert "bad" not in listed


def test_nothing_acknowledged_was_lost_after_a_gateway_kill_too(target):
    ledger = target.ledger
    ledger.stop()
    assert len(ledger.acked) > 30 and not ledger.errors, ledger.errors
    assert ledger.missing() == []
    target.server.restart(kill=True)  # the shards outlive their gateway; a new one finds them
    assert ledger.missing() == []
