"""Every ``python`` and ``sh`` block of docs/client.md runs, in order, against the real
service of conftest.py, in a folder holding the sample pictures of
scripts/export_fashion_pngs.py (python blocks share one namespace, as a reader's session
would; sh blocks run in bash with the project's ``ams`` first on PATH)."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "client.md"
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.DOTALL | re.MULTILINE)

pytestmark = pytest.mark.timeout(300)


def test_every_example_of_the_client_docs_runs(ams_server, tmp_path, monkeypatch) -> None:
    blocks = BLOCK.findall(DOC.read_text())
    assert sum(lang == "python" for lang, _ in blocks) >= 8 and sum(lang == "sh" for lang, _ in blocks) >= 2
    script = ROOT / "scripts" / "export_fashion_pngs.py"  # run here: torch is loaded already
    monkeypatch.setattr(sys, "argv", [str(script), "--out", str(tmp_path / "samples")])
    runpy.run_path(str(script), run_name="__main__")
    assert len(list((tmp_path / "samples").glob("*.png"))) == 21
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMS_URL", ams_server.url)
    monkeypatch.setenv("AMS_API_KEY", ams_server.env["AMS_API_KEY"])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace: dict = {"__name__": "docs_client"}
    for number, (lang, code) in enumerate(blocks, start=1):
        where = f"docs/client.md, {lang} block {number}"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 (the page's own examples)
        else:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
            )
            assert done.returncode == 0, f"{where}:\n{done.stdout}\n{done.stderr}"
