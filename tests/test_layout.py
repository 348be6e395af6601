"""The repository's shape: no import cycles between wattwise's modules, nothing points outside the repo."""

from __future__ import annotations

import ast
import re

from conftest import ROOT

SRC = ROOT / "src"


def _module_graph() -> dict[str, set[str]]:
    """Module -> the wattwise modules it imports at module level (function-level imports are lazy)."""
    names = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t and t not in names:
                    t = t.rpartition(".")[0]
                if t and t.startswith("wattwise") and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def test_no_import_cycles():
    graph = _module_graph()
    assert "wattwise.train" in graph and graph["wattwise.train"]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_nothing_points_at_files_outside_the_repository():
    pattern = re.compile(r"shared/(notes|anchors|background)|\.\./shared|DESIGN\.md|field-notes|\btraps? \d")
    files = [*SRC.rglob("*.py"), *SRC.rglob("*.yaml"), *(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    files += [*(ROOT / "bench").glob("*.py"), *(ROOT / "bench").glob("*.md"), *(ROOT / "tests").glob("*.py")]
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        if p.name != "test_layout.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, f"references to files a clone does not have: {hits}"
