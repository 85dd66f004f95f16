"""Faults of storage, on a real server (capped as in test_attacks.py): each isolated to its memory,
answered with a clear status, and nothing acknowledged lost.

- Five memories damaged on disk (a NaN vector, a vector of the wrong length, a config this
  version refuses, a checkpoint whose header is flipped, one whose weights hold a NaN): the
  service is ready, the healthy memory serves, each damaged one is listed as failed with
  its reason and answers 409 ``memory_failed``; its patterns can still be read out, it can
  be deleted, and a damaged model is repaired by training again.
- The database file emptied beside a checkpoint: the start stops with the reason
  (/readyz 503), and the checkpoint is kept.
- A full disk (a 4 MiB tmpfs; needs root to mount it): stores answer 507
  ``insufficient_storage``, none of them is visible afterwards, after a SIGKILL either, and
  every acknowledged store is there.
"""

from __future__ import annotations

import os
import subprocess

import attacks as A
import attacks_state as S
import httpx
import pytest
from live_server import LiveServer

pytestmark = pytest.mark.slow


def test_damaged_memories_fail_alone_and_an_emptied_database_stops_the_start(tmp_path):
    server = LiveServer(tmp_path / "data", main=True, limit_as=A.LIMIT_AS, **A.SERVER_ENV)
    try:
        S.build_damaged(server)
        r = A.run(A.Target(server), S.damaged_memories)
        assert r["alive"] and r["ready"] == 200 and r["healthy_recall"] == 200, r
        damaged = ("nan-vector", "short-vector", "bad-config", "bad-header", "nan-weights")
        for name in damaged:
            assert r[name] == {"details": 200, "state": "failed", "recall": 409, "code": "memory_failed"}, (
                name,
                r,
            )
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {A.FULL_KEY}"}) as c:
            listed = {m["name"]: m for m in c.get("/v1/memories").json()["memories"]}
            assert "NaN" in listed["nan-vector"]["error"] and "p1" in listed["nan-vector"]["error"]
            assert (
                "wrong length" in listed["short-vector"]["error"] and "p2" in listed["short-vector"]["error"]
            )
            assert "no-such" in listed["bad-config"]["error"]
            assert "checkpoint" in listed["nan-weights"]["error"] and "NaN" in listed["nan-weights"]["error"]
            # A failed memory's patterns can be read out; the store of more is refused with the reason.
            page = c.get("/v1/memories/short-vector/patterns").json()
            assert [p["id"] for p in page["patterns"]] == ["p0", "p1", "p2", "p3"]
            refused = c.post("/v1/memories/short-vector/patterns", json={"patterns": [{"vector": [0.0] * 8}]})
            assert refused.status_code == 409 and "wrong length" in refused.json()["error"]["message"]
            # A damaged model is repaired by training; a damaged memory can be deleted.
            job = c.post("/v1/memories/bad-header/train", json={}).json()
            assert S.wait_job(c, job["id"], 120)["status"] == "succeeded"
            assert c.get("/v1/memories/bad-header").json()["state"] == "ready"
            assert c.post("/v1/memories/bad-header/retrieve", json={"vector": [0.5] * 8}).status_code == 200
            assert c.delete("/v1/memories/nan-vector").status_code == 204
        emptied = S.emptied_database(server, train=False)  # bad-header's new checkpoint is there
        assert emptied["ready"] == 503 and emptied["checkpoints_kept"], emptied
        assert "emptied or replaced" in emptied["reason"], emptied
    finally:
        server.kill()


def _mount_tmpfs(path) -> bool:
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=False).returncode
        == 0
    )


def test_a_full_disk_answers_507_and_keeps_nothing_of_a_failed_write(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if not _mount_tmpfs(mnt):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN): the full-disk test cannot run here")
    try:
        server = LiveServer(mnt / "data", log_dir=tmp_path, main=True, limit_as=A.LIMIT_AS, **A.SERVER_ENV)
        try:
            r = S.disk_full(server, mnt / "ballast")
        finally:
            server.kill()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    refusals = {k: v for k, v in r["answers"].items() if not k.startswith("201")}
    assert set(refusals) == {"507 insufficient_storage"}, r
    assert r["lost"] == 0 and r["ghosts"] == 0 and r["stored_after"] == 201, r
