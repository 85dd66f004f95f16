"""Retrieve takes multipart as complete does: an `image` file, an optional `mask` picture and the
text fields `k`, `steps`, `include_vector`; it answers exactly what the JSON request with the
same cue answers, under the limits of a picture upload (the default body cap, pixel limits; no
value counting, which is for JSON), and says which field is wrong when one is."""

from __future__ import annotations

import base64
import io
import zlib

import pytest
import torch
from PIL import Image
from service_helpers import error_code, mask_png, png, png_b64, rgba_png

from memory_core.masks import bottom_half_unknown

pytestmark = pytest.mark.usefixtures("one_thread")

RETRIEVE = "/v1/memories/img/retrieve"


@pytest.fixture
def client(make_client, fashion_images):
    c = make_client(max_k=10, max_steps=4, max_image_pixels=1000, max_request_bytes=512 << 10)
    for name, shape in (("img", [1, 28, 28]), ("small", [1, 8, 8]), ("vec", [4])):
        assert (
            c.post("/v1/memories", json={"name": name, "kind": "hopfield", "shape": shape}).status_code == 201
        )
    patterns = [{"id": f"f{i}", "image": png_b64(fashion_images[i])} for i in range(12)]
    assert c.post("/v1/memories/img/patterns", json={"patterns": patterns}).status_code == 201
    assert (
        c.post("/v1/memories/small/patterns", json={"patterns": [{"vector": [0.5] * 64}]}).status_code == 201
    )
    return c


def _file(data: bytes, name: str = "cue.png") -> tuple[str, bytes, str]:
    return name, data, "image/png"


def test_multipart_answers_as_json_does(client, fashion_images):
    noisy = (
        fashion_images[3] + 0.3 * torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))
    ).clamp(0, 1)
    known = ~bottom_half_unknown(28, 28)  # (28, 28): top half known
    partial = fashion_images[5] * known
    cases = [  # (multipart files, text fields, the same request as JSON)
        ({"image": _file(png(noisy))}, {}, {"image": png_b64(noisy)}),
        (
            {"image": _file(png(partial)), "mask": _file(mask_png(known), "m.png")},
            {"k": "2", "steps": "2", "include_vector": "true"},
            {
                "image": png_b64(partial),
                "mask": base64.b64encode(mask_png(known)).decode(),
                "k": 2,
                "steps": 2,
                "include_vector": True,
            },
        ),
        (
            {"image": _file(rgba_png(partial, known))},
            {"k": "5"},
            {"image": base64.b64encode(rgba_png(partial, known)).decode(), "k": 5},
        ),
    ]
    for files, fields, body in cases:
        by_form, by_json = client.post(RETRIEVE, files=files, data=fields), client.post(RETRIEVE, json=body)
        assert by_form.status_code == 200, by_form.text
        assert by_form.json() == by_json.json()
    answer = client.post(RETRIEVE, files=cases[1][0], data=cases[1][1]).json()
    assert answer["matches"][0]["id"] == "f5"
    assert len(answer["matches"]) == 2 and len(answer["pattern"]["vector"]) == 784
    assert client.post(RETRIEVE, files=cases[0][0]).json()["matches"][0]["id"] == "f3"


def test_multipart_errors_name_the_problem(client, fashion_images):
    cue = _file(png(fashion_images[0]))
    cases = [  # (path, files, text fields, status, code, words in the message)
        (RETRIEVE, {"mask": cue}, {}, 422, "invalid_multipart", "field 'image'; got 0"),
        (RETRIEVE, [("image", cue), ("image", cue)], {}, 422, "invalid_multipart", "got 2"),
        (
            RETRIEVE,
            {"other": cue},
            {"image": "cue.png"},
            422,
            "invalid_multipart",
            "no multipart field 'other'",
        ),
        (RETRIEVE, {"mask": cue}, {"image": "cue.png"}, 422, "invalid_multipart", "-F image=@cue.png"),
        (RETRIEVE, {"image": cue}, {"step": "2"}, 422, "invalid_multipart", "'step'"),
        (RETRIEVE, {"image": _file(b"not a picture")}, {}, 422, "invalid_image", "image"),
        (RETRIEVE, {"image": cue}, {"k": "two"}, 422, "validation_error", "'k' must be an integer"),
        (RETRIEVE, {"image": cue}, {"k": "11"}, 422, "k_too_large", "AMS_MAX_K"),
        (RETRIEVE, {"image": cue}, {"steps": "0"}, 422, "validation_error", "'steps' must be >= 1"),
        (RETRIEVE, {"image": cue}, {"steps": "5"}, 422, "steps_too_large", "AMS_MAX_STEPS"),
        (RETRIEVE, {"image": cue}, {"include_vector": "yes"}, 422, "validation_error", "true or false"),
        (RETRIEVE, {"image": cue, "mask": _file(png(torch.zeros(1, 28, 28)))}, {}, 422, "empty_mask", ""),
        (RETRIEVE, {"image": _file(png(torch.rand(1, 40, 40)))}, {}, 413, "image_too_large", ""),
        ("/v1/memories/vec/retrieve", {"image": cue}, {}, 422, "not_an_image_memory", "send JSON"),
        ("/v1/memories/nope/retrieve", {"image": cue}, {}, 404, "memory_not_found", "'nope'"),
    ]
    for path, files, fields, status, code, words in cases:
        r = client.post(path, files=files, data=fields)
        assert (r.status_code, error_code(r)) == (status, code), (fields, r.text)
        assert words in r.json()["error"]["message"], r.text
    r = client.post(RETRIEVE, content=b"0.5", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]["message"]


def _comma_png(commas: int) -> bytes:
    """An 8 x 8 grey PNG carrying ``commas`` commas in a text chunk (ignored when decoded)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    data = buf.getvalue()
    text = b"Comment\0" + b"," * commas
    chunk = len(text).to_bytes(4, "big") + b"tEXt" + text
    chunk += zlib.crc32(b"tEXt" + text).to_bytes(4, "big")
    return data[:-12] + chunk + data[-12:]  # before IEND


def test_a_picture_upload_gets_the_picture_limits(client):
    """The body cap of a multipart retrieve is AMS_MAX_REQUEST_BYTES (a JSON recall of this
    memory could hold 10x fewer values than the picture's bytes hold commas), and a body over it
    is refused on its Content-Length before the app reads it."""
    commas = _comma_png(300_000)  # 300 kB < 512 KiB
    r = client.post("/v1/memories/small/retrieve", files={"image": _file(commas)})
    assert r.status_code == 200 and r.json()["matches"][0]["score"] == 0.0, r.text
    as_json = b'{"vector": [' + b"0.5," * 30_000 + b"0.5]}"  # as many values as JSON: refused as they arrive
    r = client.post(
        "/v1/memories/small/retrieve", content=as_json, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and error_code(r) == "too_many_values"
    sent: list[int] = []

    def body():  # a multipart body announced at 600 kB: refused before a byte of it is read
        for _ in range(60):
            sent.append(1)
            yield b"x" * 10_000

    headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "600000"}
    r = client.post("/v1/memories/small/retrieve", content=body(), headers=headers)
    assert r.status_code == 413 and error_code(r) == "request_too_large", r.text
    assert "AMS_MAX_REQUEST_BYTES" in r.json()["error"]["message"] and r.headers["connection"] == "close"
    assert sent == []  # not a byte of it was read
