"""The documentation a newcomer follows does not rot: every relative link and picture of the
README, docs/ and results/ leads to a file (and a heading) that exists, every repository path
they name in backticks exists, no section is a heading alone, and every ``AMS_*`` variable the
code reads is documented somewhere under README.md or docs/."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    ROOT / "tests" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "results").glob("*.md")),
]
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:app|memory_core|client|tests|scripts|docker|docs|results)/[\w./-]+\.\w+)`")


def _prose(page: Path) -> str:
    """The page without its code blocks (whose text is commands and their output)."""
    return FENCE.sub("", page.read_text())


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces -> '-'."""
    headings = re.findall(r"^#+ (.+)$", _prose(page), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_leads_to_a_file_and_heading() -> None:
    dead = []
    for page in PAGES:
        for target in LINK.findall(_prose(page)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, "\n".join(dead)


def test_every_repository_path_named_exists() -> None:
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in PAGES
        for path in REPO_PATH.findall(_prose(page))
        if not (ROOT / path).exists() and not (ROOT / "client" / path).exists()
    ]
    assert not missing, "\n".join(missing)


def test_no_section_is_a_heading_alone() -> None:
    empty = []
    for page in PAGES:
        headings = [
            (m.start(), m.end(), len(m.group(1))) for m in re.finditer(r"^(#+) .+$", _prose(page), re.M)
        ]
        text = _prose(page)
        for i, (_, end, level) in enumerate(headings):
            nxt = headings[i + 1] if i + 1 < len(headings) else (len(text), len(text), 0)
            if not text[end : nxt[0]].strip() and nxt[2] <= level:  # a deeper heading is its content
                empty.append(f"{page.relative_to(ROOT)}: {text[headings[i][0] : end]}")
    assert not empty, "\n".join(empty)


def test_every_setting_the_code_reads_is_documented() -> None:
    documented = "".join(page.read_text() for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
    read = {f"AMS_{field.upper()}" for field in Settings.model_fields}
    for folder in ("app", "memory_core", "client", "docker"):
        for file in (ROOT / folder).rglob("*"):
            if file.suffix in {".py", ".yaml", ".sh"} or file.name == "Dockerfile":
                read |= set(re.findall(r"\bAMS_[A-Z][A-Z0-9_]*[A-Z0-9]\b", file.read_text()))
    assert len(read) >= 40
    undocumented = sorted(name for name in read if name not in documented)
    assert not undocumented, f"read by the code, in no page of README.md or docs/: {undocumented}"
