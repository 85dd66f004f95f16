"""A shard whose file is missing, or is another shard's, never comes back empty (docs/scale.md,
"Storage"), on a real local Ray cluster (app/cluster/local.py).

Its file moved away (a wiped disk, a wrong AMS_NODE_DATA_DIR) or replaced by another shard's,
and its process killed: Ray restarts the shard, which makes no file in its place and
refuses to serve; the memory's recalls and the stores that need that shard answer 503
``shard_unavailable`` naming the node and the file, /readyz is 503 naming it, the memory's
placement shows the fault and its details ``count_complete: false``, the gateway logs it
at error level, and another memory serves as usual. Its own file put back, the shard finds
it again (no restart needed) and every pattern is there. The same in both storage modes
(``AMS_SHARD_STORAGE`` node and shared).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from ams_client._output import memory_text
from ams_client.models import Memory
from cluster_helpers import ask, create, start_client, store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _wait(client, name: str, done, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        placement = client.get(f"/v1/memories/{name}").json()["placement"]
        if done(placement, client.get("/readyz")):
            return placement
        assert time.monotonic() < deadline, placement
        time.sleep(0.2)


def _up(placement, ready) -> bool:
    return ready.status_code == 200 and all(p["state"] == "up" for p in placement)


def _refused(client, name: str, file: str, node_ip: str | None, why: str, vectors) -> dict:
    """Every way the memory's fault must show while shard 1's file is ``why`` (on ``node_ip``;
    None: wherever Ray restarted it); the memory's details."""
    placement = _wait(client, name, lambda p, _: "fault" in p[1])
    node_ip = node_ip or placement[1]["node_ip"]
    assert placement[1]["state"] == "down" and placement[1]["file"] == file, placement[1]
    assert why in placement[1]["fault"] and f"node {node_ip}" in placement[1]["fault"]
    assert "patterns" not in placement[1] and placement[0]["state"] == "up"
    r = client.post(f"/v1/memories/{name}/retrieve", json={"vector": vectors[7].tolist(), "k": 1})
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "shard_unavailable" and r.headers["retry-after"] == "30"
    assert (
        f"memory {name!r}: shard 1 of 2 refuses to serve on node {node_ip}: its file {file}"
        in error["message"]
    )
    assert error["details"] == {
        "shard": 1,
        "file": file,
        "node_ip": node_ip,
        "reason": "shard_file_missing" if why == "is missing" else "shard_file_foreign",
    }
    metrics = client.get("/metrics")
    assert (
        metrics.status_code == 200
        and f'ams_shard_up{{index="1",memory="{name}",role="shard"}} 0.0' in metrics.text
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503 and file in ready.json()["error"]["message"] and why in ready.text
    body = {
        "patterns": [{"id": f"n{i}", "vector": vectors[i].tolist()} for i in range(20)]
    }  # some on shard 1
    r = client.post(f"/v1/memories/{name}/patterns", json=body)
    assert r.status_code == 503 and file in r.json()["error"]["message"], r.text
    assert "stored_unknown" not in r.json()["error"]["details"]  # nothing half-stored anywhere
    details = client.get(f"/v1/memories/{name}").json()
    assert details["count_complete"] is False  # the count cannot vouch for shard 1's patterns
    assert [m for m in client.get("/v1/memories").json()["memories"] if m["name"] == name] == [details]
    shown = memory_text(Memory.from_json(details))  # what `ams memories get` prints
    assert f"count {details['count']} (incomplete: 1 shard down)" in " ".join(shown.split()), shown
    return details


def test_a_shard_without_its_own_file_refuses_to_serve_until_it_is_back(
    tmp_path, ray_local_cluster, fashion_vectors
):
    vectors = fashion_vectors[:80]
    errors = _Errors()
    logging.getLogger("app.cluster").addHandler(errors)
    gateway = start_client(tmp_path / "gw", ray_local_cluster.get())
    try:
        create(gateway, "f", {}, shards=2)
        create(gateway, "ok", {}, shards=1)
        store(gateway, "f", vectors[:60])
        store(gateway, "ok", vectors[60:], start=60)
        placed = _wait(gateway, "f", _up)
        ids = sorted(p["id"] for p in gateway.get("/v1/memories/f/patterns?limit=100").json()["patterns"])
        victim, other = placed[1], placed[0]
        folder, aside = Path(victim["file"]).parent, Path(str(Path(victim["file"]).parent) + ".aside")

        # 1. its file gone (moved aside with its WAL), its process killed: Ray restarts it
        folder.rename(aside)
        os.kill(victim["pid"], signal.SIGKILL)
        _refused(gateway, "f", victim["file"], victim["node_ip"], "is missing", vectors)
        assert not folder.exists()  # nothing made in its place
        assert any(victim["file"] in m and "is missing" in m for m in errors.messages), errors.messages
        assert (
            ask(gateway, "ok", "retrieve", {"vector": vectors[65].tolist(), "k": 1})["matches"][0]["id"]
            == "p65"
        )

        aside.rename(folder)  # put back: the shard finds it at the next probe, no restart needed
        back = _wait(gateway, "f", _up)
        assert (
            back[1]["patterns"] == victim["patterns"] and gateway.get("/v1/memories/f").json()["count"] == 60
        )

        # 2. replaced by the other shard's file (copied with its WAL), its process killed again
        folder.rename(aside)
        shutil.copytree(Path(other["file"]).parent, folder)
        os.kill(back[1]["pid"], signal.SIGKILL)
        _refused(gateway, "f", victim["file"], victim["node_ip"], "another shard's file", vectors)

        shutil.rmtree(folder)
        aside.rename(folder)
        _wait(gateway, "f", _up)
        listed = gateway.get("/v1/memories/f/patterns?limit=100").json()["patterns"]
        assert sorted(p["id"] for p in listed) == ids  # every pattern back, nothing of the refused stores
        assert gateway.get("/v1/memories/f").json()["count"] == 60
        for i in (7, 31, 58):
            body = {"vector": vectors[i].tolist(), "k": 1}
            assert ask(gateway, "f", "retrieve", body)["matches"][0]["id"] == f"p{i}"

        # 3. the gateway restarted and the shard started anew (not a Ray restart: its recorded
        # file must exist), its file gone meanwhile
        import ray

        ray.kill(gateway.app.state.service.registry.get("f").shards.handles[1], no_restart=True)
        gateway.__exit__(None, None, None)
        folder.rename(aside)
        gateway = start_client(  # (new memories in shared storage: part 4)
            tmp_path / "gw",
            ray_local_cluster.get(),
            until=lambda r: victim["file"] in r.text,
            shard_storage="shared",
        )
        details = _refused(gateway, "f", victim["file"], victim["node_ip"], "is missing", vectors)
        assert details["count"] == other["patterns"]  # never heard from shard 1 since it started
        assert not folder.exists()
        aside.rename(folder)
        _wait(gateway, "f", _up)
        details = gateway.get("/v1/memories/f").json()
        assert (details["count"], details["count_complete"]) == (60, True)
        assert (
            ask(gateway, "f", "retrieve", {"vector": vectors[7].tolist(), "k": 1})["matches"][0]["id"] == "p7"
        )
        assert gateway.delete("/v1/memories/f").status_code == 204
        assert not folder.exists()  # deleting the memory still removes its files

        # 4. AMS_SHARD_STORAGE=shared (files under AMS_SHARD_DATA_DIR, shards not pinned): the
        # same refusal, wherever Ray restarts the shard
        create(gateway, "sh", {}, shards=2)
        store(gateway, "sh", vectors[:60])
        victim = _wait(gateway, "sh", _up)[1]
        folder = Path(victim["file"]).parent
        aside = folder.with_name("shard-1.aside")
        assert folder.is_relative_to(tmp_path / "gw" / "shards"), victim["file"]  # AMS_DATA_DIR/shards
        folder.rename(aside)
        os.kill(victim["pid"], signal.SIGKILL)
        _refused(gateway, "sh", victim["file"], None, "is missing", vectors)
        assert not folder.exists()
        aside.rename(folder)
        assert _wait(gateway, "sh", _up)[1]["patterns"] == victim["patterns"]
        assert gateway.get("/v1/memories/sh").json()["count_complete"] is True
        for name in ("sh", "ok"):  # (their actors would hold the shared cluster's CPUs)
            assert gateway.delete(f"/v1/memories/{name}").status_code == 204
    finally:
        logging.getLogger("app.cluster").removeHandler(errors)
        gateway.__exit__(None, None, None)


def test_a_shard_whose_file_cannot_be_loaded_closes_it(tmp_path, monkeypatch, ray_local_cluster):
    """A shard file that passes the identity check but fails to load (a damaged partition)
    is closed again: the shard looks again at every health probe (every 2 s), and each look
    must not leave a connection to it open. (Here, not in tests/unit: importing the shard
    module imports Ray, which must come after the test cluster set RAY_AUTH_MODE.)"""
    ray_local_cluster.get()
    import app.cluster.shard as shard_module
    from app.cluster.storage import ShardStorage, open_shard_file
    from app.storage import NewPattern

    def _shard_with_patterns(folder, token):
        storage, found = open_shard_file(folder, token, may_create=True)
        record = storage.open_memory("m", "hopfield", (4,), False, {})
        vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
        storage.add_patterns_at(record.id, [NewPattern(f"p{i}", v) for i, v in enumerate(vectors)], [1, 2, 3])
        storage.close()
        return found

    monkeypatch.setenv("AMS_NODE_DATA_DIR", str(tmp_path / "node"))
    monkeypatch.setattr(shard_module, "restarted", lambda: False)
    token = _shard_with_patterns(tmp_path / "s0", "a" * 32)
    spec = {"name": "m", "shape": [4], "text": False, "config": {}, "shard": 0, "shards": 1}
    spec |= {"data_dir": str(tmp_path / "s0"), "device": "cpu", "threads": 1, "memory_budget": 1 << 20}
    spec |= {"file_token": token, "create_file": False}
    opened, closed = [], []
    real_close = ShardStorage.close

    def spy_close(self):
        closed.append(self)
        real_close(self)

    def damaged(record, device):
        opened.append(record)
        raise ValueError("a damaged partition")

    monkeypatch.setattr(ShardStorage, "close", spy_close)
    monkeypatch.setattr(shard_module, "HopfieldMemory", damaged)
    with pytest.raises(ValueError, match="damaged"):
        shard_module.MemoryShard(spec)
    assert len(opened) == 1 and len(closed) == 1  # the file was opened, and closed again
