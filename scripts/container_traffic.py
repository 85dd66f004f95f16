"""What scripts/container_check.py sends a running container over HTTP, and what it expects.

Real pictures (Fashion-MNIST test images) go in as PNGs; a noisy cue must retrieve its own
picture and a half-hidden one must be completed back to it. `read_back` is asked after a
restart (or in a new container on the same volume) and must find every picture as stored.
Each function raises CheckFailed naming what went wrong, and returns what it measured.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import torch
from PIL import Image

from memory_core.data import fashion_mnist
from memory_core.images import mask_to_png, tensor_to_png

MEMORY = "container-check"
PICTURES = 64  # Fashion-MNIST test images stored, ids fm-0 .. fm-63
NOISY = (5, 17, 42)  # the pictures recalled from a noisy cue
HALF_HIDDEN = 23  # the picture completed from its top half
NOISE_SD = 0.2


class CheckFailed(RuntimeError):
    """A claim of the container check does not hold."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _pictures() -> torch.Tensor:
    """(PICTURES, 1, 28, 28) in [0, 1], rounded to the 8 bits a PNG keeps."""
    images, _ = fashion_mnist("test", limit=PICTURES)
    return (images * 255).round() / 255


def _decode(png: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32) / 255)[
        None
    ]


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _ok(response: httpx.Response, status: int, what: str) -> dict:
    _expect(
        response.status_code == status,
        f"{what}: HTTP {response.status_code}, wanted {status}: {response.text[:300]}",
    )
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}


def _noisy_recalls(client: httpx.Client, images: torch.Tensor) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    found = []
    for i in NOISY:
        cue = (images[i] + NOISE_SD * torch.randn(images[i].shape, generator=gen)).clamp(0, 1)
        body = _ok(
            client.post(f"/v1/memories/{MEMORY}/retrieve", json={"image": _b64(tensor_to_png(cue))}),
            200,
            "retrieve",
        )
        found.append(body["matches"][0]["id"])
    _expect(found == [f"fm-{i}" for i in NOISY], f"noisy cues of {list(NOISY)} retrieved {found}")
    return found


def round_trip(base_url: str) -> dict:
    """Create a memory, store the pictures, retrieve from noisy cues, complete a half picture."""
    images = _pictures()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        created = _ok(
            client.post("/v1/memories", json={"name": MEMORY, "kind": "hopfield", "shape": [1, 28, 28]}),
            201,
            "create",
        )
        patterns = [{"id": f"fm-{i}", "image": _b64(tensor_to_png(img))} for i, img in enumerate(images)]
        stored = _ok(
            client.post(f"/v1/memories/{MEMORY}/patterns", json={"patterns": patterns}), 201, "store"
        )
        _expect(stored["ids"] == [p["id"] for p in patterns], f"store answered ids {stored['ids'][:5]}...")
        noisy = _noisy_recalls(client, images)
        known = torch.zeros(28, 28, dtype=torch.bool)
        known[:14] = True  # the top half is given, the bottom half is to be filled
        target = images[HALF_HIDDEN]
        response = client.post(
            f"/v1/memories/{MEMORY}/complete",
            files={
                "image": ("cue.png", tensor_to_png(target * known), "image/png"),
                "mask": ("mask.png", mask_to_png(known), "image/png"),
            },
        )
        body = _ok(response, 200, "complete")
        filled = _decode(base64.b64decode(body["image"]))
        mse = float(((filled - target)[:, 14:] ** 2).mean())
        _expect(
            body["matches"][0]["id"] == f"fm-{HALF_HIDDEN}" and mse < 1e-3,
            f"completion of fm-{HALF_HIDDEN}: top match {body['matches'][0]['id']}, hidden-half MSE {mse:.4f}",
        )
        count = _ok(client.get(f"/v1/memories/{MEMORY}"), 200, "details")["count"]
        _expect(count == PICTURES, f"memory holds {count} patterns, stored {PICTURES}")
    return {
        "memory": created["name"],
        "stored": len(stored["ids"]),
        "noisy_cues_sd": NOISE_SD,
        "noisy_recall_top_ids": noisy,
        "completed": f"fm-{HALF_HIDDEN}",
        "completed_unknown_pixels": body["unknown_pixels"],
        "completed_hidden_half_mse": round(mse, 6),
        "count": count,
    }


def read_back(base_url: str) -> dict:
    """Every stored picture, fetched as a PNG, equals what was stored; recall still works."""
    images = _pictures()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        count = _ok(client.get(f"/v1/memories/{MEMORY}"), 200, "details after restart")["count"]
        _expect(count == PICTURES, f"after the restart the memory holds {count} patterns, not {PICTURES}")
        differing = []
        for i in range(PICTURES):
            response = client.get(f"/v1/memories/{MEMORY}/patterns/fm-{i}", headers={"Accept": "image/png"})
            _expect(response.status_code == 200, f"fm-{i} after the restart: HTTP {response.status_code}")
            if not torch.equal(_decode(response.content), images[i]):
                differing.append(f"fm-{i}")
        _expect(not differing, f"pictures changed across the restart: {differing}")
        noisy = _noisy_recalls(client, images)
    return {"count": count, "pictures_identical": PICTURES, "noisy_recall_top_ids": noisy}
