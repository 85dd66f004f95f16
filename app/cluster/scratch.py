"""Scratch folders of the Ray mode's actors on a node: claimed, released, and swept when orphaned.

A ``MemoryReplica`` keeps a copy of its memory's checkpoint files (a pc model can be
hundreds of MB) and a SQLite file in a scratch folder of its own. Every such folder lives
under one known root per node (``scratch_root``): ``$AMS_NODE_DATA_DIR/scratch`` where the
node's environment sets ``AMS_NODE_DATA_DIR``, else ``<temp dir>/ams-scratch-<uid>``.

A folder is ``<role>-<pid>-<token>`` with an ``owner.json`` written before anything else:
the owner's pid, its start time (clock ticks since boot, ``/proc/<pid>/stat``), the
machine's host name and boot id, and the owner's pid namespace. Its owner removes it on an
orderly exit (``release``: the memory deleted, the actor terminated gracefully, the
interpreter exiting). A process killed outright (``kill -9``, a lost node, a stopped
cluster) cannot, so ``sweep`` removes every folder whose owner is gone: the pid no longer
runs, or runs a process that started at another time (the pid was reused), or the machine
rebooted since. Every actor that starts on the node sweeps, and running ones sweep again at
most every ``SWEEP_SECONDS`` (from their health probe), so orphans do not accumulate.

A folder is only judged by a process of its owner's machine (host name: a root on a
filesystem other machines share is safe) and, but for a reboot, where the owner's pid means
something: the same boot and pid namespace (a container sharing the folder with another is
left alone unless the machine rebooted). A folder without a readable ``owner.json`` is
removed once older than ``UNCLAIMED_GRACE_S`` (its owner died between creating it and
writing the file). Where ``/proc`` is missing (not Linux), nothing is swept: folders are
still released on exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "OWNER_FILE",
    "SWEEP_SECONDS",
    "UNCLAIMED_GRACE_S",
    "Scratch",
    "owner_gone",
    "process_start",
    "scratch_root",
    "sweep",
    "sweep_now_and_then",
]

log = logging.getLogger("app.cluster")

OWNER_FILE = "owner.json"
SWEEP_SECONDS = 10.0  # a running actor's sweeps are at least this far apart
UNCLAIMED_GRACE_S = 60.0  # a folder without its owner file is an orphan once this old
_PROC = Path("/proc")


def scratch_root() -> Path:
    """This node's scratch root: ``$AMS_NODE_DATA_DIR/scratch``, else ``<temp dir>/ams-scratch-<uid>``."""
    node_dir = os.environ.get("AMS_NODE_DATA_DIR")
    if node_dir:
        return Path(node_dir) / "scratch"
    return Path(tempfile.gettempdir()) / f"ams-scratch-{os.getuid()}"


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or None if it does not run (or
    has exited and awaits its parent: a zombie)."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of stat; fields[0] is field 3 (the state)


def _owner_here() -> dict[str, object]:
    pid = os.getpid()
    return {
        "pid": pid,
        "start": process_start(pid),
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pidns": _pid_namespace(),
    }


def owner_gone(owner: dict[str, object]) -> bool:
    """Whether the process an ``owner.json`` names has certainly ended (False where this
    process cannot tell: another machine, another pid namespace of the same boot, no ``/proc``)."""
    boot = _boot_id()
    if boot is None or owner.get("start") is None or owner.get("host") != socket.gethostname():
        return False
    if owner.get("boot") != boot:
        return True  # the machine rebooted since: every process of then has ended
    if owner.get("pidns") != _pid_namespace():
        return False  # its pid means nothing here
    return process_start(int(owner["pid"])) != owner["start"]  # type: ignore[call-overload]


def _orphaned(folder: Path, now: float) -> bool:
    """Whether ``folder``'s owner is gone; an owner file that cannot be read or names no
    usable pid counts as none (orphaned once the folder is ``UNCLAIMED_GRACE_S`` old)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        if isinstance(owner, dict):
            return owner_gone(owner)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return now - folder.stat().st_mtime > UNCLAIMED_GRACE_S
    except OSError:  # removed meanwhile
        return False


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the folders under ``root`` (default ``scratch_root()``) whose owner is gone;
    returns them. Never raises: a folder that cannot be removed is logged and left."""
    root = scratch_root() if root is None else root
    if _boot_id() is None:
        return []
    removed = []
    now = time.time()
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:  # no root yet
        return []
    for folder in folders:
        if _orphaned(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                log.warning("could not remove the orphaned scratch folder %s", folder)
            else:
                removed.append(folder)
    if removed:
        log.info("removed %d orphaned scratch folders under %s", len(removed), root)
    return removed


_last_sweep = 0.0
_sweep_lock = threading.Lock()


def sweep_now_and_then(root: Path | None = None) -> None:
    """``sweep`` on a thread of its own, at most once per ``SWEEP_SECONDS`` in this process
    (from health probes, which must not wait for a large orphan's removal)."""
    global _last_sweep
    with _sweep_lock:
        if time.monotonic() - _last_sweep < SWEEP_SECONDS:
            return
        _last_sweep = time.monotonic()
    threading.Thread(target=sweep, args=(root,), name="ams-scratch-sweep", daemon=True).start()


class Scratch:
    """A scratch folder of this process under ``root`` (default ``scratch_root()``), made after
    sweeping the root's orphans; removed by ``release()``, at interpreter exit at the latest.

    Arguments:
        role: the folder name's prefix (``replica``).
    """

    def __init__(self, role: str, root: Path | None = None) -> None:
        root = scratch_root() if root is None else root
        root.mkdir(parents=True, exist_ok=True)
        sweep(root)
        self.path = root / f"{role}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path.mkdir()
        staged = self.path / f".{OWNER_FILE}.tmp"
        staged.write_text(json.dumps(_owner_here()))
        staged.replace(self.path / OWNER_FILE)  # whole or absent: never a torn owner file
        atexit.register(self.release)

    def release(self) -> None:
        """Remove the folder (idempotent)."""
        atexit.unregister(self.release)
        shutil.rmtree(self.path, ignore_errors=True)
