"""A real service process for the reliability tests: ``python -m uvicorn app.main:app`` on a free
loopback port, over a data directory of the test's own, killed or stopped on demand."""

from __future__ import annotations

import os
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
    """

    def __init__(self, data_dir: Path, log_dir: Path | None = None, **env: str) -> None:
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir or self.data_dir.parent)
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
        argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
                "--port", str(self.port), "--log-level", "warning"]
        self.starts += 1
        self.log_path = self.log_dir / f"server-{self.starts}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(argv, env=environ, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {STARTUP_TIMEOUT} s: {self.log_tail()}")

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

    def rss_bytes(self) -> int:
        """Resident set size of the server process now (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def log_tail(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 60), **kwargs)
