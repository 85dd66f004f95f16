"""Every bad input gets a 4xx with DESIGN.md's error shape, and stores nothing.

(TestClient re-raises server exceptions, so a 5xx here would fail the test as a bug.)
"""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image
from service_helpers import count, error_code, png, png_b64

HALF = [True] * 392 + [False] * 392


@pytest.fixture
def setup(make_client, fashion):
    """A client with small limits, an image memory 'img' (5 patterns) and a vector memory 'vec' (3)."""
    c = make_client(
        max_batch=8, max_image_pixels=1000, max_request_bytes=64 * 1024, max_k=10, max_steps=5, max_page=50
    )
    assert (
        c.post("/v1/memories", json={"name": "img", "kind": "hopfield", "shape": [1, 28, 28]}).status_code
        == 201
    )
    assert c.post("/v1/memories", json={"name": "vec", "kind": "hopfield", "shape": [4]}).status_code == 201
    assert c.post("/v1/memories", json={"name": "empty", "kind": "hopfield", "shape": [4]}).status_code == 201
    r = c.post(
        "/v1/memories/img/patterns",
        json={"patterns": [{"id": f"p{i}", "image": png_b64(fashion[i])} for i in range(5)]},
    )
    assert r.status_code == 201
    r = c.post(
        "/v1/memories/vec/patterns",
        json={"patterns": [{"id": f"v{i}", "vector": [i, 0, 1, 2]} for i in range(3)]},
    )
    assert r.status_code == 201
    yield c
    # Nothing any test below sent was stored.
    assert (count(c, "img"), count(c, "vec"), count(c, "empty")) == (5, 3, 0)
    ids = [p["id"] for p in c.get("/v1/memories/img/patterns").json()["patterns"]]
    assert ids == [f"p{i}" for i in range(5)]


def _raw(c, path, text, ctype="application/json"):
    return c.post(
        path, content=text.encode() if isinstance(text, str) else text, headers={"Content-Type": ctype}
    )


IMG = "/v1/memories/img/patterns"
VEC = "/v1/memories/vec/patterns"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ('{"patterns": [', 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ('{"patterns": []}', 422, "validation_error"),
        ('{"patterns": [{"vector": [1, 2, 3, 4]}], "extra": 1}', 422, "validation_error"),
        ('{"patterns": [{"vector": [1, 2, 3]}]}', 422, "dimension_mismatch"),
        ('{"patterns": [{"vector": [1, 2, NaN, 4]}]}', 422, "non_finite"),
        ('{"patterns": [{"vector": [1, 2, Infinity, 4]}]}', 422, "non_finite"),
        ('{"patterns": [{"vector": [1, 2, 1e39, 4]}]}', 422, "non_finite"),
        ('{"patterns": [{"vector": [1, 2, "x", 4]}]}', 422, "validation_error"),
        ('{"patterns": [{}]}', 422, "invalid_pattern"),
        ('{"patterns": [{"vector": [1, 2, 3, 4], "image": "AAAA"}]}', 422, "invalid_pattern"),
        ('{"patterns": [{"image": "iVBORw0KGgo="}]}', 422, "not_an_image_memory"),
        ('{"patterns": [{"id": "v1", "vector": [1, 2, 3, 4]}]}', 409, "pattern_exists"),
        (
            '{"patterns": [{"id": "n", "vector": [1, 2, 3, 4]}, {"id": "n", "vector": [1, 2, 3, 4]}]}',
            422,
            "duplicate_id",
        ),
        ('{"patterns": [{"id": "bad id!", "vector": [1, 2, 3, 4]}]}', 422, "validation_error"),
        ('{"patterns": [{"vector": [1, 2, 3, 4], "metadata": {"x": NaN}}]}', 422, "non_finite"),
        ('{"patterns": [{"vector": [1, 2, 3, 4], "metadata": [1]}]}', 422, "validation_error"),
        # a good pattern first, a bad one last: the whole batch is refused
        (
            '{"patterns": [{"id": "ok", "vector": [1, 2, 3, 4]}, {"vector": [1, 2]}]}',
            422,
            "dimension_mismatch",
        ),
    ],
)
def test_bad_vector_batches(setup, body, status, code):
    r = _raw(setup, VEC, body)
    assert r.status_code == status and error_code(r) == code, r.text


