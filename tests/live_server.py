"""A real service process for the reliability tests: ``python -m uvicorn app.main:app`` (or
``python -m app``) on a free loopback port, over a data directory of the test's own, killed or
stopped on demand; optionally with its address space capped (RLIMIT_AS) and run from another
source tree (the attack measurements of main's code)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 180.0  # seconds: importing torch on a loaded 2-core machine is slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``uvicorn app.main:app`` over ``data_dir``; ``env`` adds ``AMS_*`` settings.

    ``restart`` starts a new process on the same data directory (and a new port, so that a
    late answer of the old process can never be mistaken for the new one's).

    Options: ``main=True`` runs ``python -m app`` (the production entry: header timeouts,
    connection cap) on ``AMS_HOST``/``AMS_PORT``; ``limit_as`` caps the process's address
    space (bytes, RLIMIT_AS: an allocation past it fails instead of growing); ``tree`` runs
    the service from another checkout of the project.
    """

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path | None = None,
        main: bool = False,
        limit_as: int | None = None,
        tree: Path | None = None,
        **env: str,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir or self.data_dir.parent)
        self.main, self.limit_as, self.tree = main, limit_as, tree
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.start()

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AMS_")}
        environ.update(AMS_DATA_DIR=str(self.data_dir), AMS_DEVICE="cpu", **self.env)
        if self.main:
            environ.update(AMS_HOST="127.0.0.1", AMS_PORT=str(self.port), AMS_LOG_LEVEL="warning")
            argv = [sys.executable, "-m", "app"]
        else:
            argv = [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
            argv += ["--log-level", "warning"]
        if self.tree is not None:
            environ["PYTHONPATH"] = str(self.tree)
        limit = self.limit_as

        def cap() -> None:  # in the child, before exec
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.starts += 1
        self.log_path = self.log_dir / f"server-{self.starts}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(
            argv, env=environ, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.tree, preexec_fn=cap
        )
        self._wait_ready()

    def start_anyway(self) -> None:
        """Start, and wait only until the process answers /livez (ready or not: recovery may fail)."""
        self._wait_for = "/livez"
        try:
            self.start()
        finally:
            self._wait_for = "/readyz"

    _wait_for = "/readyz"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}{self._wait_for}", timeout=5).status_code == 200:
                    if self._wait_for == "/livez":  # give recovery its moment to finish or fail
                        self._wait_recovered(deadline)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {STARTUP_TIMEOUT} s: {self.log_tail()}")

    def _wait_recovered(self, deadline: float) -> None:
        """Until /readyz says ready, or says why not (a recovery error), or the deadline."""
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.url}/readyz", timeout=5)
            if r.status_code == 200 or "loading" not in r.text:
                return
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, requests in flight cut off."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """SIGTERM: uvicorn's graceful shutdown (the app's lifespan closes storage)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._reap()

    def restart(self, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        self.start()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait(60)
            self._log.close()

    # --- looking at it ------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """Resident set size of the server process now (``VmHWM``: its peak), from Linux /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc status")

    def reset_peak_rss(self) -> bool:
        """Start the peak (``VmHWM``) afresh from now (Linux clear_refs; False where not allowed)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)
