"""Scratch folders of the Ray mode's actors (app/cluster/scratch.py), with real processes: an
owner's folder lives as long as it does, is removed on its orderly exit, and is swept once
it was killed outright; a reused pid, a reboot, a folder never claimed and folders of other
machines or containers are told apart.
(The same on a real cluster: tests/reliability/test_cluster_scratch.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from app.cluster import scratch
from app.cluster.scratch import OWNER_FILE, UNCLAIMED_GRACE_S, Scratch, process_start, scratch_root, sweep

# A child process that claims a folder like an actor does, says where, and waits for stdin
# (the module alone, loaded from its file: no torch or app import to wait for).
CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("scratch", sys.argv[1])
scratch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scratch)
print(scratch.Scratch("replica", scratch.Path(sys.argv[2])).path, flush=True)
sys.stdin.readline()
"""


def _child(root: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, scratch.__file__, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, Path(proc.stdout.readline().strip())


def test_a_folder_lives_with_its_owner_and_goes_with_it(tmp_path):
    root = tmp_path / "scratch"
    killed, killed_dir = _child(root)
    exiting, exiting_dir = _child(root)
    assert killed_dir.parent == root and killed_dir.name.startswith(f"replica-{killed.pid}-")
    owner = json.loads((killed_dir / OWNER_FILE).read_text())
    assert owner["pid"] == killed.pid and owner["start"] == process_start(killed.pid)
    (killed_dir / "pc.safetensors").write_bytes(b"x" * 1000)  # what a replica keeps there
    assert sweep(root) == [] and killed_dir.is_dir() and exiting_dir.is_dir()  # both alive
    exiting.communicate("\n", timeout=30)  # an orderly exit removes its own folder
    assert exiting.returncode == 0 and not exiting_dir.exists()
    killed.send_signal(signal.SIGKILL)  # kill -9 cannot: the next sweep does
    killed.wait(30)
    assert sweep(root) == [killed_dir] and not killed_dir.exists()


def test_a_new_owner_sweeps_orphans_and_keeps_the_living(tmp_path):
    root = tmp_path / "scratch"
    mine = Scratch("replica", root)  # this process: alive
    orphan, orphan_dir = _child(root)
    orphan.kill()
    orphan.wait(30)
    newer = Scratch("replica", root)  # its start sweeps
    assert not orphan_dir.exists() and mine.path.is_dir() and newer.path.is_dir()
    newer.release()
    newer.release()  # idempotent
    assert not newer.path.exists() and mine.path.is_dir()
    mine.release()


def _fake(root: Path, name: str, **owner) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    here = {"pid": os.getpid(), "start": process_start(os.getpid())}
    here |= {"host": socket.gethostname(), "boot": scratch._boot_id(), "pidns": scratch._pid_namespace()}
    (folder / OWNER_FILE).write_text(json.dumps(here | owner))
    return folder


def test_a_reused_pid_a_reboot_and_an_unclaimed_folder(tmp_path):
    root = tmp_path / "scratch"
    alive = _fake(root, "replica-alive")  # this very process
    reused = _fake(root, "replica-reused", start=process_start(os.getpid()) - 1)  # pid now another's
    rebooted = _fake(root, "replica-rebooted", boot="another-boot")
    elsewhere = _fake(root, "replica-elsewhere", pidns="pid:[1]", pid=999_999_999)  # another container
    remote = _fake(root, "replica-remote", host="another-host", boot="its-boot")  # a shared filesystem
    fresh = root / "replica-fresh"  # its owner is writing owner.json just now
    fresh.mkdir()
    stale = root / "replica-stale"  # its owner died before writing it
    stale.mkdir()
    old = time.time() - UNCLAIMED_GRACE_S - 5
    os.utime(stale, (old, old))
    assert sorted(sweep(root)) == [rebooted, reused, stale]
    assert not rebooted.exists() and not reused.exists() and not stale.exists()
    assert alive.is_dir() and elsewhere.is_dir() and remote.is_dir() and fresh.is_dir()
    assert sweep(tmp_path / "missing") == []


def test_the_root_is_the_node_data_dir_or_a_temp_root(tmp_path, monkeypatch):
    monkeypatch.setenv("AMS_NODE_DATA_DIR", str(tmp_path / "node"))
    assert scratch_root() == tmp_path / "node" / "scratch"
    monkeypatch.delenv("AMS_NODE_DATA_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # (gettempdir caches its answer)
    assert scratch_root() == tmp_path / f"ams-scratch-{os.getuid()}"


def test_a_malformed_owner_file_is_an_unclaimed_folder(tmp_path):
    """``sweep`` never raises (every actor start runs it): an owner file of the right JSON
    type but without a usable pid counts as no owner file at all."""
    root = tmp_path / "scratch"
    no_pid = _fake(root, "replica-nopid")
    owner = json.loads((no_pid / OWNER_FILE).read_text())
    (no_pid / OWNER_FILE).write_text(json.dumps({k: v for k, v in owner.items() if k != "pid"}))
    text_pid = _fake(root, "replica-textpid", pid="twelve")
    assert sweep(root) == []  # recent: its owner may still be writing it
    old = time.time() - UNCLAIMED_GRACE_S - 5
    for folder in (no_pid, text_pid):
        os.utime(folder, (old, old))
    assert sorted(sweep(root)) == [no_pid, text_pid]
