"""Helpers for the service tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image

from memory_core.images import tensor_to_png


def wait_job(client, job_id: str, timeout: float = 180.0) -> dict:
    """Poll /v1/jobs/{id} until the job has finished; its last state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def wait_ready(client, timeout: float = 60.0) -> None:
    """Poll /readyz until 200 (recovery runs in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"service not ready after {timeout} s: {client.get('/readyz').json()}")


def png(image: torch.Tensor) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes."""
    return tensor_to_png(image)


def png_b64(image: torch.Tensor) -> str:
    """(C, H, W) in [0, 1] -> base64 PNG text."""
    return base64.b64encode(tensor_to_png(image)).decode("ascii")


def decode_png(data: bytes) -> torch.Tensor:
    """PNG bytes -> (C, H, W) float in [0, 1] (grey -> C = 1)."""
    img = Image.open(io.BytesIO(data))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


def rgba_png(image: torch.Tensor, known: torch.Tensor) -> bytes:
    """(1|3, H, W) image + (H, W) bool known -> RGBA PNG whose alpha 0 marks unknown pixels."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    arr = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    alpha = (known.numpy().astype(np.uint8) * 255)[..., None]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([arr, alpha], axis=2), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def mask_png(known: torch.Tensor) -> bytes:
    """(H, W) bool known -> greyscale mask picture, white = known."""
    return tensor_to_png(known.float()[None])


def error_code(response) -> str:
    """The error code of a 4xx, checking the error shape on the way."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["code"]


def count(client: TestClient, name: str) -> int:
    return client.get(f"/v1/memories/{name}").json()["count"]