def _store_image(c, data: bytes | str, **params):
    text = data if isinstance(data, str) else base64.b64encode(data).decode()
    return c.post(IMG, params=params, json={"patterns": [{"id": "new", "image": text}]})


def test_bad_images(setup, fashion):
    c = setup
    cases = [
        ("not base64 !!", 422, "invalid_base64"),
        (base64.b64encode(b"hello, not an image").decode(), 422, "invalid_image"),
        (png(fashion[0])[:60], 422, "invalid_image"),  # truncated PNG
        (png(torch.rand(1, 20, 20)), 422, "shape_mismatch"),  # 20x20 into a 28x28 memory
        (png(torch.rand(1, 40, 40)), 413, "image_too_large"),  # 1600 pixels > AMS_MAX_IMAGE_PIXELS = 1000
    ]
    for data, status, code in cases:
        r = _store_image(c, data)
        assert r.status_code == status and error_code(r) == code, (code, r.text)
    # A decompression bomb: tiny file, huge header; refused before decoding.
    buf = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buf, format="PNG")
    r = _store_image(c, buf.getvalue())
    assert r.status_code == 413 and error_code(r) == "image_too_large"


def test_wrong_size_image_is_stored_when_asked_to_fit(make_client, fashion):
    c = make_client()
    c.post("/v1/memories", json={"name": "img", "kind": "hopfield", "shape": [1, 28, 28]})
    big = torch.nn.functional.interpolate(fashion[0][None], size=(56, 56), mode="bilinear")[0]
    assert error_code(_store_image(c, png(big))) == "shape_mismatch"
    assert _store_image(c, png(big), fit="true").status_code == 201
    assert count(c, "img") == 1


def test_batch_and_body_limits(setup):
    c = setup
    nine = {"patterns": [{"vector": [1, 2, 3, 4]} for _ in range(9)]}  # AMS_MAX_BATCH = 8
    r = c.post(VEC, json=nine)
    assert r.status_code == 422 and error_code(r) == "batch_too_large"
    files = [("images", (f"{i}.png", png(torch.rand(1, 28, 28)), "image/png")) for i in range(9)]
    r = c.post(IMG, files=files)
    assert r.status_code == 422 and error_code(r) == "batch_too_large"
    big = '{"patterns": [{"vector": [1, 2, 3, 4], "text": "' + "x" * 70_000 + '"}]}'
    r = _raw(c, VEC, big)  # declared Content-Length over AMS_MAX_REQUEST_BYTES = 64 KiB
    assert r.status_code == 413 and error_code(r) == "request_too_large"

    def chunks():  # no Content-Length: chunked, counted while reading
        yield b'{"patterns": [{"vector": [1, 2, 3, 4], "text": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}]}'

    r = c.post(VEC, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_code(r) == "request_too_large"
    # Just under the limit is fine (and then deleted, to leave the memory as it was).
    ok = '{"patterns": [{"id": "long", "vector": [1, 2, 3, 4], "text": "' + "x" * 2000 + '"}]}'
    assert _raw(c, VEC, ok).status_code == 201
    assert c.delete(f"{VEC}/long").status_code == 204


def test_bad_multipart(setup):
    c = setup
    r = c.post(IMG, files=[("other", ("a.png", b"x", "image/png"))])
    assert r.status_code == 422 and error_code(r) == "invalid_multipart"
    r = c.post(IMG, files=[("images", ("a.png", b"not an image", "image/png"))])
    assert r.status_code == 422 and error_code(r) == "invalid_image"
    r = c.post(
        IMG, files=[("images", ("a.png", png(torch.rand(1, 28, 28)), "image/png"))], data={"ids": ["a", "b"]}
    )
    assert r.status_code == 422 and error_code(r) == "invalid_multipart"
    # A misspelt field beside good images is named, not dropped: nothing is stored.
    before = c.get(IMG.rsplit("/", 1)[0]).json()["count"]
    good = ("images", ("a.png", png(torch.rand(1, 28, 28)), "image/png"))
    r = c.post(IMG, files=[good], data={"id": "a"})
    assert r.status_code == 422 and "no multipart field 'id'" in r.json()["error"]["message"]
    assert c.get(IMG.rsplit("/", 1)[0]).json()["count"] == before
    r = _raw(c, IMG, b"--xx\r\ngarbage", ctype="multipart/form-data")  # no boundary parameter
    assert r.status_code == 400 and error_code(r) == "invalid_multipart"
    r = _raw(c, IMG, "hello", ctype="text/plain")
    assert r.status_code == 415 and error_code(r) == "unsupported_media_type"


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({"name": "img", "kind": "hopfield", "shape": [3]}, 409, "memory_exists"),
        ({"name": "bad name", "kind": "hopfield", "shape": [3]}, 422, "validation_error"),
        ({"name": "x", "kind": "nope", "shape": [3]}, 422, "unknown_kind"),
        ({"name": "x", "kind": "hopfield", "shape": [2, 28, 28]}, 422, "invalid_shape"),
        ({"name": "x", "kind": "hopfield", "shape": [0]}, 422, "validation_error"),
        ({"name": "x", "kind": "hopfield", "shape": [28, 28]}, 422, "invalid_shape"),
        ({"name": "x", "kind": "hopfield", "shape": []}, 422, "validation_error"),
        ({"name": "x", "kind": "hopfield", "shape": [3, 4096, 4096]}, 422, "dimension_too_large"),
        ({"name": "x", "kind": "hopfield", "shape": [3], "config": {"beta": -1}}, 422, "invalid_config"),
        ({"name": "x", "kind": "hopfield", "shape": [3], "config": {"beta": "big"}}, 422, "invalid_config"),
        (
            {"name": "x", "kind": "hopfield", "shape": [3], "config": {"similarity": "psychic"}},
            422,
            "invalid_config",
        ),
        (
            {"name": "x", "kind": "hopfield", "shape": [3], "config": {"device": "cuda"}},
            422,
            "invalid_config",
        ),
        ({"name": "x", "kind": "hopfield", "shape": [3], "config": {"k": 2.5}}, 422, "invalid_config"),
        ({"name": "x", "kind": "hopfield", "shape": [3], "colour": True}, 422, "validation_error"),
    ],
)
def test_bad_memory_creation(setup, payload, status, code):
    r = setup.post("/v1/memories", json=payload)
    assert r.status_code == status and error_code(r) == code, r.text
    assert [m["name"] for m in setup.get("/v1/memories").json()["memories"]] == ["img", "vec", "empty"]


