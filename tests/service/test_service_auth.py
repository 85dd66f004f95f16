"""API keys: AMS_API_KEY for everything, AMS_READ_API_KEY for reads and recalls only."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from service_helpers import error_code

from app.settings import Settings

FULL, READ = "full-key-0123456789", "read-key-9876543210"


@pytest.fixture
def c(make_client):
    return make_client(api_key=FULL, read_api_key=READ)


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_keys_gate_v1(c):
    doc = c.get("/openapi.json").json()  # the document says how to authenticate
    assert set(doc["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    assert doc["paths"]["/v1/memories"]["post"]["security"]
    # Open without a key: health, readiness, metrics.
    for path in ("/livez", "/readyz", "/metrics"):
        assert c.get(path).status_code == 200
    # No key, or a wrong one: 401 with the error shape and a WWW-Authenticate header.
    for headers in ({}, _bearer("wrong"), {"X-API-Key": "wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        r = c.get("/v1/memories", headers=headers)
        assert r.status_code == 401 and error_code(r) == "unauthorized", headers
        assert r.headers["www-authenticate"] == "Bearer"
    r = c.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [3]})
    assert r.status_code == 401
    assert c.get("/v1/memories").status_code == 401  # nothing created

    # The full key writes (Bearer or X-API-Key).
    r = c.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [3]}, headers=_bearer(FULL))
    assert r.status_code == 201
    r = c.post(
        "/v1/memories/m/patterns",
        json={"patterns": [{"id": "a", "vector": [1, 0, 0]}]},
        headers={"X-API-Key": FULL},
    )
    assert r.status_code == 201

    # The read key reads and recalls ...
    rk = _bearer(READ)
    assert c.get("/v1/info", headers=rk).json()["auth"] is True
    assert c.get("/v1/memories", headers=rk).status_code == 200
    assert c.get("/v1/memories/m", headers=rk).json()["count"] == 1
    assert c.get("/v1/memories/m/patterns", headers=rk).status_code == 200
    assert c.get("/v1/memories/m/patterns/a", headers=rk).status_code == 200
    r = c.post("/v1/memories/m/retrieve", json={"vector": [0.9, 0.1, 0]}, headers=rk)
    assert r.status_code == 200 and r.json()["matches"][0]["id"] == "a"
    assert c.get("/v1/jobs", headers=rk).status_code == 200
    # ... and may not write: 403, nothing changed.
    for method, path, kwargs in [
        ("post", "/v1/memories", {"json": {"name": "n", "kind": "hopfield", "shape": [3]}}),
        ("delete", "/v1/memories/m", {}),
        ("post", "/v1/memories/m/patterns", {"json": {"patterns": [{"vector": [1, 1, 1]}]}}),
        ("delete", "/v1/memories/m/patterns/a", {}),
        ("post", "/v1/memories/m/train", {"json": {}}),
        ("delete", "/v1/jobs/abc", {}),
    ]:
        r = getattr(c, method)(path, headers=rk, **kwargs)
        assert r.status_code == 403 and error_code(r) == "forbidden", (method, path, r.text)
    assert c.get("/v1/memories/m", headers=rk).json()["count"] == 1
    assert [m["name"] for m in c.get("/v1/memories", headers=rk).json()["memories"]] == ["m"]


def test_a_malformed_authorization_header_is_named(c, client):
    """The bare key, another scheme or an empty Bearer: the 401 says what the header lacks
    (not only "a key is needed"), and never echoes the key."""
    cases = {
        FULL: "its scheme is not Bearer",
        "Basic Zm9vOmJhcg==": "its scheme is not Bearer",
        "Bearer ": "no key after 'Bearer'",
    }
    for value, named in cases.items():
        r = c.get("/v1/memories", headers={"Authorization": value})
        message = r.json()["error"]["message"]
        assert r.status_code == 401 and named in message and FULL not in message, (value, message)
    r = c.get("/v1/memories", headers={"Authorization": FULL, "X-API-Key": FULL})
    assert r.status_code == 200  # the X-API-Key header still counts
    assert client.get("/v1/memories", headers={"Authorization": "Basic x"}).status_code == 200  # no keys set


def test_no_keys_means_open(client):
    assert client.get("/v1/info").json()["auth"] is False
    assert "securitySchemes" not in client.get("/openapi.json").json()["components"]
    assert (
        client.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [3]}).status_code == 201
    )


def test_read_key_alone_is_refused():
    with pytest.raises(ValidationError, match="AMS_API_KEY"):
        Settings(read_api_key="r")
    with pytest.raises(ValidationError, match="differ"):
        Settings(api_key="same", read_api_key="same")
