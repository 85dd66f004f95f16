"""Write an upgrade fixture: a data folder made by an EARLIER release's own server, plus its answers.

tests/service/test_upgrade.py starts the current service on a copy of each fixture and checks
that every memory, pattern, fact and trained model loads and answers as that release answered
(docs/deployment.md, "Upgrades"). This script makes one fixture: it starts the old release's
service (``python -m app`` in a checkout of that commit, on a free port, AMS_DATA_DIR = the
fixture's folder), drives it over HTTP with the standard library only, records the answers in
``expected.json`` beside the data, and stops the server with SIGTERM (a clean shutdown; the last
SQLite connection folds the write-ahead log back, so ``ams.sqlite3`` is one file).

It makes, as far as the release supports them (its ``/v1/info`` kinds):
- ``vectors``: hopfield, shape [16], defaults; 4 vectors with captions and metadata.
- ``pictures``: hopfield, shape [1, 28, 28]; 4 Fashion-MNIST training pictures (PNG uploads).
- ``captioned``: hopfield, shape [8], ``text: true``; 3 vectors with captions.
- ``pc_pictures``: pc, [1, 28, 28], sizes [8, 16, 784], trained 20 epochs on 4 pictures.
- ``graph``: pcgraph, [16], 8 hidden vertices, trained 20 epochs on 4 vectors.
- ``facts``: relational (releases that have it), dim 8, 7 facts, trained 30 epochs.

Regenerate (from the repository root, with this repository's .venv)::

    mkdir -p /tmp/upgrade/a41a902 && git archive a41a902 | tar -x -C /tmp/upgrade/a41a902
    rm -rf tests/data/upgrade/a41a902
    .venv/bin/python scripts/make_upgrade_fixture.py /tmp/upgrade/a41a902 tests/data/upgrade/a41a902

and the same with d3d80b9. The old code runs with this venv's packages (PYTHONPATH = checkout).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
PICTURE_INDICES = (0, 1, 2, 3)  # the first four training pictures: 4 different classes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fashion_pictures(indices: tuple[int, ...]) -> list[bytes]:
    """28x28 uint8 greyscale pictures (row-major bytes) read straight from the idx file."""
    raw = gzip.decompress(FASHION.read_bytes())
    return [raw[16 + 784 * i : 16 + 784 * (i + 1)] for i in indices]


def png_b64(pixels: bytes, size: int = 28) -> str:
    buf = io.BytesIO()
    Image.frombytes("L", (size, size), pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def half_known_rgba(pixels: bytes, size: int = 28) -> str:
    """The picture with its bottom half unknown (alpha 0), as base64 RGBA PNG."""
    grey = Image.frombytes("L", (size, size), pixels)
    alpha = Image.new("L", (size, size), 255)
    alpha.paste(0, (0, size // 2, size, size))
    rgba = Image.merge("RGBA", (grey, grey, grey, alpha))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def vectors(seed: int, n: int, dim: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.uniform(-1.0, 1.0), 4) for _ in range(dim)] for _ in range(n)]


class Client:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None, accept: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=120) as resp:
            raw = resp.read()
        return raw if accept != "application/json" else (json.loads(raw) if raw else None)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.call("GET", "/readyz")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError("the old server never became ready")

    def train(self, name: str, epochs: int) -> dict:
        job = self.call("POST", f"/v1/memories/{name}/train", {"epochs": epochs})
        while job["status"] in ("queued", "running"):
            time.sleep(0.2)
            job = self.call("GET", f"/v1/jobs/{job['id']}")
        if job["status"] != "succeeded":
            raise RuntimeError(f"training {name} ended {job['status']}: {job.get('error')}")
        return job


def recall_answer(result: dict) -> dict:
    """The parts of a retrieve / complete answer the upgrade test compares."""
    return {
        "matches": result["matches"],
        "energy": result["energy"],
        "state": result["state"],
        "trained_count": result["trained_count"],
    }


def make_hopfield(api: Client, pictures: list[bytes]) -> dict:
    out: dict[str, Any] = {"recalls": {}}
    api.call("POST", "/v1/memories", {"name": "vectors", "kind": "hopfield", "shape": [16], "config": {}})
    vecs = vectors(seed=7, n=4, dim=16)
    api.call(
        "POST",
        "/v1/memories/vectors/patterns",
        {
            "patterns": [
                {"id": f"v{i}", "vector": v, "text": f"vector number {i}", "metadata": {"i": i, "tag": "v"}}
                for i, v in enumerate(vecs)
            ]
        },
    )
    cue = [x + (0.3 if j % 3 == 0 else 0.0) for j, x in enumerate(vecs[2])]
    ask = {"vector": cue, "k": 3}
    out["recalls"]["vectors"] = [
        {
            "route": "retrieve",
            "request": ask,
            **recall_answer(api.call("POST", "/v1/memories/vectors/retrieve", ask)),
        }
    ]

    api.call(
        "POST", "/v1/memories", {"name": "pictures", "kind": "hopfield", "shape": [1, 28, 28], "config": {}}
    )
    api.call(
        "POST",
        "/v1/memories/pictures/patterns",
        {
            "patterns": [
                {"id": f"p{i}", "image": png_b64(p), "metadata": {"fashion_index": i}}
                for i, p in zip(PICTURE_INDICES, pictures)
            ]
        },
    )
    half = {"image": half_known_rgba(pictures[1]), "k": 2}
    complete = {"image": half_known_rgba(pictures[3]), "k": 2}
    out["recalls"]["pictures"] = [
        {
            "route": "retrieve",
            "request": half,
            **recall_answer(api.call("POST", "/v1/memories/pictures/retrieve", half)),
        },
        {
            "route": "complete",
            "request": complete,
            **recall_answer(api.call("POST", "/v1/memories/pictures/complete", complete)),
        },
    ]
    return out


CAPTIONS = ["a white sneaker", "a black ankle boot", "a striped shirt"]


def make_captioned(api: Client) -> dict:
    """A cross-modal (text) memory; its lookup by vector compares stored caption embeddings, so
    answering it needs no text encoder."""
    api.call("POST", "/v1/memories", {"name": "captioned", "kind": "hopfield", "shape": [8], "text": True})
    vecs = vectors(seed=5, n=3, dim=8)
    api.call(
        "POST",
        "/v1/memories/captioned/patterns",
        {
            "patterns": [
                {"id": f"c{i}", "vector": v, "text": t} for i, (v, t) in enumerate(zip(vecs, CAPTIONS))
            ]
        },
    )
    ask = {"vector": vecs[1], "mask": [j < 6 for j in range(8)], "k": 3}
    found = api.call("POST", "/v1/memories/captioned/lookup", ask)
    return {"route": "lookup", "request": ask, "captions": found["captions"], **recall_answer_lookup(found)}


def recall_answer_lookup(result: dict) -> dict:
    return {"energy": result["energy"], "state": result["state"], "trained_count": result["trained_count"]}


def make_trained(api: Client, pictures: list[bytes], kinds: list[str]) -> dict:
    out: dict[str, Any] = {"recalls": {}, "jobs": {}}
    if "pc" in kinds:
        config = {"sizes": [8, 16, 784], "epochs": 20, "seed": 0}
        api.call(
            "POST",
            "/v1/memories",
            {"name": "pc_pictures", "kind": "pc", "shape": [1, 28, 28], "config": config},
        )
        api.call(
            "POST",
            "/v1/memories/pc_pictures/patterns",
            {"patterns": [{"id": f"q{i}", "image": png_b64(p)} for i, p in zip(PICTURE_INDICES, pictures)]},
        )
        out["jobs"]["pc_pictures"] = api.train("pc_pictures", 20)["status"]
        ask = {"image": half_known_rgba(pictures[0]), "k": 2}
        out["recalls"]["pc_pictures"] = [
            {
                "route": "retrieve",
                "request": ask,
                **recall_answer(api.call("POST", "/v1/memories/pc_pictures/retrieve", ask)),
            }
        ]
    if "pcgraph" in kinds:
        config = {"hidden": 8, "epochs": 20, "seed": 0}
        api.call(
            "POST", "/v1/memories", {"name": "graph", "kind": "pcgraph", "shape": [16], "config": config}
        )
        vecs = vectors(seed=11, n=4, dim=16)
        api.call(
            "POST",
            "/v1/memories/graph/patterns",
            {"patterns": [{"id": f"g{i}", "vector": v} for i, v in enumerate(vecs)]},
        )
        out["jobs"]["graph"] = api.train("graph", 20)["status"]
        ask = {"vector": vecs[1], "mask": [j < 8 for j in range(16)], "k": 2}
        out["recalls"]["graph"] = [
            {
                "route": "retrieve",
                "request": ask,
                **recall_answer(api.call("POST", "/v1/memories/graph/retrieve", ask)),
            }
        ]
    return out


FACTS = [
    ("borders", ["france", "spain"]),
    ("borders", ["spain", "france"]),
    ("borders", ["france", "italy"]),
    ("borders", ["italy", "france"]),
    ("capital_of", ["paris", "france"]),
    ("capital_of", ["madrid", "spain"]),
    ("capital_of", ["rome", "italy"]),
]


def make_relational(api: Client) -> dict:
    config = {"dim": 8, "epochs": 30, "negatives": 4, "batch_size": 8, "seed": 0}
    api.call("POST", "/v1/memories", {"name": "facts", "kind": "relational", "config": config})
    api.call("POST", "/v1/memories/facts/facts", {"facts": [{"relation": r, "args": a} for r, a in FACTS]})
    job = api.train("facts", 30)
    queries = [
        {"relation": "capital_of", "args": [None, "italy"], "k": 3},
        {"relation": "borders", "args": ["france", None], "k": 3},
    ]
    answers = [{"request": q, **api.call("POST", "/v1/memories/facts/query", q)} for q in queries]
    return {"jobs": {"facts": job["status"]}, "queries": {"facts": answers}}


def snapshot(api: Client) -> dict:
    """Every memory's record and every pattern (and fact) as the old server returns them."""
    memories = {}
    for mem in api.call("GET", "/v1/memories")["memories"]:
        name = mem["name"]
        details = api.call("GET", f"/v1/memories/{name}")
        entry: dict[str, Any] = {"details": details}
        if mem["kind"] == "relational":
            entry["facts"] = api.call("GET", f"/v1/memories/{name}/facts?limit=1000")["facts"]
        else:
            page = api.call("GET", f"/v1/memories/{name}/patterns?limit=1000")
            entry["patterns"] = {}
            for summary in page["patterns"]:
                pid = summary["id"]
                one = api.call("GET", f"/v1/memories/{name}/patterns/{pid}")
                if len(details["shape"]) == 3:
                    png = api.call("GET", f"/v1/memories/{name}/patterns/{pid}", accept="image/png")
                    one["png"] = base64.b64encode(png).decode()
                entry["patterns"][pid] = one
        memories[name] = entry
    return memories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of the old release (git archive)")
    parser.add_argument("out", type=Path, help="the fixture folder to create (must not exist)")
    args = parser.parse_args()
    checkout, out = args.checkout.resolve(), args.out.resolve()
    out.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "AMS_DATA_DIR": str(out),
        "AMS_PORT": str(port),
        "AMS_TORCH_THREADS": "1",
        "AMS_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=checkout, env=env)
    try:
        api = Client(f"http://127.0.0.1:{port}")
        api.wait_ready()
        info = api.call("GET", "/v1/info")
        pictures = fashion_pictures(PICTURE_INDICES)
        expected: dict[str, Any] = {"kinds": info["kinds"], "version": info.get("version")}
        expected.update(make_hopfield(api, pictures))
        expected["recalls"]["captioned"] = [make_captioned(api)]
        trained = make_trained(api, pictures, info["kinds"])
        expected["recalls"].update(trained["recalls"])
        expected["jobs"] = trained["jobs"]
        if "relational" in info["kinds"]:
            relational = make_relational(api)
            expected["jobs"].update(relational["jobs"])
            expected["queries"] = relational["queries"]
        expected["memories"] = snapshot(api)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's clean shutdown: lifespan end, storage closed
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # never leave the old server running
            server.kill()
            server.wait()
            raise
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(("-wal", "-shm"))]
    if leftovers:
        raise RuntimeError(f"the old server left {leftovers}: not one file")
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {sorted(expected['memories'])}")


if __name__ == "__main__":
    main()
