"""The Ray mode's test and script helpers (tests/cluster_helpers.py), without a cluster:
``start_client`` fails at once, saying why, when the service's recovery has failed (it waits
its long timeout only for a start still under way); ``work_folder`` removes a script's temp
folder unless asked to keep it or the run failed."""

from __future__ import annotations

import time

import pytest
from cluster_helpers import start_client, work_folder

from app.cluster.storage import CLUSTER_FILE


def test_a_failed_recovery_fails_at_once_with_its_error_and_log(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / CLUSTER_FILE).write_bytes(b"")  # a Ray mode's data dir: one process refuses it
    start = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        start_client(data, timeout=300.0)
    assert time.monotonic() - start < 30.0  # not the 300 s timeout
    message = str(failed.value)
    assert "the service did not start: recovery failed: RuntimeError" in message
    assert "holds memories of the Ray mode" in message
    assert "--- its log ---" in message and "Traceback" in message  # the log's tail, traceback too


def test_a_scripts_work_folder_is_removed_unless_kept_or_failed(capsys):
    with work_folder("ams-test-work-") as done:
        (done / "ray").mkdir()
    assert not done.exists()
    with work_folder("ams-test-work-", keep=True) as kept:
        pass
    with pytest.raises(KeyboardInterrupt), work_folder("ams-test-work-") as failed:
        raise KeyboardInterrupt
    try:
        assert kept.is_dir() and failed.is_dir()
        assert capsys.readouterr().err.splitlines() == [
            f"kept {kept} (--keep)",
            f"kept {failed} for inspection (the run failed)",
        ]
    finally:
        kept.rmdir()
        failed.rmdir()
