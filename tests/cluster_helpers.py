"""Helpers for the Ray mode's tests and checks: a gateway over a real local Ray cluster, the
same memory in one process, the recalls both answer, and the comparison of their answers.

Used by tests/e2e/test_cluster_exact.py, tests/reliability/test_cluster_*.py and the Ray
mode's scripts (scripts/check_cluster_exact.py runs the same comparison at N = 20 000).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient
from service_helpers import wait_job

from app.cluster.local import LocalCluster
from app.main import create_app
from app.settings import Settings
from memory_core.images import tensor_to_png

SHAPE = [1, 28, 28]
_TOKEN = secrets.token_hex(24)
# The similarities of the exactness claim, with a beta that makes each a soft (not one-hot)
# softmax on Fashion-MNIST: euclidean is the default config (beta 100, sharp).
CONFIGS = {
    "euclidean": {},
    "manhattan": {"similarity": "manhattan", "beta": 0.05},
    "dot": {"similarity": "dot", "beta": 0.02},
}


class SharedCluster:
    """The test session's local Ray cluster (fixture ``ray_local_cluster``), started on first
    use; ``restart()`` stops every process of it and starts a new one (same token and the same
    worker node addresses and data dirs, ``root/nodes/<address>``, as a real deployment keeps
    its token and its disks), for the whole-cluster restart test."""

    def __init__(self, root: Path) -> None:
        self.root, self.cluster, self._starts = root, None, 0

    def get(self) -> LocalCluster:
        if self.cluster is None:
            # Ray reads RAY_AUTH_MODE when it is first imported: a test process that imported it
            # before this sets the token would fail every connection (and wait for /readyz)
            assert self._starts or "ray" not in sys.modules or os.environ.get("RAY_AUTH_MODE") == "token", (
                "Ray was imported before the test cluster set RAY_AUTH_MODE: keep `import ray` "
                "(app.cluster's modules but nodes.py and local.py) out of the tests that run first"
            )
            self._starts += 1
            self.cluster = LocalCluster(
                self.root / f"c{self._starts}", workers=2, cpus=8, token=_TOKEN, data=str(self.root / "nodes")
            ).start()
            os.environ.update({k: v for k, v in self.cluster.env.items() if k.startswith("RAY_")})
        return self.cluster

    def restart(self) -> LocalCluster:
        self.close()
        return self.get()

    def close(self, grace: float = 1.0) -> None:
        """Stop every process of the cluster: what outlives SIGTERM for ``grace`` s is killed."""
        if self.cluster is not None:
            stop_cluster(self.cluster, grace)
            self.cluster = None


@contextmanager
def work_folder(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new temp folder for a script's cluster, services and logs, removed at the end; kept
    (and said so on stderr) when ``keep`` is set or the work raised, for inspection."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    except BaseException:
        print(f"kept {folder} for inspection (the run failed)", file=sys.stderr)
        raise
    if keep:
        print(f"kept {folder} (--keep)", file=sys.stderr)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def stop_cluster(cluster: LocalCluster, grace: float = 5.0) -> None:
    """This process leaves the cluster (a Ray driver whose cluster vanishes ends its process),
    then every process of the cluster is stopped (SIGKILL after ``grace`` seconds)."""
    import ray

    ray.shutdown()
    cluster.stop(grace)


class _LogTail(logging.Handler):
    """The last ``lines`` log records of the service, formatted (tracebacks included)."""

    def __init__(self, lines: int = 40) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.records: deque[str] = deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.records)[-4000:]


def start_client(
    data_dir: Path,
    cluster: LocalCluster | None = None,
    timeout: float = 300.0,
    until: Callable[[Any], bool] | None = None,
    **overrides,
) -> TestClient:
    """A started, ready TestClient: in one process, or as the gateway of ``cluster``.

    Waits up to ``timeout`` s for a start that is under way (actors being placed and loaded
    on a loaded machine), but fails at once, with the service's error and the tail of its
    log, when its recovery has ended in failure (it would never become ready). ``until``:
    wait for that of the /readyz response instead of a 200 (a start that stays not ready)."""
    settings: dict[str, Any] = {"data_dir": data_dir, "device": "cpu"}
    if cluster is not None:
        settings |= {
            "ray_address": cluster.env["AMS_RAY_ADDRESS"],
            "ray_node_ip": cluster.env["AMS_RAY_NODE_IP"],
            "ray_namespace": "ams-test",
            "shard_cpus": 0.5,
            "shard_timeout_s": 10.0,
        }
    client = TestClient(create_app(Settings(**(settings | overrides))))
    tail, logger = _LogTail(), logging.getLogger("app")
    logger.addHandler(tail)  # (after create_app, which adds the service's own stderr handler)
    try:
        client.__enter__()
        service = client.app.state.service
        deadline = time.monotonic() + timeout
        done = until or (lambda r: r.status_code == 200)
        while not done(ready := client.get("/readyz")):
            if service.error is not None:  # recovery is over, and failed
                client.__exit__(None, None, None)
                raise AssertionError(
                    f"the service did not start: {service.error}\n--- its log ---\n{tail.text()}"
                )
            if time.monotonic() > deadline:
                client.__exit__(None, None, None)
                raise AssertionError(
                    f"not ready after {timeout:g} s: {ready.json()}\n--- its log ---\n{tail.text()}"
                )
            time.sleep(0.1)
    finally:
        logger.removeHandler(tail)
    return client


def create(client: TestClient, name: str, config: dict, shards: int | None = None) -> dict:
    body = {"name": name, "kind": "hopfield", "shape": SHAPE, "config": dict(config)}
    if shards is not None:
        body["config"]["shards"] = shards
    r = client.post("/v1/memories", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def create_trained(
    client: TestClient, name: str, vectors: torch.Tensor, sizes: list[int], epochs: int, replicas: int = 2
) -> None:
    """A pc memory with ``replicas`` read replicas holding ``vectors`` (N, D) as patterns
    ``q<i>``, trained (its job waited for)."""
    config = {"sizes": sizes, "epochs": epochs, "replicas": replicas}
    body = {"name": name, "kind": "pc", "shape": [vectors.shape[1]], "config": config}
    assert client.post("/v1/memories", json=body).status_code == 201
    patterns = {"patterns": [{"id": f"q{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]}
    assert client.post(f"/v1/memories/{name}/patterns", json=patterns).status_code == 201
    job = client.post(f"/v1/memories/{name}/train", json={}).json()
    assert wait_job(client, job["id"])["status"] == "succeeded"


def store(client: TestClient, name: str, vectors: torch.Tensor, start: int = 0, batch: int = 500) -> None:
    """Store vectors (N, D) as patterns ``p<start + i>``."""
    for at in range(0, len(vectors), batch):
        part = vectors[at : at + batch]
        body = {"patterns": [{"id": f"p{start + at + i}", "vector": v.tolist()} for i, v in enumerate(part)]}
        r = client.post(f"/v1/memories/{name}/patterns", json=body)
        assert r.status_code == 201, r.text


def queries(vectors: torch.Tensor, count: int, seed: int = 0) -> list[tuple[str, dict]]:
    """Recalls of stored patterns from noisy and half-masked cues: (endpoint, JSON body)."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(vectors), generator=gen)[:count]
    mask = [True] * 392 + [False] * 392  # the lower half unknown
    out: list[tuple[str, dict]] = []
    for n, i in enumerate(picks.tolist()):
        noisy = (vectors[i] + 0.3 * torch.randn(784, generator=gen)).clamp(0, 1)
        out.append(("retrieve", {"vector": noisy.tolist(), "k": 5, "include_vector": True}))
        out.append(
            ("retrieve", {"vector": vectors[i].tolist(), "mask": mask, "k": 5, "include_vector": True})
        )
        if n % 2 == 0:
            out.append(("retrieve", {"vector": noisy.tolist(), "k": 3, "steps": 3, "include_vector": True}))
            image = base64.b64encode(tensor_to_png(vectors[i].reshape(SHAPE))).decode()
            mask_png = torch.ones(SHAPE)
            mask_png[:, 14:, :] = 0
            out.append(
                (
                    "complete",
                    {"image": image, "mask": base64.b64encode(tensor_to_png(mask_png)).decode(), "k": 4},
                )
            )
    return out


