"""`make run-cluster` (``python -m app.cluster.local run``) as a user runs it, twice.

The first run stores into a sharded memory and is stopped with SIGTERM; the second, over
the same ``AMS_DATA_DIR`` (a new cluster folder, as every run gets), must find every
acknowledged pattern again (the worker nodes' shard files live in ``$AMS_DATA_DIR/nodes``,
not in the run's temp folder) and is stopped with SIGINT (Ctrl-C). Each stop must end
every process the run started: the service, Ray's head and worker nodes and the shards.
The second run, without ``--dir``, removes its own /tmp folder when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from ams_client import ApiError, Client
from live_server import free_port

from app.cluster.local import _alive, _descendants, _end, _processes

pytestmark = pytest.mark.slow


class Run:
    """One ``python -m app.cluster.local run`` (one worker node) on a free port."""

    def __init__(self, root: Path, data: Path, name: str, own_dir: bool = True) -> None:
        """``own_dir=False``: no ``--dir``, as `make run-cluster` runs it (a folder of the run's
        own under /tmp, which a run that ends well removes)."""
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AMS_", "RAY_"))}
        env |= {
            "AMS_DATA_DIR": str(data),
            "AMS_PORT": self.url.rsplit(":", 1)[1],
            "AMS_LOG_LEVEL": "warning",
            "AMS_TORCH_THREADS": "1",
            "AMS_SHARD_CPUS": "0.5",
        }
        self.log = open(root / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the process)
        argv = [sys.executable, "-m", "app.cluster.local", "run", "--workers", "1"]
        argv += ["--dir", str(root / name)] if own_dir else []
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.dir = root / name if own_dir else Path(f"/tmp/ams-ray-{self.proc.pid}")

    def wait_ready(self, timeout: float = 240.0) -> None:
        try:
            with Client(self.url, max_retries=0) as client:
                client.wait_ready(timeout=timeout, interval=0.5)
        except ApiError as exc:
            raise AssertionError(f"{exc} (run: {self.proc.poll()}): {self._log()}") from exc

    def processes(self) -> set[int]:
        """The run, the service, and every process of the cluster's nodes (their groups)."""
        groups = set(json.loads((self.dir / "cluster.json").read_text())["groups"])
        assert groups, "the run's cluster.json names no node"
        return _descendants({self.proc.pid} | {pid for pid, pgid in _processes().items() if pgid in groups})

    def stop(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the run alone and check that nothing it started outlives it."""
        started = self.processes()
        assert len(started) > 5, started  # run, service, head and worker node daemons
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in started):
            time.sleep(0.2)
        left = {pid: _cmdline(pid) for pid in started if _alive(pid)}
        _end(set(left), 2.0)  # (a failed test leaves nothing running either)
        assert code == 0, f"run ended with {code} after {sig.name}: {self._log()}"
        assert not left, f"still running after {sig.name}: {left}"
        self.log.close()

    def _log(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def test_run_cluster_twice_keeps_patterns_and_stops_everything(tmp_path):
    data = tmp_path / "data"
    first = Run(tmp_path, data, "first")
    try:
        first.wait_ready()
        body = {"name": "big", "kind": "hopfield", "shape": [4], "config": {"shards": 2}}
        assert httpx.post(f"{first.url}/v1/memories", json=body, timeout=60).status_code == 201
        vectors = {"a": [1, 0, 0, 1], "b": [0, 1, 1, 0], "c": [1, 1, 0, 0], "d": [0, 0, 1, 1]}
        patterns = [{"id": k, "vector": v} for k, v in vectors.items()]
        r = httpx.post(f"{first.url}/v1/memories/big/patterns", json={"patterns": patterns}, timeout=60)
        assert r.status_code == 201, r.text
        placement = httpx.get(f"{first.url}/v1/memories/big", timeout=30).json()["placement"]
        assert all(p["file"].startswith(str(data / "nodes")) for p in placement), placement
    finally:
        if first.proc.poll() is None:
            first.stop(signal.SIGTERM)

    second = Run(tmp_path, data, "second", own_dir=False)
    try:
        second.wait_ready()
        details = httpx.get(f"{second.url}/v1/memories/big", timeout=30).json()
        assert details["count"] == 4 and sum(p["patterns"] for p in details["placement"]) == 4, details
        cue = {"vector": [0.9, 0.1, 0.0, 1.0], "k": 1}
        r = httpx.post(f"{second.url}/v1/memories/big/retrieve", json=cue, timeout=60)
        assert r.status_code == 200 and r.json()["matches"][0]["id"] == "a", r.text
    finally:
        if second.proc.poll() is None:
            second.stop(signal.SIGINT)
    assert not second.dir.exists(), "the run's own folder outlived a run that ended well"
    assert (tmp_path / "first").is_dir()  # a --dir given is the user's: kept
