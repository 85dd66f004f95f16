"""``python -m app.cluster.local run``'s parts that need no Ray: where it keeps the worker
nodes' shard files, and that a service which fails to start fails the run (and so
``make run-cluster``) with its exit code. The whole run, twice over one data dir and stopped
by SIGTERM and SIGINT, is tests/e2e/test_cluster_run.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.cluster.local import _serve, run_data_dir


def test_shard_files_live_beside_the_catalog(tmp_path, monkeypatch):
    assert run_data_dir({"AMS_DATA_DIR": str(tmp_path / "d")}) == tmp_path / "d" / "nodes"
    monkeypatch.chdir(tmp_path)
    assert run_data_dir({}) == tmp_path / "data" / "nodes"  # the service's default ./data
    assert run_data_dir({"AMS_DATA_DIR": "rel"}) == tmp_path / "rel" / "nodes"  # absolute for the nodes


def test_a_service_that_cannot_start_fails_the_run(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("AMS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AMS_PORT", "70000")  # refused by the service's settings at start
    cluster = SimpleNamespace(env={"AMS_RAY_ADDRESS": "127.0.0.2:1"})  # never reached
    assert _serve(cluster) not in (0, None)
    assert "AMS_PORT" in capfd.readouterr().err  # the service said why


def test_a_second_signal_does_not_cut_the_stop_short(tmp_path, monkeypatch):
    """A second Ctrl-C or SIGTERM while ``stop`` ends the nodes (``run`` restores its
    handlers first; a user presses Ctrl-C twice) must not leave the cluster half stopped."""
    import os
    import signal

    import app.cluster.local as local

    temp = tmp_path / "amsray-x"
    temp.mkdir()
    cluster = local.LocalCluster(tmp_path / "c", temp=str(temp), groups=[12345], nodes={"a": 12345})
    (tmp_path / "c").mkdir()
    ended = []

    def end(pids, grace):  # the signal arrives while the nodes are being ended
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        ended.append(pids)

    monkeypatch.setattr(local, "_end", end)
    monkeypatch.setattr(local, "_processes", lambda: {})
    # As `run` leaves them (whatever the test process inherited: a shell's background job
    # ignores SIGINT): Ctrl-C raises KeyboardInterrupt, SIGTERM too.
    previous = (
        signal.signal(signal.SIGTERM, local._interrupt),
        signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    try:
        cluster.stop()
        restored = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    except KeyboardInterrupt:
        pytest.fail("a signal during stop cut it short")
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert ended and cluster.groups == [] and not temp.exists()
    assert local.LocalCluster.load(tmp_path / "c").groups == []  # saved as stopped
    assert restored == (local._interrupt, signal.default_int_handler)  # handlers back after