def test_bad_memory_json(setup):
    assert error_code(_raw(setup, "/v1/memories", '{"name": ')) == "invalid_json"
    r = _raw(
        setup, "/v1/memories", '{"name": "x", "kind": "hopfield", "shape": [3], "config": {"beta": NaN}}'
    )
    assert r.status_code == 422 and error_code(r) == "invalid_config"


def test_unknown_things(setup):
    c = setup
    for method, path, code in [
        ("get", "/v1/memories/nope", "memory_not_found"),
        ("delete", "/v1/memories/nope", "memory_not_found"),
        ("get", "/v1/memories/nope/patterns", "memory_not_found"),
        ("get", "/v1/memories/img/patterns/nope", "pattern_not_found"),
        ("delete", "/v1/memories/img/patterns/nope", "pattern_not_found"),
        ("get", "/v1/jobs/abcdef", "job_not_found"),
        ("delete", "/v1/jobs/abcdef", "job_not_found"),
        ("get", "/v1/nothing-here", "not_found"),
    ]:
        r = getattr(c, method)(path)
        assert r.status_code == 404 and error_code(r) == code, (path, r.text)
    r = c.post("/v1/memories/nope/patterns", json={"patterns": [{"vector": [1, 2, 3, 4]}]})
    assert r.status_code == 404 and error_code(r) == "memory_not_found"
    r = c.post("/v1/memories/nope/retrieve", json={"vector": [1, 2, 3, 4]})
    assert r.status_code == 404 and error_code(r) == "memory_not_found"
    r = c.put("/v1/memories/img")
    assert error_code(r) == "method_not_allowed" and r.headers["allow"] == "DELETE, GET, HEAD"
    assert error_code(c.get("/v1/memories/bad%20name")) == "validation_error"
    assert error_code(c.get("/v1/jobs/NOT-HEX")) == "validation_error"


