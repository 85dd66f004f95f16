"""The hardened API through the app (TestClient): the key checked before the body, route body
limits, rate limits, the limits in /v1/info, results that are not finite, cursors past 2^63,
epochs over the cap, and the config sweep: no config is accepted at create that fails later."""

from __future__ import annotations

import base64

import pytest
from service_helpers import wait_job

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = {"api_key": "full-key", "read_api_key": "read-key"}
FULL, READ = {"Authorization": "Bearer full-key"}, {"X-API-Key": "read-key"}


def code(r) -> str:
    return r.json()["error"]["code"]


def test_the_key_is_checked_before_the_body(make_client):
    c = make_client(**KEYS)
    json_type = {"Content-Type": "application/json"}
    r = c.post("/v1/memories", content=b"{", headers=json_type)
    assert r.status_code == 401 and r.headers["connection"] == "close"  # the body: never read
    assert c.post("/v1/memories", content=b"{", headers=json_type | READ).status_code == 403
    assert c.post("/v1/memories", content=b"{", headers=json_type | FULL).status_code == 400
    assert c.get("/v1/no-such-thing").status_code == 401  # an unknown /v1 path needs a key too
    assert c.get("/v1/no-such-thing", headers=READ).status_code == 404
    for path in ("/livez", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/"):
        assert c.get(path).status_code == 200, path


def test_small_json_endpoints_have_a_small_body_limit(make_client):
    c = make_client()
    big = {"name": "x", "kind": "hopfield", "shape": [4], "config": {"k": 5, "pad": "x" * 70_000}}
    r = c.post("/v1/memories", json=big)
    assert r.status_code == 413 and "this endpoint's limit" in r.json()["error"]["message"]
    assert c.post("/v1/memories", json={"name": "v", "kind": "hopfield", "shape": [4]}).status_code == 201
    cue = {"vector": [0.5] * 4, "pad": "x" * 300_000}  # a recall of a D = 4 memory: ~100 KiB at most
    r = c.post("/v1/memories/v/retrieve", json=cue)
    assert r.status_code == 413 and "D = 4" in r.json()["error"]["message"]


def test_an_image_memorys_cue_is_counted_against_d_as_it_arrives(make_client):
    """An image memory's cue may be a large picture, so its size is not bounded by D; its values
    are: a JSON body of more commas than its cue can hold is refused with 422 too_many_values
    (by the body limiter, as its chunks arrive), a picture of many bytes and no commas is not."""
    c = make_client()
    assert (
        c.post("/v1/memories", json={"name": "img", "kind": "hopfield", "shape": [1, 8, 8]}).status_code
        == 201
    )
    vector = b'{"vector": [' + b"0," * 200_000 + b"0]}"
    r = c.post("/v1/memories/img/retrieve", content=vector, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and code(r) == "too_many_values", r.text
    assert r.json()["error"]["details"]["limit"] < 10_000 and "D = 64" in r.json()["error"]["message"]
    assert r.headers["connection"] == "close"
    picture = {"image": "A" * 3_000_000}  # 3 MB of base64 and no comma: read whole, then judged a bad picture
    r = c.post("/v1/memories/img/retrieve", json=picture)
    assert r.status_code in (400, 422) and code(r) != "too_many_values", r.text
    assert c.post("/v1/memories/img/patterns", json={"patterns": [{"vector": [0.5] * 64}]}).status_code == 201
    r = c.post("/v1/memories/img/retrieve", json={"vector": [0.5] * 64})  # a cue of D values: answered
    assert r.status_code == 200, r.text


def test_rate_limit_answers_429_with_retry_after(make_client):
    c = make_client(rate_limit=2.0, rate_burst=3, **KEYS)
    answers = [c.get("/v1/memories", headers=READ).status_code for _ in range(5)]
    assert answers[:3] == [200, 200, 200] and 429 in answers[3:]
    r = c.get("/v1/memories", headers=READ)
    assert r.status_code == 429 and code(r) == "rate_limited" and r.headers["retry-after"] == "1"
    assert c.get("/v1/memories", headers=FULL).status_code == 200  # another key, another bucket
    assert all(c.get("/livez").status_code == 200 for _ in range(10))  # health is never limited


def test_info_states_the_limits_and_the_budget(make_client):
    limits = make_client(memory_budget="512MiB").get("/v1/info").json()["limits"]
    assert limits["memory_budget_bytes"] == 512 << 20 and 0 < limits["memory_free_bytes"] <= 512 << 20
    assert (limits["max_epochs"], limits["max_solver_steps"], limits["max_text_chars"]) == (
        100_000,
        10_000,
        2000,
    )


def test_odd_numbers_get_a_4xx(make_client):
    c = make_client(max_epochs=50)
    c.post("/v1/memories", json={"name": "v", "kind": "hopfield", "shape": [4]})
    c.post("/v1/memories/v/patterns", json={"patterns": [{"vector": [0.1, 0.2, 0.3, 0.4]}]})
    r = c.post("/v1/memories/v/retrieve", json={"vector": [1e30, 1e30, 1e30, 1e30]})  # squares overflow
    assert r.status_code == 422 and code(r) == "non_finite_result"
    assert c.post("/v1/memories/v/retrieve", json={"vector": [0.1, 0.2, 0.3, 0.4]}).status_code == 200
    past = base64.urlsafe_b64encode(str(2**63).encode()).decode().rstrip("=")
    assert code(c.get("/v1/memories/v/patterns", params={"cursor": past})) == "invalid_cursor"
    created = c.post(
        "/v1/memories", json={"name": "p", "kind": "pc", "shape": [4], "config": {"sizes": [2, 4]}}
    )
    assert code(created) == "invalid_config" and "AMS_MAX_EPOCHS" in created.json()["error"]["message"]
    c.post(
        "/v1/memories",
        json={"name": "p", "kind": "pc", "shape": [4], "config": {"sizes": [2, 4], "epochs": 5}},
    )
    c.post("/v1/memories/p/patterns", json={"patterns": [{"vector": [0.1, 0.2, 0.3, 0.4]}]})
    assert code(c.post("/v1/memories/p/train", json={"epochs": 51})) == "epochs_too_large"


# --- the config sweep ------------------------------------------------------------------------------
_ODD = {
    "int": [0, -1, 2**31 - 1, 2**40, 1.5, True, "3", None],
    "float": [0, -1.0, 1e300, -1e300, 1e-300, True, None],
}
_STRINGS = ["nope", "", 3]
# Small models and few steps (each config below is one of these with one key changed).
_SMALL = {
    "hopfield": {},
    "pc": {"sizes": [4, 4], "epochs": 1, "train_steps": 5, "recall_steps": 10, "complete_steps": 10},
    "pcgraph": {"hidden": 4, "epochs": 1, "train_steps": 5, "recall_steps": 10},
}


def _odd_values(default):
    if isinstance(default, bool):
        return [1, "true", None]
    if isinstance(default, int):
        return _ODD["int"]
    if isinstance(default, float):
        return _ODD["float"]
    if isinstance(default, str):
        return _STRINGS
    if isinstance(default, list):
        return [[], [0], [2**40, 4], [-1, 4], "x"]
    return [1, "x", [1.0, -1.0], [0.0]]  # None (optional) fields


@pytest.mark.parametrize("kind", ["hopfield", "pc", "pcgraph"])
def test_no_config_is_accepted_that_fails_later(make_client, kind):
    """Every config key of the kind with odd values: refused at create (422), or it stores,
    trains (1 epoch) and recalls with no 5xx and no failed job."""
    c = make_client(max_solver_steps=30, memory_budget="1GiB")
    defaults = c.get("/v1/info").json()["default_configs"][kind]
    vector = {"patterns": [{"vector": [i / 10, 0.5, 1 - i / 10, 0.2]} for i in range(4)]}
    accepted = refused = 0
    for key, default in defaults.items():
        if key in ("epochs", "sizes"):
            continue  # capped and budgeted: tested in test_hardening_parts.py and test_attacks.py
        for value in _odd_values(default):
            config = {**_SMALL[kind], key: value}
            r = c.post("/v1/memories", json={"name": "m", "kind": kind, "shape": [4], "config": config})
            assert r.status_code in (201, 422), (key, value, r.text)
            if r.status_code == 422:
                refused += 1
                continue
            accepted += 1
            assert c.post("/v1/memories/m/patterns", json=vector).status_code == 201
            if kind != "hopfield":
                job = wait_job(c, c.post("/v1/memories/m/train", json={}).json()["id"])
                assert job["status"] == "succeeded", (key, value, job)
            recall = c.post("/v1/memories/m/retrieve", json={"vector": [0.1, 0.5, 0.9, 0.2]})
            assert recall.status_code in (200, 422), (key, value, recall.text)  # 422: a non-finite result
            assert c.delete("/v1/memories/m").status_code == 204
    assert accepted and refused


def test_a_relational_query_over_the_budget_is_refused_naming_the_limit(make_client):
    """A query scores every entity and builds k answers: its working set (4001 entities, all of
    them asked for: ~7 MiB) is held against the budget while it runs; one that could never fit
    (a 6 MiB budget, the model holding ~1 MiB) gets 422 memory_budget_exceeded naming the
    limit, and a query for 10 candidates of the same memory is answered."""
    c = make_client(memory_budget="6MiB")
    config = {"dim": 8, "negatives": 4, "batch_size": 64, "epochs": 1}
    assert (
        c.post("/v1/memories", json={"name": "kb", "kind": "relational", "config": config}).status_code == 201
    )
    for start in range(0, 4000, 1000):
        chain = [{"relation": "next", "args": [f"p{i}", f"p{i + 1}"]} for i in range(start, start + 1000)]
        assert c.post("/v1/memories/kb/facts", json={"facts": chain}).status_code == 201
    assert wait_job(c, c.post("/v1/memories/kb/train", json={}).json()["id"])["status"] == "succeeded"
    ask = {"relation": "next", "args": ["p0", None]}
    assert len(c.post("/v1/memories/kb/query", json=ask | {"k": 10}).json()["candidates"]) == 10
    r = c.post("/v1/memories/kb/query", json=ask | {"k": 4001})
    assert r.status_code == 422 and code(r) == "memory_budget_exceeded", r.text
    error = r.json()["error"]
    assert error["details"]["limit_bytes"] == 6 << 20 and "AMS_MEMORY_BUDGET" in error["message"]
    assert "a query of memory 'kb' for 4001 candidates" in error["message"]
    assert error["details"]["needed_bytes"] > error["details"]["free_bytes"]


def test_no_relational_config_is_accepted_that_fails_later(make_client):
    """The same sweep for a relational memory (no shape; facts instead of patterns)."""
    c = make_client(memory_budget="1GiB")
    defaults = c.get("/v1/info").json()["default_configs"]["relational"]
    facts = {"facts": [{"relation": "next", "args": [f"p{i}", f"p{i + 1}"]} for i in range(4)]}
    small = {"dim": 4, "negatives": 2, "batch_size": 4, "epochs": 1}
    accepted = refused = 0
    for key, default in defaults.items():
        if key in ("epochs", "rules"):
            continue  # capped by AMS_MAX_EPOCHS; rules: test_relational_api.py
        for value in _odd_values(default):
            body = {"name": "kb", "kind": "relational", "config": {**small, key: value}}
            r = c.post("/v1/memories", json=body)
            assert r.status_code in (201, 422), (key, value, r.text)
            if r.status_code == 422:
                refused += 1
                continue
            accepted += 1
            assert c.post("/v1/memories/kb/facts", json=facts).status_code == 201
            job = wait_job(c, c.post("/v1/memories/kb/train", json={}).json()["id"])
            assert job["status"] == "succeeded", (key, value, job)
            query = c.post("/v1/memories/kb/query", json={"relation": "next", "args": ["p0", None]})
            assert query.status_code == 200, (key, value, query.text)
            assert c.delete("/v1/memories/kb").status_code == 204
    assert accepted and refused


def test_a_damaged_relational_checkpoint_fails_its_memory_alone(make_client, tmp_path):
    """NaN weights in a relational memory's checkpoint: after a restart that memory is failed
    with the reason (queries 409 memory_failed, facts still listed), the others serve, and a
    training job repairs it. A relational job is cancelled within a batch, and a delete of a
    training memory returns at once."""
    data = tmp_path / "data"
    c = make_client(data_dir=data)
    facts = {"facts": [{"relation": "next", "args": [f"p{i}", f"p{i + 1}"]} for i in range(6)]}
    for name in ("kb", "ok"):
        assert (
            c.post(
                "/v1/memories", json={"name": name, "kind": "relational", "config": {"dim": 4}}
            ).status_code
            == 201
        )
        assert c.post(f"/v1/memories/{name}/facts", json=facts).status_code == 201
        assert (
            wait_job(c, c.post(f"/v1/memories/{name}/train", json={"epochs": 2}).json()["id"])["status"]
            == "succeeded"
        )
    long = c.post("/v1/memories/ok/train", json={"epochs": 100_000}).json()["id"]
    cancel = c.delete(f"/v1/jobs/{long}")
    assert cancel.status_code in (200, 202, 204)
    assert wait_job(c, long, timeout=10)["status"] == "cancelled"
    kb_id = c.get("/v1/memories/kb").json()
    make_client.stop(c)
    (path,) = [p for p in (data / "checkpoints").rglob("relational-*.safetensors") if _owner(data, p) == "kb"]
    _poison(path)

    c = make_client(data_dir=data)
    details = c.get("/v1/memories/kb").json()
    assert details["state"] == "failed" and "damaged" in details["error"], (details, kb_id)
    r = c.post("/v1/memories/kb/query", json={"relation": "next", "args": ["p0", None]})
    assert r.status_code == 409 and code(r) == "memory_failed"
    assert len(c.get("/v1/memories/kb/facts").json()["facts"]) == 6
    assert c.post("/v1/memories/ok/query", json={"relation": "next", "args": ["p0", None]}).status_code == 200
    assert (
        wait_job(c, c.post("/v1/memories/kb/train", json={"epochs": 2}).json()["id"])["status"] == "succeeded"
    )
    assert c.get("/v1/memories/kb").json()["state"] == "ready"
    assert c.post("/v1/memories/kb/query", json={"relation": "next", "args": ["p0", None]}).status_code == 200
    c.post("/v1/memories/ok/train", json={"epochs": 100_000})
    assert c.delete("/v1/memories/ok").status_code == 204
    assert c.post("/v1/memories", json={"name": "ok", "kind": "relational"}).status_code == 201


def _owner(data, path) -> str:
    import sqlite3

    db = sqlite3.connect(data / "ams.sqlite3")
    try:
        return db.execute("SELECT name FROM memories WHERE id = ?", (int(path.parent.name),)).fetchone()[0]
    finally:
        db.close()


def _poison(path) -> None:
    """A NaN for the first weight, the checksum taken out (as in an older checkpoint)."""
    import json
    import struct

    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"].pop("sha256")
    text = json.dumps(header).encode()
    start = min(
        t["data_offsets"][0] for k, t in header.items() if k != "__metadata__" and t["dtype"] == "F32"
    )
    data = bytearray(len(text).to_bytes(8, "little") + text + data[8 + size :])
    data[8 + len(text) + start : 8 + len(text) + start + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(data))
