"""Disk hygiene of the Ray mode on a real local Ray cluster (app/cluster/local.py).

Read replicas' scratch folders (app/cluster/scratch.py): each replica keeps its copy of the checkpoint under its node's ``AMS_NODE_DATA_DIR/scratch``; after
a ``kill -9`` of a replica (Ray starts a new one) the dead one's folder is swept within a
bounded time by the node's actors, a running replica's folder is never touched, and deleting
the memory removes its replicas' folders at once. A local cluster's Ray temp dir
(``/tmp/amsray-*``) is named by its running processes, and one that no process names any more
(its cluster's starter was killed before ``stop``) is swept by the next cluster's start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cluster_helpers import ask, create, create_trained, start_client

from app.cluster.local import TEMP_PREFIX, _command_lines, sweep_stale_temps

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

NODES = ("127.0.0.3", "127.0.0.4")
SWEPT_WITHIN_S = 30.0  # scratch.SWEEP_SECONDS (10) after the probe (2 s), with room for a loaded machine


def _placement(client, name: str, timeout: float = 120.0) -> list[dict]:
    """The memory's placement once every actor is up and has answered a probe."""
    deadline = time.monotonic() + timeout
    while True:
        placement = client.get(f"/v1/memories/{name}").json()["placement"]
        if all(p["state"] == "up" and "pid" in p for p in placement):
            return placement
        assert time.monotonic() < deadline, placement
        time.sleep(0.2)


def test_replica_scratch_goes_with_its_replica_and_is_swept_after_kill_9(tmp_path, ray_local_cluster):
    cluster = ray_local_cluster.get()
    roots = [cluster.node_dir(ip) / "scratch" for ip in NODES]

    def folders() -> set[Path]:
        return {p for root in roots if root.is_dir() for p in root.iterdir()}

    def of(pid: int) -> set[Path]:
        return {p for p in folders() if p.name.startswith(f"replica-{pid}-")}

    gateway = start_client(tmp_path / "gw", cluster)
    patterns = torch.rand(12, 16, generator=torch.Generator().manual_seed(0))
    cue = {"vector": (patterns[3] + 0.05).tolist(), "k": 1}
    try:
        create(gateway, "sweepers", {}, shards=2)  # a shard on each node: they sweep it too
        create_trained(gateway, "pc", patterns, sizes=[8, 16], epochs=5, replicas=2)
        answer = ask(gateway, "pc", "retrieve", cue)
        placed = _placement(gateway, "pc")
        for p in placed:  # one folder each, on its own node, with the checkpoint's copy in it
            (mine,) = of(p["pid"])
            assert mine.parent == cluster.node_dir(p["node_ip"]) / "scratch", (mine, p)
            assert (mine / "owner.json").is_file() and list(mine.rglob("*.safetensors")), sorted(
                mine.rglob("*")
            )
        victim, survivor = placed
        (survivor_dir,) = of(survivor["pid"])
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120.0
        while (r := gateway.post("/v1/memories/pc/retrieve", json=cue)).status_code != 200 or (
            _placement(gateway, "pc")[0]["pid"] == victim["pid"]
        ):
            assert r.status_code in (200, 503), r.text
            assert time.monotonic() < deadline, "the killed replica did not come back"
            time.sleep(0.2)
        assert r.json()["matches"] == answer["matches"]
        replaced = _placement(gateway, "pc")
        killed_at = time.monotonic()
        while of(victim["pid"]):  # swept: by the new replica's start, or the node's actors' probes
            assert time.monotonic() - killed_at < SWEPT_WITHIN_S, sorted(folders())
            time.sleep(0.2)
        assert folders() >= {survivor_dir, *of(replaced[0]["pid"])}  # the running ones untouched
        assert survivor_dir in of(replaced[1]["pid"]) and list(survivor_dir.rglob("*.safetensors"))
        for _ in range(2):  # both replicas, in turn, still answer from their folders
            assert ask(gateway, "pc", "retrieve", cue)["matches"] == answer["matches"]
        assert gateway.delete("/v1/memories/pc").status_code == 204
        assert not of(replaced[0]["pid"]) and not of(replaced[1]["pid"])  # removed before the answer
        assert gateway.delete("/v1/memories/sweepers").status_code == 204
    finally:
        gateway.__exit__(None, None, None)


def test_stale_ray_temp_dirs_are_swept_and_a_live_clusters_is_kept(tmp_path, ray_local_cluster):
    cluster = ray_local_cluster.get()
    assert cluster.temp.startswith(f"/tmp/{TEMP_PREFIX}") and Path(cluster.temp).is_dir()
    # what keeps a live cluster's temp dir: its Ray processes name it on their command lines
    assert sum(cluster.temp in line for line in _command_lines()) >= 3  # GCS and a raylet per node
    crashed, live, starting = (tmp_path / f"{TEMP_PREFIX}{n}" for n in ("crashed", "live", "starting"))
    for folder in (crashed, live, starting):
        (folder / "session_latest" / "logs").mkdir(parents=True)
    old = time.time() - 3600
    for folder in (crashed, live):
        os.utime(folder, (old, old))
        os.utime(folder / "session_latest", (old, old))
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--temp-dir={live}"])
    try:
        deadline = time.monotonic() + 30.0
        while not any(str(live) in line for line in _command_lines()):
            assert user.poll() is None and time.monotonic() < deadline, user.returncode
            time.sleep(0.05)
        assert sweep_stale_temps(tmp_path) == [crashed]
        assert not crashed.exists() and live.is_dir() and starting.is_dir()
    finally:
        user.kill()
        user.wait()
