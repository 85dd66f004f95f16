"""results/README.md is the index of every measurement: each file under results/ is named in
it, and each script it names as the maker of a file is committed."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "results"
INDEX = (RESULTS / "README.md").read_text()


def test_every_results_file_is_indexed() -> None:
    files = sorted(p.name for p in RESULTS.iterdir() if p.is_file() and p.name != "README.md")
    assert len(files) >= 20
    missing = [name for name in files if name not in INDEX]
    assert not missing, f"results/README.md does not index {missing}"


def test_every_script_named_in_the_index_exists() -> None:
    scripts = set(re.findall(r"scripts/[\w/]+\.(?:py|sh)", INDEX))
    assert len(scripts) >= 10
    root = RESULTS.parent
    absent = sorted(s for s in scripts if not (root / s).is_file())
    assert not absent, f"results/README.md names scripts that are not committed: {absent}"