def test_bad_listing_and_reading(setup):
    c = setup
    for params, code in [
        ({"limit": 0}, "validation_error"),
        ({"limit": 51}, "limit_too_large"),
        ({"cursor": "!!!"}, "invalid_cursor"),
        ({"cursor": "LTU"}, "invalid_cursor"),
    ]:
        r = c.get(IMG, params=params)
        assert r.status_code == 422 and error_code(r) == code, (params, r.text)
    r = c.get(f"{VEC}/v1", headers={"Accept": "image/png"})
    assert r.status_code == 406 and error_code(r) == "not_acceptable"


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("vec", {"vector": [1, 2, 3]}, 422, "dimension_mismatch"),
        ("vec", {"vector": [1, 2, 3, float("nan")]}, 422, "non_finite"),
        ("vec", {"vector": [1, 2, 3, 4], "mask": [True, False]}, 422, "dimension_mismatch"),
        ("vec", {"vector": [1, 2, 3, 4], "mask": [False] * 4}, 422, "empty_mask"),
        ("vec", {"vector": [1, 2, 3, 4], "mask": "@@"}, 422, "invalid_base64"),
        ("vec", {"vector": [1, 2, 3, 4], "mask": "iVBORw0KGgo="}, 422, "not_an_image_memory"),
        ("vec", {"image": "iVBORw0KGgo="}, 422, "not_an_image_memory"),
        ("vec", {}, 422, "invalid_cue"),
        ("vec", {"vector": [1, 2, 3, 4], "image": "AAAA"}, 422, "invalid_cue"),
        ("vec", {"vector": [1, 2, 3, 4], "k": 11}, 422, "k_too_large"),
        ("vec", {"vector": [1, 2, 3, 4], "k": 0}, 422, "validation_error"),
        ("vec", {"vector": [1, 2, 3, 4], "steps": 6}, 422, "steps_too_large"),
        ("vec", {"vector": [1, 2, 3, 4], "extra": 1}, 422, "validation_error"),
        ("empty", {"vector": [1, 2, 3, 4]}, 409, "memory_empty"),
        ("img", {"image": "%%%"}, 422, "invalid_base64"),
        ("img", {"image": base64.b64encode(b"GIF89a broken").decode()}, 422, "invalid_image"),
        ("img", {"vector": [0.5] * 784, "mask": HALF[:100]}, 422, "dimension_mismatch"),
    ],
)
def test_bad_retrieve(setup, path, body, status, code):
    import json

    text = json.dumps(body)  # NaN goes out as the (non-standard) NaN literal
    r = _raw(setup, f"/v1/memories/{path}/retrieve", text)
    assert r.status_code == status and error_code(r) == code, r.text


def test_bad_retrieve_image_limits(setup):
    c = setup
    r = c.post("/v1/memories/img/retrieve", json={"image": png_b64(torch.rand(1, 40, 40))})
    assert r.status_code == 413 and error_code(r) == "image_too_large"
    assert error_code(_raw(c, "/v1/memories/img/retrieve", '{"image": ')) == "invalid_json"


def test_bad_complete(setup, fashion):
    c = setup
    r = c.post("/v1/memories/vec/complete", files={"image": ("a.png", png(fashion[0]), "image/png")})
    assert r.status_code == 422 and error_code(r) == "not_an_image_memory"
    r = c.post("/v1/memories/img/complete", files={"image": ("a.png", png(fashion[0]), "image/png")})
    assert r.status_code == 422 and error_code(r) == "mask_required"
    r = c.post("/v1/memories/img/complete", files={"mask": ("a.png", png(fashion[0]), "image/png")})
    assert r.status_code == 422 and error_code(r) == "invalid_multipart"
    r = c.post("/v1/memories/img/complete", files={"image": ("a.png", b"garbage", "image/png")})
    assert r.status_code == 422 and error_code(r) == "invalid_image"
    black = png(torch.zeros(1, 28, 28))  # mask picture with nothing known
    r = c.post(
        "/v1/memories/img/complete",
        files={"image": ("a.png", png(fashion[0]), "image/png"), "mask": ("m.png", black, "image/png")},
    )
    assert r.status_code == 422 and error_code(r) == "empty_mask"
    r = c.post("/v1/memories/img/complete", json={"image": "??"})
    assert r.status_code == 422 and error_code(r) == "invalid_base64"
    r = c.post("/v1/memories/img/complete", json={"mask": png_b64(fashion[0])})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    assert error_code(_raw(c, "/v1/memories/img/complete", "{")) == "invalid_json"


def test_train_is_refused_for_hopfield(setup):
    r = setup.post("/v1/memories/img/train", json={})
    assert r.status_code == 422 and error_code(r) == "not_trainable"
    r = setup.post("/v1/memories/img/train", json={"epochs": 0})
    assert r.status_code == 422 and error_code(r) == "validation_error"
