"""The recall fast path (app/fastpath.py) answers exactly what FastAPI's routes answer.

Two services over identical data, one with ``AMS_FAST_RECALL`` on (the default) and one
with it off, get the same requests: good ones, bad ones and unauthorised ones on
retrieve, complete and lookup. Every answer (status, body, the headers that carry
meaning) and the request metrics must be the same, and on the first service the fast
path must have served every well-named POST itself.
"""

from __future__ import annotations

import base64
import json

import pytest
import torch
from fastapi.testclient import TestClient
from service_helpers import mask_png, png, png_b64, rgba_png, wait_ready

from app.fastpath import RecallFastPath
from app.main import create_app
from app.settings import Settings
from memory_core.masks import bottom_half_unknown

FULL, READ = "full-key-0123456789", "read-key-9876543210"
CAPTIONS = ["a red shoe on grass", "a blue bag on a table", "a green shirt on a chair"]


def _setup(client, images: torch.Tensor) -> None:
    """Identical memories on each service: 20 pictures; 3 captioned vectors; one empty."""
    key = {"Authorization": f"Bearer {FULL}"}
    assert (
        client.post(
            "/v1/memories", headers=key, json={"name": "img", "kind": "hopfield", "shape": [1, 28, 28]}
        ).status_code
        == 201
    )
    r = client.post(
        "/v1/memories/img/patterns",
        headers=key,
        json={"patterns": [{"id": f"f{i}", "image": png_b64(images[i])} for i in range(20)]},
    )
    assert r.status_code == 201, r.json()
    assert (
        client.post(
            "/v1/memories", headers=key, json={"name": "cap", "kind": "hopfield", "shape": [4], "text": True}
        ).status_code
        == 201
    )
    r = client.post(
        "/v1/memories/cap/patterns",
        headers=key,
        json={
            "patterns": [
                {"id": f"c{i}", "vector": torch.eye(4)[i].tolist(), "text": t} for i, t in enumerate(CAPTIONS)
            ]
        },
    )
    assert r.status_code == 201, r.json()
    assert (
        client.post(
            "/v1/memories", headers=key, json={"name": "empty", "kind": "hopfield", "shape": [4]}
        ).status_code
        == 201
    )


def _requests(images: torch.Tensor) -> list[tuple[str, str, dict]]:
    """(method, path, httpx keyword arguments) of every request compared."""
    read, full = {"Authorization": f"Bearer {READ}"}, {"X-API-Key": FULL}
    noisy = (
        images[3] + 0.2 * torch.randn(images[3].shape, generator=torch.Generator().manual_seed(0))
    ).clamp(0, 1)
    known = ~bottom_half_unknown(28, 28)  # (28, 28): top half known
    partial = images[5] * known
    upload = {"image": ("p.png", png(partial), "image/png"), "mask": ("m.png", mask_png(known), "image/png")}
    return [
        # retrieve
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": read, "json": {"vector": noisy.flatten().tolist(), "k": 2}},
        ),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": full, "json": {"image": png_b64(noisy), "include_vector": True}},
        ),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": read, "content": b"{not json", "headers_extra": {"Content-Type": "application/json"}},
        ),
        ("POST", "/v1/memories/img/retrieve", {"headers": read, "json": {"vector": [0.5] * 10}}),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": read, "json": {"vector": [0.5] * 784, "k": 10_000}},
        ),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": read, "content": b"0.5", "headers_extra": {"Content-Type": "text/plain"}},
        ),
        (  # multipart, as complete takes it: the same handler answers it on both
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": read, "files": upload, "data": {"k": "2", "include_vector": "true"}},
        ),
        ("POST", "/v1/memories/cap/retrieve", {"headers": read, "files": {"image": ("p.png", png(partial))}}),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": read, "files": {"mask": ("m.png", mask_png(known))}},
        ),
        ("POST", "/v1/memories/nothing/retrieve", {"headers": read, "json": {"vector": [0.5] * 784}}),
        ("POST", "/v1/memories/bad%20name!/retrieve", {"headers": read, "json": {"vector": [0.5] * 784}}),
        ("POST", "/v1/memories/empty/retrieve", {"headers": read, "json": {"vector": [0.5] * 4}}),
        ("GET", "/v1/memories/img/retrieve", {"headers": read}),
        # the API key: none, wrong, the read key as X-API-Key, a Basic scheme
        ("POST", "/v1/memories/img/retrieve", {"json": {"vector": [0.5] * 784}}),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": {"Authorization": "Bearer wrong"}, "json": {"vector": [0.5] * 784}},
        ),
        (
            "POST",
            "/v1/memories/img/retrieve",
            {"headers": {"X-API-Key": READ}, "json": {"vector": [0.5] * 784}},
        ),
        (
            "POST",
            "/v1/memories/img/complete",
            {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}, "json": {"image": png_b64(partial)}},
        ),
        # complete: JSON (RGBA alpha), multipart (mask picture), raw PNG answer, errors
        (
            "POST",
            "/v1/memories/img/complete",
            {"headers": read, "json": {"image": base64.b64encode(rgba_png(partial, known)).decode(), "k": 2}},
        ),
        (
            "POST",
            "/v1/memories/img/complete",
            {"headers": read, "files": upload},
        ),
        (
            "POST",
            "/v1/memories/img/complete",
            {
                "headers": {**read, "Accept": "image/png"},
                "json": {"image": base64.b64encode(rgba_png(partial, known)).decode()},
            },
        ),
        ("POST", "/v1/memories/img/complete", {"headers": read, "json": {"image": png_b64(partial)}}),
        ("POST", "/v1/memories/cap/complete", {"headers": read, "json": {"image": png_b64(partial)}}),
        # lookup: caption -> pattern, pattern -> caption, not a text memory, blank text
        ("POST", "/v1/memories/cap/lookup", {"headers": read, "json": {"text": "a shoe", "k": 2}}),
        ("POST", "/v1/memories/cap/lookup", {"headers": read, "json": {"vector": [0.1, 0.9, 0.0, 0.1]}}),
        ("POST", "/v1/memories/img/lookup", {"headers": read, "json": {"text": "a shoe"}}),
        ("POST", "/v1/memories/cap/lookup", {"headers": read, "json": {"text": "   "}}),
    ]


