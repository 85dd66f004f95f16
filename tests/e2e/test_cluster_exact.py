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
import torch
from cluster_helpers import CONFIGS, ask, compare, create, queries, start_client, store
from service_helpers import png_b64, wait_job

from memory_core.captions import photo_caption_pairs

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


def test_cross_modal_lookup_over_shards_equals_one_process(clients):
    """A text memory (pattern + caption embedding) over 3 shards: caption -> pictures (the
    stored pictures of the best k come back from their shards) and picture -> captions."""
    pairs = photo_caption_pairs(32)
    single, gateway = clients
    body = {"name": "photos", "kind": "hopfield", "shape": [3, 32, 32], "text": True}
    patterns = [
        {"id": pairs.ids[i], "image": png_b64(pairs.images[i]), "text": pairs.captions[i]} for i in range(20)
    ]
    for client, config in ((single, {}), (gateway, {"shards": 3})):
        assert client.post("/v1/memories", json=body | {"config": config}).status_code == 201
        assert client.post("/v1/memories/photos/patterns", json={"patterns": patterns}).status_code == 201
    half = torch.ones(3, 32, 32)
    half[:, 16:] = 0
    for query in (
        {"text": pairs.paraphrases[3], "k": 3},
        {"text": pairs.captions[11], "k": 2},
        {"image": png_b64(pairs.images[5]), "k": 4},
        {"image": png_b64(pairs.images[7]), "mask": png_b64(half[:1]), "k": 3},
    ):
        one, other = (ask(c, "photos", "lookup", query) for c in (single, gateway))
        assert abs(one["energy"] - other["energy"]) <= 1e-5 * max(1.0, abs(one["energy"]))
        for key in ("patterns", "captions"):
            if one[key] is not None:
                assert [m["id"] for m in one[key]] == [m["id"] for m in other[key]]
                assert [m.get("text") for m in one[key]] == [m.get("text") for m in other[key]]
                assert [m.get("image") for m in one[key]] == [m.get("image") for m in other[key]]
                for a, b in zip(one[key], other[key]):
                    assert abs(a["score"] - b["score"]) <= 1e-5 * max(1.0, abs(a["score"]))


def test_relational_memory_is_held_whole_at_the_gateway_and_answers_as_one_process(clients):
    """Facts are not split: a relational memory lives in the gateway, trained and queried as in
    one process (same seed, same facts: the same answers); config.replicas is refused for it."""
    single, gateway = clients
    facts = [{"relation": "next", "args": [f"p{i}", f"p{i + 1}"]} for i in range(12)]
    body = {"name": "kb", "kind": "relational", "config": {"dim": 8, "negatives": 4, "epochs": 20}}
    r = gateway.post("/v1/memories", json=body | {"name": "bad", "config": {"replicas": 2}})
    assert r.status_code == 422 and "replicas" in r.json()["error"]["message"]
    answers = []
    for client in (single, gateway):
        assert client.post("/v1/memories", json=body).status_code == 201
        assert client.post("/v1/memories/kb/facts", json={"facts": facts}).status_code == 201
        job = client.post("/v1/memories/kb/train", json={}).json()
        assert wait_job(client, job["id"])["status"] == "succeeded"
        query = {"relation": "next", "args": ["p3", None], "k": 5}
        r = client.post("/v1/memories/kb/query", json=query)
        assert r.status_code == 200, r.text
        answers.append((r.json(), client.get("/v1/memories/kb/facts?limit=5").json()))
    assert answers[0] == answers[1]
    assert not gateway.get("/v1/memories/kb").json().get("placement")
