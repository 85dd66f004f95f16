"""One process (no AMS_RAY_ADDRESS) needs no Ray: serving and recalling imports neither Ray nor
app/cluster/, and a data directory of the Ray mode is refused with a clear reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from fastapi.testclient import TestClient
    from app.main import create_app
    from app.settings import Settings
    with TestClient(create_app(Settings(data_dir=sys.argv[1], device="cpu"))) as c:
        while c.get("/readyz").status_code != 200:
            time.sleep(0.05)
        assert c.post("/v1/memories", json={"name": "m", "kind": "hopfield", "shape": [3]}).status_code == 201
        assert c.post("/v1/memories/m/patterns", json={"patterns": [{"vector": [1, 0, 1]}]}).status_code == 201
        assert c.post("/v1/memories/m/retrieve", json={"vector": [1, 0, 0]}).status_code == 200
        assert "placement" not in c.get("/v1/memories/m").json()
    print(sorted(m for m in sys.modules if m == "ray" or m.startswith(("ray.", "app.cluster"))))
    """
)


def test_one_process_imports_no_ray(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_data_directory_of_the_ray_mode_is_refused_in_one_process(tmp_path):
    (tmp_path / "cluster.sqlite3").write_bytes(b"")
    with TestClient(create_app(Settings(data_dir=tmp_path, device="cpu"))) as client:
        for _ in range(200):
            answer = client.get("/readyz")
            if "recovery failed" in answer.json().get("error", {}).get("message", ""):
                break
        assert answer.status_code == 503
        assert "AMS_RAY_ADDRESS" in answer.json()["error"]["message"]
