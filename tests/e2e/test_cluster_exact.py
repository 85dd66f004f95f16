"""The Ray mode answers exactly as one process does, on a real local Ray cluster.

The test session's cluster (fixture ``ray_local_cluster``: a head and two worker nodes,
each a ``ray start`` process tree, app/cluster/local.py). The same Fashion-MNIST patterns go into a memory of the
single-process service and into memories split over 1, 2 and 4 shards; retrieve (noisy
and half-masked cues, one and three steps) and complete must answer the same: the same
match ids in the same order, vectors, scores and energies to 1e-5. Here N = 2 000 and each
shard count takes one similarity (euclidean, manhattan, dot); scripts/check_cluster_exact.py
runs every similarity at every shard count at N = 20 000 through the same code
(results/cluster_exact.md). The arithmetic itself, for every similarity and separation,
is tests/numerics/test_partials.py.
"""

from __future__ import annotations

import pytest
from cluster_helpers import CONFIGS, ask, compare, create, queries, start_client, store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

N = 2000
CASES = [(1, "euclidean"), (2, "manhattan"), (4, "dot")]


@pytest.fixture(scope="module")
def clients(tmp_path_factory, ray_local_cluster):
    root = tmp_path_factory.mktemp("exact")
    single = start_client(root / "single")
    gateway = start_client(root / "gateway", ray_local_cluster.get())
    yield single, gateway
    gateway.__exit__(None, None, None)
    single.__exit__(None, None, None)


@pytest.mark.parametrize(("shards", "similarity"), CASES)
def test_sharded_recall_equals_one_process(clients, fashion_vectors, shards, similarity):
    single, gateway = clients
    name = f"{similarity}-{shards}"
    create(single, name, CONFIGS[similarity])
    details = create(gateway, name, CONFIGS[similarity], shards=shards)
    assert [p["role"] for p in details["placement"]] == ["shard"] * shards
    assert "shards" not in details["config"] and "placement" not in single.get(f"/v1/memories/{name}").json()
    vectors = fashion_vectors[:N]
    store(single, name, vectors)
    store(gateway, name, vectors)
    assert gateway.get(f"/v1/memories/{name}").json()["count"] == N
    placement = gateway.get(f"/v1/memories/{name}").json()["placement"]
    if shards > 1:  # the ids' hash spreads the patterns over every shard
        assert all(p["patterns"] > N / shards / 2 for p in placement), placement
    for endpoint, body in queries(vectors, 6):
        compare(ask(single, name, endpoint, body), ask(gateway, name, endpoint, body))
    # the listing is in storage order, page by page, as in one process (cursors are opaque)
    pages = []
    for client in (single, gateway):
        first = client.get(f"/v1/memories/{name}/patterns?limit=7").json()
        cursor = first["next_cursor"]
        second = client.get(f"/v1/memories/{name}/patterns?limit=7&cursor={cursor}").json()
        pages.append((first["patterns"], second["patterns"]))
    assert pages[0] == pages[1]


def test_delete_is_visible_to_every_later_recall_and_errors_match(clients, fashion_vectors):
    single, gateway = clients
    for client in (single, gateway):
        create(client, "del", {}, **({"shards": 2} if client is gateway else {}))
        store(client, "del", fashion_vectors[:50])
    body = {"vector": fashion_vectors[7].tolist(), "k": 2, "include_vector": True}
    assert ask(gateway, "del", "retrieve", body)["matches"][0]["id"] == "p7"
    for client in (single, gateway):
        assert client.delete("/v1/memories/del/patterns/p7").status_code == 204
    compare(ask(single, "del", "retrieve", body), ask(gateway, "del", "retrieve", body))
    assert ask(gateway, "del", "retrieve", body)["matches"][0]["id"] != "p7"
    # the same errors, with the same codes: a taken id stores nothing of its batch
    dup = {"patterns": [{"id": "new", "vector": [0.0] * 784}, {"id": "p3", "vector": [0.0] * 784}]}
    answers = [c.post("/v1/memories/del/patterns", json=dup) for c in (single, gateway)]
    assert [a.status_code for a in answers] == [409, 409]
    assert answers[0].json() == answers[1].json()
    assert gateway.get("/v1/memories/del/patterns/new").status_code == 404
    for path in ("/v1/memories/del/patterns/p7", "/v1/memories/nope/patterns/p1"):
        assert single.get(path).json() == gateway.get(path).json()
    one = single.get("/v1/memories/del/patterns/p3").json()
    assert one == gateway.get("/v1/memories/del/patterns/p3").json()
    assert gateway.delete("/v1/memories/del").status_code == 204
    assert gateway.get("/v1/memories/del").status_code == 404


def test_config_of_the_cluster_is_checked(clients):
    _, gateway = clients
    r = gateway.post(
        "/v1/memories", json={"name": "bad", "kind": "hopfield", "shape": [4], "config": {"shards": 0}}
    )
    assert r.status_code == 422 and "config.shards" in r.json()["error"]["message"]
    r = gateway.post(
        "/v1/memories", json={"name": "bad", "kind": "pc", "shape": [4], "config": {"shards": 2}}
    )
    assert r.status_code == 422 and "replicas" in r.json()["error"]["message"]


def test_metrics_and_readiness_cover_every_shard(clients):
    _, gateway = clients
    assert gateway.get("/readyz").status_code == 200
    text = gateway.get("/metrics").text
    assert 'ams_shard_up{index="3",memory="dot-4",role="shard"} 1.0' in text
    assert 'ams_shard_patterns{index="0",memory="euclidean-1",role="shard"} 2000.0' in text
    assert "ams_shard_recall_seconds_total" in text
