"""scripts/setup.sh on a Debian machine without python3-venv, as a user who is not root and has
no sudo: it stops with one line saying which package to install, before touching anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# python3 as on Debian without python3-venv: ensurepip is missing.
FAKE_PYTHON = """#!/bin/bash
if [[ "$*" == *ensurepip* ]]; then exit 1; fi
exec {python} "$@"
"""


def test_setup_without_venv_support_says_what_to_install(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON.format(python=shutil.which("python3")))
    (bin_dir / "id").write_text("#!/bin/bash\necho 1000\n")  # not root
    for tool in ("python3", "id"):
        (bin_dir / tool).chmod(0o755)
    for tool in ("dpkg-query", "grep", "cat", "sha256sum", "cut", "dirname", "apt-get"):  # no sudo
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    done = subprocess.run(
        ["/bin/bash", "scripts/setup.sh", "run"],
        cwd=repo,
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stdout == "", done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "apt-get install" in lines[0] and "python3-venv" in lines[0]
    assert not (repo / ".venv").exists()
