"""Shared fixtures.

Threads: ``one_thread``. Browser: ``browser_type_launch_args`` (Debian's chromium for pytest-playwright). Data: small slices of the real offline data sets (``fashion_images``, ``fashion_vectors``,
``patch_vectors``, ``fashion``), and one PC memory fit on 100 of them (``fashion_pc``). Service: ``make_client`` / ``client``, a FastAPI TestClient
over a fresh data directory, lifespan run, ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from service_helpers import wait_ready

from app.main import create_app
from app.settings import Settings
from memory_core import FitHistory, PCMemory
from memory_core.data import fashion_mnist, flatten, natural_patches

# --- threads --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    small matmuls and convolutions spend more on OpenMP hand-offs than on work on a busy
    2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- data -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fashion_images() -> torch.Tensor:
    """The first 2000 Fashion-MNIST training images, (2000, 1, 28, 28) in [0, 1]."""
    return fashion_mnist("train", limit=2000)[0]


@pytest.fixture(scope="session")
def fashion_vectors(fashion_images) -> torch.Tensor:
    """The same images as (2000, 784) vectors."""
    return flatten(fashion_images)


@pytest.fixture(scope="session")
def patch_vectors() -> torch.Tensor:
    """500 natural-colour 32x32 patches as (500, 3072) vectors."""
    return flatten(natural_patches(32, count=500))


@pytest.fixture(scope="session")
def fashion_pc(fashion_vectors) -> tuple[PCMemory, FitHistory]:
    """``PCMemory(sizes=[256, 512, 784], seed=0)`` fit with fit's defaults on the first 100
    Fashion-MNIST images (one torch thread), and its ``FitHistory``: one fit shared by
    test_pc.py and test_pc_index.py. Read-only: a test that changes the model puts it back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pc = PCMemory(sizes=[256, 512, 784], device="cpu", seed=0)
        return pc, pc.fit(fashion_vectors[:100], progress=False)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fashion(fashion_images) -> torch.Tensor:
    """The first 300 Fashion-MNIST training images, (300, 1, 28, 28) in [0, 1] (service tests)."""
    return fashion_images[:300]


# --- browser ---------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session", autouse=True)
def _patient_browser_assertions() -> None:
    """Playwright's ``expect`` waits 5 s by default, whatever the page's own timeout; on a loaded
    2-core machine a recall or a job's next update can take longer, so it waits 30 s (a passing
    assertion returns as soon as it holds)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict:
    """pytest-playwright launches Debian's chromium, headless, with no network of its own."""
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: scripts/setup.sh test installs it"
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ],
    }


# --- service --------------------------------------------------------------------------


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Factory: ``make_client(data_dir=None, wait=True, **settings)`` -> a started (ready) TestClient;
    ``make_client.stop(client)`` shuts one down early (for restarts). Settings default to
    ``device="cpu"``; a test may name another.

    Each client runs the app's lifespan (recovery on start, close on exit); all are
    closed at the end of the test. The default data directory is the test's tmp_path/data.
    """
    opened: list[TestClient] = []

    def make(data_dir: Path | None = None, wait: bool = True, **overrides) -> TestClient:
        settings = Settings(**({"data_dir": data_dir or tmp_path / "data", "device": "cpu"} | overrides))
        client = TestClient(create_app(settings))
        client.__enter__()
        opened.append(client)
        if wait:
            wait_ready(client)
        return client

    def stop(client: TestClient) -> None:
        """Shut a client's app down now (lifespan exit), as a restart would."""
        opened.remove(client)
        client.__exit__(None, None, None)

    make.stop = stop  # type: ignore[attr-defined]
    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def ray_local_cluster(tmp_path_factory):
    """The session's real local Ray cluster for the Ray mode's tests (a head and two worker
    nodes, app/cluster/local.py), started when a test first asks: ``.get()``, ``.restart()``."""
    from cluster_helpers import SharedCluster  # (imports app.cluster: only where used)

    shared = SharedCluster(tmp_path_factory.mktemp("ray"))
    yield shared
    shared.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A ready TestClient over a fresh data directory, default settings, no API keys."""
    return make_client()
