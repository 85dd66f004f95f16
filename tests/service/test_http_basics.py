"""HTTP basics a user hits first: HEAD on GET endpoints, the Allow header of a 405, offline API
docs, and a one-line error at start for bad settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from app.settings import Settings, settings_error


def _get_paths(client) -> list[str]:
    """Every GET path of the OpenAPI document, with {name} and {id} filled in, plus the page's."""
    doc = client.get("/openapi.json").json()
    paths = [p for p, ops in doc["paths"].items() if "get" in ops]
    assert len(paths) >= 8, paths
    filled = [
        p.replace("{name}", "vectors").replace("{id}", "a").replace("{job_id}", "0123456789abcdef")
        for p in paths
    ]
    return [*filled, "/", "/static/demo.css", "/docs", "/redoc", "/openapi.json"]


def test_head_answers_like_get_without_a_body(client) -> None:
    assert (
        client.post("/v1/memories", json={"name": "vectors", "kind": "hopfield", "shape": [2]}).status_code
        == 201
    )
    r = client.post("/v1/memories/vectors/patterns", json={"patterns": [{"id": "a", "vector": [1, 0]}]})
    assert r.status_code == 201
    for path in _get_paths(client):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if "content-length" in get.headers and path != "/metrics":  # metrics change between calls
            assert head.headers["content-length"] == get.headers["content-length"], path
    statuses = {
        p: client.head(p).status_code
        for p in ("/v1/memories/vectors", "/v1/jobs/0123456789abcdef", "/nowhere")
    }
    assert statuses == {"/v1/memories/vectors": 200, "/v1/jobs/0123456789abcdef": 404, "/nowhere": 404}
    metrics = client.get("/metrics").text
    assert 'ams_requests_total{method="HEAD",route="/v1/memories/{name}",status="200"}' in metrics


def test_405_names_every_allowed_method(client) -> None:
    cases = {
        "/": "GET, HEAD",
        "/v1/memories": "GET, HEAD, POST",
        "/v1/memories/x/patterns/y": "DELETE, GET, HEAD",
        "/v1/memories/x/retrieve": "POST",
        "/docs": "GET, HEAD",
    }
    for path, allow in cases.items():
        r = client.put(path)
        assert r.status_code == 405, path
        assert r.headers["allow"] == allow, path
        assert r.json()["error"]["code"] == "method_not_allowed"
        assert allow in r.json()["error"]["message"]


def test_api_docs_are_served_by_the_service(client) -> None:
    """/docs and /redoc load their scripts from this origin (fastapi-offline's bundle), none from a CDN."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources, page
        for src in sources:
            assert src.startswith("/"), (page, src)
            asset = client.get(src)
            assert asset.status_code == 200, src
            assert len(asset.content) > 500, src


def test_settings_errors_are_one_line_naming_the_variable() -> None:
    with pytest.raises(ValueError) as info:
        Settings(read_api_key="r")
    assert (
        settings_error(info.value) == "AMS_READ_API_KEY needs AMS_API_KEY too (else writes would need no key)"
    )
    with pytest.raises(ValueError) as info:
        Settings(port=70000, max_k=0, api_key="k", read_api_key="k")
    line = settings_error(info.value)
    assert "AMS_PORT: " in line and "AMS_MAX_K: " in line and "\n" not in line


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [("AMS_READ_API_KEY", "secret", "AMS_READ_API_KEY"), ("AMS_PORT", "not-a-port", "AMS_PORT")],
)
def test_server_start_with_a_bad_setting_prints_one_line(tmp_path, variable, value, named) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
    env.update({"AMS_DATA_DIR": str(tmp_path), variable: value})
    for argv in (
        [sys.executable, "-m", "app"],
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"],
    ):
        done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("ams: invalid settings: ") and named in lines[0]
        assert "secret" not in lines[0]
