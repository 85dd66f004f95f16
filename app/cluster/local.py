"""A real multi-process Ray cluster on this machine, for development, tests and benchmarks.

    python -m app.cluster.local run  [--workers 2] [--cpus 4]   # cluster + service; Ctrl-C (or SIGTERM) stops both
    python -m app.cluster.local start --dir DIR [--workers 2] [--data DATA]   # prints the exports
    python -m app.cluster.local stop --dir DIR

A head node (no CPUs: it runs Ray's control plane and the gateway connects to it) and
``workers`` worker nodes (``cpus`` logical CPUs each: shards and replicas run there), each
a ``ray start`` of its own with free ports on a loopback address of its own (the head
``NODE_IP``, worker ``k`` ``worker_ip(k)``: distinct node addresses, as on a real cluster,
so that a shard pinned to a node stays there), token authentication with a fresh token, a
small object store, and everything under ``DIR``. Worker ``k`` keeps its shards' files in
its own data dir, ``DIR/nodes/<its address>`` (``AMS_NODE_DATA_DIR`` in its environment;
``--data`` moves them): a restarted cluster with the same ``--data`` finds them again. Each node is started in a
process group of its own, and ``stop`` ends exactly those groups and their descendants (Ray's
workers, which take groups of their own); never ``ray stop``, which would end every Ray
process of the user on the machine.

``run`` keeps the worker nodes' data dirs beside the service's catalog, in
``$AMS_DATA_DIR/nodes`` (default ``./data/nodes``), so that the next ``run`` over the same
data dir finds every shard's file again (``--data`` moves them). It runs the service in a
process group of its own and forwards one SIGINT or SIGTERM to it: the service shuts down
gracefully, then the cluster is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["LocalCluster"]

_RAY = str(Path(sys.executable).with_name("ray"))
TEMP_PREFIX = "amsray-"
STALE_TEMP_S = 600.0  # a Ray temp dir no process names is left this long (a cluster starting)
# Every node's address: loopback, so nothing leaves the machine, but not 127.0.0.1, which Ray
# replaces by the machine's outside address (and refuses a second node on, with
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). Linux routes all of 127.0.0.0/8 to the loopback.
NODE_IP = "127.0.0.2"


def worker_ip(index: int) -> str:
    """The loopback address of worker node ``index`` (0-based): 127.0.0.3, 127.0.0.4, ..."""
    return f"127.0.0.{3 + index}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # free on every address
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A Ray cluster of processes on this machine (see the module docstring).

    Attributes:
        root: where its temp dir, logs and ``cluster.json`` live.
        workers, cpus: worker nodes and logical CPUs per worker.
        data: the parent of each worker node's data dir (default ``root/nodes``).
        address: the head's address (NODE_IP:port) once started.
        token: the cluster's auth token (a fresh one when not given).
        groups: process group ids of the head and each worker, in start order.
        nodes: node address -> its process group.
    """

    root: Path
    workers: int = 2
    cpus: int = 4
    object_store_mb: int = 128
    data: str = ""
    address: str = ""
    token: str = ""
    temp: str = ""  # Ray's temp dir: short, as its unix sockets' paths must be under 108 bytes
    groups: list[int] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """What a process joining this cluster needs in its environment (the gateway too)."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "AMS_RAY_ADDRESS": self.address,
            "AMS_RAY_NODE_IP": NODE_IP,
        }

    def node_dir(self, ip: str) -> Path:
        """The data dir of the worker node at address ``ip`` (its ``AMS_NODE_DATA_DIR``)."""
        return Path(self.data or self.root / "nodes") / ip

    def _launch(self, worker: int | None) -> tuple[subprocess.Popen, Path]:
        """Start one node's ``ray start`` (it returns once the node runs) in a process group:
        the head (``worker`` None) or worker node ``worker``."""
        head = worker is None
        ip = NODE_IP if head else worker_ip(worker)
        ports = {
            "--node-manager-port": _free_port(),
            "--object-manager-port": _free_port(),
            "--dashboard-agent-listen-port": _free_port(),
            "--dashboard-agent-grpc-port": _free_port(),
            "--metrics-export-port": _free_port(),
            "--runtime-env-agent-port": _free_port(),
        }
        args = [_RAY, "start", f"--node-ip-address={ip}", "--disable-usage-stats"]
        args += [f"{k}={v}" for k, v in ports.items()]
        args += [f"--object-store-memory={self.object_store_mb * 1024 * 1024}"]
        if head:
            port = _free_port()
            self.address = f"{NODE_IP}:{port}"
            args += [
                "--head",
                f"--port={port}",
                f"--ray-client-server-port={_free_port()}",
                f"--dashboard-port={_free_port()}",
                "--include-dashboard=false",
                f"--temp-dir={self.temp}",
                "--num-cpus=0",
            ]
        else:
            args += [f"--address={self.address}", f"--num-cpus={self.cpus}"]
        env = {**os.environ, **self.env}
        env.pop("AMS_NODE_DATA_DIR", None)
        if not head:  # its actors' processes inherit it: a shard's files go there
            env["AMS_NODE_DATA_DIR"] = str(self.node_dir(ip))
        path = self.root / f"node-{'head' if head else ip}-{time.monotonic_ns()}.log"
        log = open(path, "wb")  # noqa: SIM115 (kept by the child)
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(proc.pid)  # its daemons keep its process group
        self.nodes[ip] = proc.pid
        return proc, path

    def _start_node(self, worker: int | None, tries: int = 3) -> None:
        """Start one node. A ``ray start`` that fails (Ray waits only 30 s for a new raylet to
        register, which a loaded machine can miss) is ended and started again, up to ``tries``
        times in all."""
        for _ in range(tries):
            proc, path = self._launch(worker)
            code = proc.wait(timeout=180)
            if code == 0:
                self.save()
                return
            self._end_group(proc.pid, 2.0)
        raise RuntimeError(f"ray start failed {tries} times: see {path}")

    def _end_group(self, group: int, grace: float) -> None:
        _end(_descendants({pid for pid, pgid in _processes().items() if pgid == group}), grace)
        self.groups.remove(group)
        self.nodes = {ip: g for ip, g in self.nodes.items() if g != group}

    def stop_worker(self, index: int, grace: float = 1.0) -> None:
        """End every process of worker node ``index`` (as if its machine were lost; its data
        dir stays)."""
        self._end_group(self.nodes[worker_ip(index)], grace)
        self.save()

    def start_worker(self, index: int) -> None:
        """Start worker node ``index`` again (at its address, with its data dir)."""
        self._start_node(index)

    def start(self) -> LocalCluster:
        """Start the head and the workers; wait until every worker has joined."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = self.token or secrets.token_hex(24)  # (a restart keeps the cluster's token)
        sweep_stale_temps()
        self.temp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir="/tmp")
        try:
            self._start_node(None)
            for k in range(self.workers):  # one at a time: two raylets registering at once
                self._start_node(k)  # made one of them miss Ray's deadline
            self._wait_for_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_workers(self, timeout: float = 120.0) -> None:
        code = (
            "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', _node_ip_address=sys.argv[2]);"
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-c", code, self.address, NODE_IP],
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=120,
            )
            if out.returncode == 0 and int(out.stdout.split()[-1]) >= self.workers + 1:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the cluster's {self.workers} workers did not all join within {timeout:g} s")

    def save(self) -> None:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.root / "cluster.json").write_text(json.dumps(data))

    @classmethod
    def load(cls, root: Path) -> LocalCluster:
        data = json.loads((root / "cluster.json").read_text())
        data["root"] = Path(data["root"])
        return cls(**data)

    def stop(self, grace: float = 5.0) -> None:
        """End this cluster's processes (its process groups and every descendant of theirs),
        then remove Ray's temp dir (sockets, session logs: nothing of it is read once every
        process has ended; the nodes' data dirs under ``root`` stay). A Ctrl-C or SIGTERM that
        arrives meanwhile is ignored: a second one must not leave the cluster half stopped."""
        with _signals_held():
            _end(_descendants({pid for pid, pgid in _processes().items() if pgid in self.groups}), grace)
            self.groups, self.nodes = [], {}
            self.save()
            if self.temp:
                shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sweep_stale_temps(root: Path = Path("/tmp"), older_than: float = STALE_TEMP_S) -> list[Path]:
    """Remove the Ray temp dirs of local clusters that are gone (their starter was killed
    before ``stop``): ``amsray-*`` under ``root``, of this user, untouched for ``older_than``
    seconds, and named by no running process (Ray's GCS, raylets and agents carry their temp
    dir on their command lines). Returns what it removed."""
    named = "\0".join(_command_lines())
    removed = []
    for folder in root.glob(f"{TEMP_PREFIX}*"):
        try:
            info = folder.lstat()
        except OSError:  # gone meanwhile
            continue
        stale = time.time() - max(info.st_mtime, _newest_entry(folder)) > older_than
        if folder.is_dir() and info.st_uid == os.getuid() and stale and str(folder) not in named:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():  # (a folder rmtree could not remove is not reported removed)
                removed.append(folder)
    return removed


