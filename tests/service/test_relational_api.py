"""Kind "relational" over HTTP: facts, queries, the vocabulary, training jobs (progress,
cancel, facts changed meanwhile), restart, bad input, and the endpoints of the other kinds."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import error_code, wait_job, wait_ready

from app.main import create_app
from app.settings import Settings
from memory_core.boxe.datasets import europe_kb, pykeen_available

# Germany's nine land neighbours, as the bundled knowledge base stores them (either way round).
GERMANY_NEIGHBOURS = {
    e for r, args in europe_kb().facts if r == "borders" and "germany" in args for e in args
} - {"germany"}
SMALL = {"dim": 8, "negatives": 4, "epochs": 20}  # the tests of the service's machinery train this


def chain(n: int, relation: str = "next") -> list[dict]:
    """relation(p0, p1), relation(p1, p2), ...: n facts over n + 1 entities."""
    return [{"relation": relation, "args": [f"p{i}", f"p{i + 1}"]} for i in range(n)]


def _create(client: TestClient, name: str, config: dict | None = None) -> dict:
    r = client.post("/v1/memories", json={"name": name, "kind": "relational", "config": config or SMALL})
    assert r.status_code == 201, r.text
    return r.json()


def _store(client: TestClient, name: str, facts: list[dict]) -> dict:
    r = client.post(f"/v1/memories/{name}/facts", json={"facts": facts})
    assert r.status_code == 201, r.text
    return r.json()


def _train(client: TestClient, name: str, epochs: int | None = None) -> dict:
    r = client.post(f"/v1/memories/{name}/train", json={} if epochs is None else {"epochs": epochs})
    assert r.status_code == 202, r.text
    return r.json()


def _query(client: TestClient, name: str, relation: str, args: list, **extra) -> list[dict]:
    r = client.post(f"/v1/memories/{name}/query", json={"relation": relation, "args": args, **extra})
    assert r.status_code == 200, r.text
    return r.json()["candidates"]


def _details(client: TestClient, name: str) -> dict:
    return client.get(f"/v1/memories/{name}").json()


@pytest.fixture(scope="module")
def kb() -> Iterator[TestClient]:
    """A service with the europe preset loaded (dim 64, 60 epochs) and trained."""
    with (
        tempfile.TemporaryDirectory() as data,
        TestClient(create_app(Settings(data_dir=Path(data), device="cpu"))) as client,
    ):
        wait_ready(client)
        r = client.post("/v1/demo", json={"preset": "europe", "config": {"epochs": 60}})
        assert r.status_code == 202, r.text
        assert r.json()["memory"]["kind"] == "relational" and r.json()["memory"]["shape"] == []
        assert wait_job(client, r.json()["job"]["id"])["status"] == "succeeded"
        job = wait_job(client, _train(client, "demo-europe")["id"])
        assert job["status"] == "succeeded" and job["stop_reason"] == "epochs", job
        assert job["epoch"] == job["epochs"] == 60 and job["progress"] == 1.0 and job["patterns"] == 176
        assert math.isfinite(job["energy"])
        yield client


def test_a_trained_knowledge_base_completes_facts(kb):
    assert len(GERMANY_NEIGHBOURS) == 9
    details = _details(kb, "demo-europe")
    assert details["state"] == "ready" and details["count"] == details["trained_count"] == 176
    assert details["config"]["rules"] == europe_kb().rules and details["dim"] == 0
    top = _query(kb, "demo-europe", "borders", ["germany", None], k=9)
    assert len(top) == 9 and [c["score"] for c in top] == sorted((c["score"] for c in top), reverse=True)
    assert len({c["entity"] for c in top} & GERMANY_NEIGHBOURS) >= 8, top
    # Stored as borders(germany, denmark); borders(france, germany) only through the symmetry rule.
    flags = {c["entity"]: c["known"] for c in top}
    assert flags.get("denmark") is True and flags.get("france") is False
    # Rules: capital_of(paris, france) implies located_in; contains is located_in's inverse.
    assert _query(kb, "demo-europe", "located_in", ["paris", None], k=1)[0]["entity"] == "france"
    assert {c["entity"] for c in _query(kb, "demo-europe", "contains", ["italy", None], k=3)} == {
        "rome",
        "milan",
        "naples",
    }
    # filter_known leaves out the stored completions; a k past the entities gives them all.
    rest = _query(kb, "demo-europe", "borders", ["germany", None], k=1000, filter_known=True)
    vocabulary = kb.get("/v1/memories/demo-europe/vocabulary?limit=1000").json()
    stored = {"denmark", "poland", "czechia", "austria", "switzerland"}
    assert {c["entity"] for c in rest} == set(vocabulary["entities"]) - stored
    assert not any(c["known"] for c in rest)
    everything = _query(kb, "demo-europe", "borders", ["germany", None], k=10_000)
    assert len(everything) == vocabulary["entity_count"] == len(vocabulary["entities"])


def test_the_vocabulary_pages_through_entities(kb):
    first = kb.get("/v1/memories/demo-europe/vocabulary?limit=30").json()
    assert {r["name"]: r["arity"] for r in first["relations"]} == {
        "borders": 2,
        "located_in": 2,
        "capital_of": 2,
        "contains": 2,
        "member_of": 2,
        "official_language": 2,
        "currency": 2,
    }
    names, page = list(first["entities"]), first
    while page["next_cursor"]:
        page = kb.get(f"/v1/memories/demo-europe/vocabulary?limit=30&cursor={page['next_cursor']}").json()
        names += page["entities"]
    assert len(names) == len(set(names)) == first["entity_count"]
    assert names[:3] == ["portugal", "spain", "france"]  # the order of first use


def test_bad_queries_are_refused_by_name_and_change_nothing(kb):
    before = _query(kb, "demo-europe", "borders", ["spain", None], k=5)
    for body, status, code, named in [
        ({"relation": "flies_to", "args": ["spain", None]}, 422, "unknown_relation", "flies_to"),
        ({"relation": "borders", "args": ["atlantis", None]}, 422, "unknown_entity", "atlantis"),
        ({"relation": "borders", "args": ["spain", None, "france"]}, 422, "arity_mismatch", "borders"),
        ({"relation": "borders", "args": ["spain", "france"]}, 422, "invalid_query", "null"),
        ({"relation": "borders", "args": [None, None]}, 422, "invalid_query", "null"),
        ({"relation": "borders", "args": ["spain", None], "k": 0}, 422, "validation_error", ""),
        ({"relation": "borders", "args": ["spain", None], "k": "3"}, 422, "validation_error", ""),
        ({"relation": "borders", "args": []}, 422, "validation_error", ""),
        ({"relation": "", "args": ["spain", None]}, 422, "validation_error", ""),
        ({"relation": "borders", "args": ["spain", None], "extra": 1}, 422, "validation_error", ""),
    ]:
        r = kb.post("/v1/memories/demo-europe/query", json=body)
        assert r.status_code == status and error_code(r) == code, (body, r.text)
        assert named in r.json()["error"]["message"], r.text
    r = kb.post("/v1/memories/nope/query", json={"relation": "borders", "args": ["spain", None]})
    assert r.status_code == 404 and error_code(r) == "memory_not_found"
    assert _query(kb, "demo-europe", "borders", ["spain", None], k=5) == before
    assert _details(kb, "demo-europe")["count"] == 176


def test_creating_a_relational_memory_checks_its_config(client):
    details = _create(client, "kb", {"dim": 16, "rules": [{"type": "symmetry", "relation": "married"}]})
    assert details["shape"] == [] and details["dim"] == 0 and details["text"] is False
    assert details["state"] == "untrained" and details["count"] == 0
    assert details["config"]["dim"] == 16 and details["config"]["epochs"] == 100  # the rest: defaults
    assert client.get("/v1/info").json()["default_configs"]["relational"]["rules"] == []
    mirror = [  # a symmetric r that excludes its own inverse
        {"type": "symmetry", "relation": "r"},
        {"type": "exclusion", "relations": ["r", "s"]},
        {"type": "inversion", "relation": "r", "inverse": "s"},
    ]
    conflict = [
        {"type": "hierarchy", "premise": "a", "conclusion": "b"},
        {"type": "hierarchy", "premise": "a", "conclusion": "c"},
        {"type": "exclusion", "relations": ["b", "c"]},
    ]
    for body, code, named in [
        ({"shape": [4]}, "invalid_shape", "shape"),
        ({"text": True}, "invalid_shape", "text"),
        ({"config": {"dimension": 8}}, "invalid_config", "dimension"),
        ({"config": {"dim": 0}}, "invalid_config", "dim"),
        ({"config": {"dim": True}}, "invalid_config", "dim"),
        ({"config": {"dim": 100_000}}, "invalid_config", "dim"),
        ({"config": {"lr": -1}}, "invalid_config", "lr"),
        ({"config": {"seed": 2**70}}, "invalid_config", "seed"),
        ({"config": {"tanh": "yes"}}, "invalid_config", "tanh"),
        ({"config": {"negatives": 10_000, "batch_size": 10_000}}, "invalid_config", "negatives"),
        ({"config": {"rules": "symmetric"}}, "invalid_config", "rules"),
        ({"config": {"rules": [{"type": "telepathy"}]}}, "invalid_rule", "telepathy"),
        ({"config": {"rules": mirror}}, "rule_conflict", "'r'"),
        ({"config": {"rules": conflict}}, "rule_conflict", "'a'"),
    ]:
        r = client.post("/v1/memories", json={"name": "bad", "kind": "relational", **body})
        assert r.status_code == 422 and error_code(r) == code, (body, r.text)
        assert named in r.json()["error"]["message"], r.text
        assert client.get("/v1/memories/bad").status_code == 404
    r = client.post("/v1/memories", json={"name": "bad", "kind": "hopfield"})
    assert r.status_code == 422 and error_code(r) == "invalid_shape"


def test_facts_are_stored_listed_read_and_deleted(make_client):
    client = make_client(max_batch=8, max_page=5)
    _create(client, "kb")
    first = _store(client, "kb", chain(6))
    assert first == {"ids": [1, 2, 3, 4, 5, 6], "new": 6, "count": 6}
    again = _store(client, "kb", [*chain(2), {"relation": "knows", "args": ["p1", "p9", "p3"]}])
    assert again["ids"][:2] == [1, 2] and again["new"] == 1 and again["count"] == 7
    # One bad fact stores nothing: arity against the stored relation, or within the batch.
    for facts, code in [
        (
            [{"relation": "next", "args": ["p7", "p8"]}, {"relation": "next", "args": ["p1"]}],
            "arity_mismatch",
        ),
        ([{"relation": "new", "args": ["a", "b"]}, {"relation": "new", "args": ["a"]}], "arity_mismatch"),
        (chain(9), "batch_too_large"),
        ([{"relation": "next", "args": []}], "validation_error"),
        ([{"relation": "next", "args": ["a"] * 17}], "validation_error"),
        ([{"relation": "next", "args": ["a\nb", "c"]}], "validation_error"),
        ([{"relation": "next", "args": ["a", 3]}], "validation_error"),
        ([{"relation": "next", "args": ["a", "b"], "weight": 2}], "validation_error"),
        ([], "validation_error"),
    ]:
        r = client.post("/v1/memories/kb/facts", json={"facts": facts})
        assert r.status_code == 422 and error_code(r) == code, (facts, r.text)
    assert _details(client, "kb")["count"] == 7
    r = client.post("/v1/memories/kb/facts", json={"facts": [{"relation": "next", "args": ["p1"]}]})
    assert "'next' takes 2 arguments" in r.json()["error"]["message"]
    # Pages in storage order; one fact by id; delete.
    seen, cursor = [], None
    while True:
        page = client.get("/v1/memories/kb/facts", params={"cursor": cursor} if cursor else {}).json()
        seen += page["facts"]
        if not (cursor := page["next_cursor"]):
            break
    knows = again["ids"][2]
    assert [f["id"] for f in seen] == [1, 2, 3, 4, 5, 6, knows] and knows > 6
    assert seen[6] == {"id": knows, "relation": "knows", "args": ["p1", "p9", "p3"]}
    assert client.get("/v1/memories/kb/facts/3").json() == {"id": 3, "relation": "next", "args": ["p2", "p3"]}
    assert client.delete("/v1/memories/kb/facts/3").status_code == 204
    for method in ("get", "delete"):
        r = getattr(client, method)("/v1/memories/kb/facts/3")
        assert r.status_code == 404 and error_code(r) == "fact_not_found"
    assert _details(client, "kb")["count"] == 6
    ids = _store(client, "kb", chain(3))["ids"]
    assert ids[:2] == [1, 2] and ids[2] > knows  # stored again: a new id, last in storage order
    assert client.get(f"/v1/memories/kb/facts/{ids[2]}").json()["args"] == ["p2", "p3"]
    for params, code in [({"limit": 6}, "limit_too_large"), ({"cursor": "!!"}, "invalid_cursor")]:
        assert error_code(client.get("/v1/memories/kb/facts", params=params)) == code
    assert error_code(client.get("/v1/memories/kb/facts/0")) == "validation_error"
    # Deleting the memory deletes its facts: one of the same name starts empty.
    assert client.delete("/v1/memories/kb").status_code == 204
    _create(client, "kb")
    assert client.get("/v1/memories/kb/facts").json() == {"facts": [], "next_cursor": None}
    assert error_code(client.get(f"/v1/memories/kb/facts/{knows}")) == "fact_not_found"


def test_endpoints_of_the_other_kind_say_so(client):
    _create(client, "kb")
    _store(client, "kb", chain(2))
    assert (
        client.post("/v1/memories", json={"name": "vec", "kind": "hopfield", "shape": [2]}).status_code == 201
    )
    for method, path, body in [
        ("post", "/v1/memories/kb/patterns", {"patterns": [{"vector": [1, 2]}]}),
        ("get", "/v1/memories/kb/patterns", None),
        ("get", "/v1/memories/kb/patterns/x", None),
        ("delete", "/v1/memories/kb/patterns/x", None),
        ("post", "/v1/memories/kb/retrieve", {"vector": [1, 2]}),
        ("post", "/v1/memories/kb/complete", {"image": "aGk="}),
        ("post", "/v1/memories/kb/lookup", {"text": "hi"}),
        ("post", "/v1/memories/vec/facts", {"facts": chain(1)}),
        ("get", "/v1/memories/vec/facts", None),
        ("get", "/v1/memories/vec/facts/1", None),
        ("delete", "/v1/memories/vec/facts/1", None),
        ("post", "/v1/memories/vec/query", {"relation": "next", "args": ["p0", None]}),
        ("get", "/v1/memories/vec/vocabulary", None),
    ]:
        r = client.request(method, path, json=body)
        assert r.status_code == 422 and error_code(r) == "wrong_kind", (method, path, r.text)
        assert ("facts" if "/kb/" in path else "patterns") in r.json()["error"]["message"]
    for preset, kind in [("europe", "hopfield"), ("fashion", "relational")]:
        r = client.post("/v1/demo", json={"preset": preset, "kind": kind})
        assert r.status_code == 422 and error_code(r) == "wrong_kind", r.text
    assert _details(client, "kb")["count"] == 2


def _running(client: TestClient, job_id: str, epoch: int, timeout: float = 60.0) -> dict:
    """Poll a job until it has reported ``epoch`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["epoch"] >= epoch:
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not reach epoch {epoch}: {job}")


def test_training_reports_progress_and_a_cancel_changes_nothing(client):
    _create(client, "kb")
    assert error_code(client.post("/v1/memories/kb/train", json={})) == "memory_empty"
    _store(client, "kb", chain(12))
    r = client.post("/v1/memories/kb/query", json={"relation": "next", "args": ["p0", None]})
    assert r.status_code == 409 and error_code(r) == "not_trained"
    for trained in (False, True):
        before = _query(client, "kb", "next", ["p3", None], k=13) if trained else None
        job = _train(client, "kb", epochs=100_000)
        assert job["patterns"] == 12 and _details(client, "kb")["state"] == "training"
        assert error_code(client.post("/v1/memories/kb/train", json={})) == "job_running"
        running = _running(client, job["id"], 3)
        assert running["status"] == "running" and running["epochs"] == 100_000
        assert running["progress"] == pytest.approx(running["epoch"] / 100_000)
        assert math.isfinite(running["energy"]) and running["eta_seconds"] > 0
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 200
        done = wait_job(client, job["id"])
        assert done["status"] == "cancelled" and done["stop_reason"] == "cancelled"
        state = _details(client, "kb")
        if not trained:  # still no model
            assert state["state"] == "untrained" and state["trained_count"] == 0
            assert wait_job(client, _train(client, "kb")["id"])["status"] == "succeeded"
        else:  # the last trained model answers as before
            assert state["state"] == "ready" and state["trained_count"] == 12
            assert _query(client, "kb", "next", ["p3", None], k=13) == before


def test_changes_during_training_are_replayed_and_survive_a_restart(make_client, tmp_path):
    data = tmp_path / "kb-data"
    client = make_client(data_dir=data)
    _create(client, "kb", {**SMALL, "epochs": 100_000})
    ids = _store(client, "kb", chain(10))["ids"]
    job = _train(client, "kb", epochs=1500)
    _running(client, job["id"], 1)
    _store(
        client,
        "kb",
        [{"relation": "next", "args": ["p10", "q0"]}, {"relation": "likes", "args": ["q0", "p0"]}],
    )
    assert client.delete(f"/v1/memories/kb/facts/{ids[0]}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"  # the changes came meanwhile
    assert wait_job(client, job["id"])["status"] == "succeeded"
    details = _details(client, "kb")
    assert details["state"] == "stale" and details["count"] == 11 and details["trained_count"] == 10
    after_p10 = _query(client, "kb", "next", ["p10", None], k=1000)
    assert [c for c in after_p10 if c["known"]] == [c for c in after_p10 if c["entity"] == "q0"]
    assert not any(c["known"] for c in _query(client, "kb", "next", ["p0", None], k=1000))  # deleted
    answers = {
        args: _query(client, "kb", "next", list(args), k=1000) for args in (("p4", None), (None, "q0"))
    }

    make_client.stop(client)  # a restart: the checkpoint, reconciled with the stored facts
    client = make_client(data_dir=data)
    details = _details(client, "kb")
    assert details["state"] == "stale" and details["count"] == 11 and details["trained_count"] == 10
    assert {args: _query(client, "kb", "next", list(args), k=1000) for args in answers} == answers
    assert len(list((data / "checkpoints").rglob("*.safetensors"))) == 1
    assert wait_job(client, _train(client, "kb", epochs=5)["id"])["status"] == "succeeded"
    assert _details(client, "kb")["state"] == "ready" and _details(client, "kb")["trained_count"] == 11
    make_client.stop(client)
    client = make_client(data_dir=data)
    assert _details(client, "kb")["state"] == "ready"


def test_the_read_key_may_query_but_not_store(make_client):
    client = make_client(api_key="full", read_api_key="read")
    full, read = {"Authorization": "Bearer full"}, {"Authorization": "Bearer read"}
    r = client.post("/v1/memories", json={"name": "kb", "kind": "relational", "config": SMALL}, headers=full)
    assert r.status_code == 201
    body = {"facts": chain(3)}
    assert client.post("/v1/memories/kb/facts", json=body, headers=read).status_code == 403
    assert client.post("/v1/memories/kb/facts", json=body).status_code == 401
    assert client.post("/v1/memories/kb/facts", json=body, headers=full).status_code == 201
    assert client.delete("/v1/memories/kb/facts/1", headers=read).status_code == 403
    assert client.get("/v1/memories/kb/facts", headers=read).status_code == 200
    assert client.get("/v1/memories/kb/vocabulary", headers=read).status_code == 200
    query = {"relation": "next", "args": ["p0", None]}
    assert error_code(client.post("/v1/memories/kb/query", json=query, headers=read)) == "not_trained"


@pytest.mark.skipif(not pykeen_available(), reason="Nations is read from PyKEEN's wheel (the test extra)")
def test_the_nations_preset_loads_from_pykeens_wheel(client):
    r = client.post("/v1/demo", json={"preset": "nations"})
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["job"]["id"])["status"] == "succeeded"
    assert _details(client, "demo-nations")["count"] == 1592
    vocabulary = client.get("/v1/memories/demo-nations/vocabulary").json()
    assert vocabulary["entity_count"] == 14 and len(vocabulary["relations"]) == 55
    assert {"name": "exports3", "arity": 2} in vocabulary["relations"]
