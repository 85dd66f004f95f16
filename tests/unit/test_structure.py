"""The house's rules, checked from the source itself.

- No import cycle inside ``app`` or ``memory_core``: read from the modules' own import
  statements (grimp, the graph import-linter uses; imports under TYPE_CHECKING and inside
  functions count too), so a cycle cannot hide behind an import at the bottom of a module.
- ``memory_core`` never imports ``app``.
- No Python file in ``app/`` or ``memory_core/`` over 600 lines.
- The demo page's ES modules (``app/static/*.js``): no import cycle, every import a file
  that is there, none over 350 lines (one job each).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "memory_core")
MAX_LINES = 600
STATIC = ROOT / "app" / "static"
MAX_SCRIPT_LINES = 350
# import ... from "./x.js", export ... from "./x.js", import "./x.js" (static imports only).
SCRIPT_IMPORT = re.compile(r'^\s*(?:import|export)\b[^;"]*?(?:from\s*)?"\./([\w-]+\.js)"', re.MULTILINE)


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Each cycle of the graph, once: a shortest import chain round every strongly connected
    group of modules (Tarjan), starting and ending at the group's first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1 or graph.direct_import_exists(importer=module, imported=module):
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    cycles = []
    for group in groups:
        start = group[0]
        nxt = min(m for m in graph.find_modules_directly_imported_by(start) if m in group)
        back = (nxt,) if nxt == start else graph.find_shortest_chain(importer=nxt, imported=start)
        cycles.append((start, *back))
    return cycles


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_no_import_cycles(graph):
    found = import_cycles(graph)
    lines = []
    for cycle in found:
        lines.append(" -> ".join(cycle))
        for importer, imported in itertools.pairwise(cycle):
            for detail in graph.get_import_details(importer=importer, imported=imported)[:1]:
                lines.append(f"    {importer}:{detail['line_number']}: {detail['line_contents']}")
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_the_cycle_check_finds_a_cycle():
    """The check above can fail: a graph with a cycle of three and one of a module's own."""
    g = grimp.ImportGraph()
    for importer, imported in [
        ("p.a", "p.b"),
        ("p.b", "p.c"),
        ("p.c", "p.a"),
        ("p.d", "p.a"),
        ("p.e", "p.e"),
    ]:
        g.add_import(importer=importer, imported=imported)
    assert import_cycles(g) == [("p.a", "p.b", "p.c", "p.a"), ("p.e", "p.e")]


def test_memory_core_never_imports_app(graph):
    chain = graph.find_shortest_chains(importer="memory_core", imported="app")
    assert not chain, f"memory_core imports app: {sorted(chain)}"


def test_no_module_over_600_lines():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert len(sizes) > 40  # the walk found the packages
    over = {path: n for path, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them by job): {over}"


def script_graph() -> tuple[grimp.ImportGraph, dict[str, int]]:
    """The demo page's modules as a graph (names without ".js") and each one's line count."""
    g = grimp.ImportGraph()
    sizes = {}
    for path in sorted(STATIC.glob("*.js")):
        text = path.read_text(encoding="utf-8")
        sizes[path.name] = len(text.splitlines())
        g.add_module(path.stem)
        for imported in SCRIPT_IMPORT.findall(text):
            assert (STATIC / imported).is_file(), f"{path.name} imports {imported}, which is not there"
            g.add_import(importer=path.stem, imported=imported.removesuffix(".js"))
    return g, sizes


def test_demo_page_scripts_have_no_cycle_and_one_job_each():
    g, sizes = script_graph()
    assert len(sizes) > 5 and g.find_modules_directly_imported_by("demo")  # the walk found the modules
    assert not import_cycles(g), f"import cycles among app/static/*.js: {import_cycles(g)}"
    over = {name: n for name, n in sizes.items() if n > MAX_SCRIPT_LINES}
    assert not over, f"scripts over {MAX_SCRIPT_LINES} lines (split them by job): {over}"