def _png(data: str) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(base64.b64decode(data))), dtype=np.int16)


def compare(one: dict, other: dict, tol: float = 1e-5) -> dict[str, float]:
    """Assert two answers of one recall agree: the same match ids in the same order, scores,
    energies and result vectors to ``tol`` (relative to their scale); returns the differences."""
    assert [m["id"] for m in one["matches"]] == [m["id"] for m in other["matches"]], (
        one["matches"],
        other["matches"],
    )
    diffs = {}
    s1 = np.array([m["score"] for m in one["matches"]])
    s2 = np.array([m["score"] for m in other["matches"]])
    diffs["score"] = float(np.abs(s1 - s2).max() / max(1.0, np.abs(s1).max()))
    diffs["energy"] = abs(one["energy"] - other["energy"]) / max(1.0, abs(one["energy"]))
    if "pattern" in one:
        v1, v2 = np.array(one["pattern"]["vector"]), np.array(other["pattern"]["vector"])
        diffs["vector"] = float(np.abs(v1 - v2).max())
    else:  # complete: 8-bit pictures, at most one grey level apart
        diffs["pixel"] = float(np.abs(_png(one["image"]) - _png(other["image"])).max())
        assert diffs["pixel"] <= 1, diffs
    assert diffs["score"] <= tol and diffs["energy"] <= tol and diffs.get("vector", 0.0) <= tol, diffs
    return diffs


def ask(client: TestClient, name: str, endpoint: str, body: dict) -> dict:
    r = client.post(f"/v1/memories/{name}/{endpoint}", json=body)
    assert r.status_code == 200, r.text
    return r.json()