def _send(client, method: str, path: str, kwargs: dict):
    kwargs = dict(kwargs)
    headers = {**kwargs.pop("headers", {}), **kwargs.pop("headers_extra", {})}
    return client.request(method, path, headers=headers, **kwargs)


def _meaning(response) -> tuple:
    """What a caller can tell apart: status, media type, body, the meaningful headers."""
    ctype = response.headers.get("content-type", "")
    body = response.json() if ctype.startswith("application/json") else response.content
    headers = {
        k: v
        for k, v in response.headers.items()
        if k in ("www-authenticate", "allow") or k.startswith("x-ams-")
    }
    return response.status_code, ctype, body, headers


def _fast_path(client) -> RecallFastPath | None:
    """The RecallFastPath in the app's middleware chain, if any."""
    layer = client.app.middleware_stack
    while layer is not None:
        if isinstance(layer, RecallFastPath):
            return layer
        layer = getattr(layer, "app", None)
    return None


def _recall_request_metrics(client) -> list[str]:
    lines = client.get("/metrics").text.splitlines()
    return sorted(
        line for line in lines if line.startswith("ams_requests_total") and "/v1/memories/{name}/" in line
    )


@pytest.fixture
def services(make_client, tmp_path, fashion_images):
    fast = make_client(data_dir=tmp_path / "fast", api_key=FULL, read_api_key=READ)
    plain = make_client(data_dir=tmp_path / "plain", api_key=FULL, read_api_key=READ, fast_recall=False)
    for client in (fast, plain):
        _setup(client, fashion_images)
    return fast, plain


def test_fast_path_answers_as_fastapi_does(services, fashion_images):
    fast, plain = services
    assert _fast_path(plain) is None
    layer = _fast_path(fast)
    assert layer is not None
    passed_on: list[str] = []  # what the fast path handed to FastAPI
    inner = layer.app

    async def recording(scope, receive, send):
        passed_on.append(f"{scope.get('method')} {scope.get('path')}")
        await inner(scope, receive, send)

    layer.app = recording
    statuses = []
    for method, path, kwargs in _requests(fashion_images):
        a, b = _meaning(_send(fast, method, path, kwargs)), _meaning(_send(plain, method, path, kwargs))
        assert a == b, (method, path, a[:2], b[:2], json.dumps(a[2])[:300] if isinstance(a[2], dict) else "")
        statuses.append(a[0])
    # The cases cover answers and errors alike.
    assert {200, 400, 401, 404, 405, 409, 415, 422} <= set(statuses)
    assert statuses[0] == 200 and statuses.count(200) >= 8
    # Only the badly named POST and the GET went on to FastAPI (and the /metrics scrape).
    recall_paths = [p for p in passed_on if "/v1/memories/" in p]
    assert recall_paths == ["POST /v1/memories/bad name!/retrieve", "GET /v1/memories/img/retrieve"]
    # Request metrics are labelled by route template alike on both.
    fast_lines, plain_lines = _recall_request_metrics(fast), _recall_request_metrics(plain)
    assert fast_lines == plain_lines
    assert (
        'ams_requests_total{method="POST",route="/v1/memories/{name}/retrieve",status="200"} 4.0'
        in fast_lines
    )


def test_fast_path_behind_a_root_path(tmp_path):
    """Behind a proxy (uvicorn --root-path /ams) the request path carries the prefix; the fast
    path matches what Starlette's router matches, the path without it."""
    app = create_app(Settings(data_dir=tmp_path / "data", device="cpu"))
    with TestClient(app, root_path="/ams") as client:
        wait_ready(client)
        assert (
            client.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [3]}).status_code
            == 201
        )
        stored = client.post("/v1/memories/m/patterns", json={"patterns": [{"id": "a", "vector": [1, 0, 0]}]})
        assert stored.status_code == 201
        layer = _fast_path(client)
        passed_on: list[str] = []
        inner = layer.app

        async def recording(scope, receive, send):
            passed_on.append(scope["path"])
            await inner(scope, receive, send)

        layer.app = recording
        r = client.post("/ams/v1/memories/m/retrieve", json={"vector": [0.9, 0.1, 0]})
        assert r.status_code == 200 and r.json()["matches"][0]["id"] == "a"
        assert passed_on == []  # answered by the fast path