def _newest_entry(folder: Path) -> float:
    """The latest modification time of ``folder``'s direct entries (0 when none)."""
    try:
        return max((p.lstat().st_mtime for p in folder.iterdir()), default=0.0)
    except OSError:
        return 0.0


def _command_lines() -> list[str]:
    """Every running process's command line (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:  # gone meanwhile
                continue
    return out


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the block (in the main thread, the only one that may set
    handlers; elsewhere nothing changes), their handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _end(pids: set[int], grace: float) -> None:
    """SIGTERM to ``pids``, then SIGKILL to those alive after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)


def _processes() -> dict[int, int]:
    """pid -> process group of every process (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            out[int(entry.name)] = int(fields[2])  # state, ppid, pgrp, ...
    return out


def _descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its parent reaps it)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.cluster.local", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "run"])
    parser.add_argument("--dir", type=Path, default=None, help="cluster folder (default: a new temp folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=4, help="logical CPUs per worker")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="worker nodes' data dirs (default: run, $AMS_DATA_DIR/nodes; start, DIR/nodes)",
    )
    args = parser.parse_args()
    root = args.dir or Path(f"/tmp/ams-ray-{os.getpid()}")
    if args.action == "stop":
        LocalCluster.load(root).stop()
        return
    if args.data:
        data = str(args.data.resolve())
    else:  # run: beside the service's catalog; start: DIR/nodes
        data = str(run_data_dir(os.environ)) if args.action == "run" else ""
    if args.action == "run":  # a SIGTERM while the nodes start stops them as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    cluster = LocalCluster(root, workers=args.workers, cpus=args.cpus, data=data).start()
    if args.action == "start":
        for key, value in cluster.env.items():
            print(f"export {key}={value}")
        print(f"# stop with: python -m app.cluster.local stop --dir {root}", file=sys.stderr)
        return
    try:
        code = _serve(cluster)
    finally:
        cluster.stop()
    if code:  # the service failed (a port in use, a bad setting): so does `make run-cluster`
        print(f"# the cluster's node logs are kept in {root}", file=sys.stderr)
        sys.exit(code)
    if args.dir is None:  # a folder of this run only (node logs, cluster.json): the data is elsewhere
        shutil.rmtree(root, ignore_errors=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_data_dir(environ: dict[str, str] | os._Environ) -> Path:
    """Where ``run`` keeps the worker nodes' data dirs without ``--data``: ``nodes`` in the
    service's data dir (``AMS_DATA_DIR``, default ``./data``), so that they live as long as
    the catalog that names their shards and a second ``run`` finds them again."""
    return (Path(environ.get("AMS_DATA_DIR") or "data") / "nodes").resolve()


def _serve(cluster: LocalCluster, shutdown_s: float = 60.0) -> int:
    """The service against ``cluster`` until it exits or this process gets SIGINT (Ctrl-C) or
    SIGTERM: the signal is forwarded once to the service (its own process group, so that a
    terminal's Ctrl-C reaches it once, through here), which gets ``shutdown_s`` seconds to
    finish gracefully before SIGKILL. Returns the service's exit code (0 after a stop)."""
    app = subprocess.Popen([sys.executable, "-m", "app"], env={**os.environ, **cluster.env}, process_group=0)
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if app.poll() is None:
            app.send_signal(signum)  # uvicorn: the first SIGINT or SIGTERM shuts down gracefully

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while app.poll() is None and not stopping:
            time.sleep(0.2)
        try:
            app.wait(timeout=shutdown_s)
        except subprocess.TimeoutExpired:
            print(f"the service did not stop within {shutdown_s:g} s: killed", file=sys.stderr)
            app.kill()
            app.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else app.returncode


if __name__ == "__main__":
    main()
