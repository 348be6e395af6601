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


# ---- one folder per method (issue: a codebase a newcomer can extend) ------------------------------
METHODS_DIR = SRC / "wattwise" / "methods"
NOT_METHOD_FOLDERS = {"shared", "__pycache__"}
MAX_MODULE_LINES = 400


def _method_folders() -> set[str]:
    return {p.name for p in METHODS_DIR.iterdir() if p.is_dir() and p.name not in NOT_METHOD_FOLDERS}


def test_one_folder_per_registered_method_with_its_callback_and_card():
    from wattwise.methods.registry import method_infos

    infos = method_infos()
    assert _method_folders() == set(infos), "every method folder is registered and every method has one"
    for name, info in infos.items():
        folder = METHODS_DIR / name
        assert (folder / "callback.py").is_file() and (folder / "README.md").is_file(), name
        assert info.target.startswith(f"wattwise.methods.{name}."), (name, info.target)
        cls = info.load_class()
        assert cls.__name__ == "".join(part.capitalize() for part in name.split("_")), (name, cls.__name__)


def test_no_method_folder_imports_another():
    graph = _module_graph()
    folders = _method_folders()
    crossings = []
    for module, deps in graph.items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] != "methods" or parts[2] not in folders:
            continue
        for dep in deps:
            dparts = dep.split(".")
            if len(dparts) >= 3 and dparts[1] == "methods" and dparts[2] in folders and dparts[2] != parts[2]:
                crossings.append(f"{module} -> {dep}")
    # function-level (lazy) imports count too
    for path in METHODS_DIR.rglob("*.py"):
        rel = path.relative_to(METHODS_DIR).parts
        if rel[0] not in folders:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("wattwise.methods.")
            ):
                other = node.module.split(".")[2]
                if other in folders and other != rel[0]:
                    crossings.append(f"{path.relative_to(SRC)} -> {node.module}")
    assert not crossings, crossings


def test_shared_and_core_modules_import_no_method_folder():
    folders = _method_folders()
    offenders = []
    for path in (SRC / "wattwise").rglob("*.py"):
        rel = path.relative_to(SRC / "wattwise").parts
        if rel[0] == "methods" and len(rel) > 1 and rel[1] in folders:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("wattwise.methods.")
            ):
                if node.module.split(".")[2] in folders:
                    offenders.append(f"{path.relative_to(SRC)} -> {node.module}")
    assert not offenders, offenders


def test_no_module_over_400_lines():
    over = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not over, f"split these modules (at most {MAX_MODULE_LINES} lines): {over}"


def _private_names() -> dict[str, str]:
    """Each private name a compat module reaches -> that module."""
    import importlib

    out = {}
    for path in (SRC / "wattwise" / "compat").glob("*.py"):
        if path.stem == "__init__":
            continue
        mod = importlib.import_module(f"wattwise.compat.{path.stem}")
        for dotted in mod.PRIVATE_NAMES:
            for part in dotted.split("."):
                if part.startswith("_") and not part.startswith("__"):
                    out[part] = path.stem
    return out


ACCESSORS = ("getattr", "hasattr", "setattr")


def test_private_dependency_names_only_in_the_compat_modules():
    names = _private_names()
    assert {"_combined_loader", "_setup_model", "_pytree", "_update_count", "_last_lr"} <= set(names)
    hits = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            used = []
            if isinstance(node, ast.Attribute):
                used = [node.attr]
            elif isinstance(node, ast.ImportFrom) and node.module:
                used = [*node.module.split("."), *(a.name for a in node.names)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "getattr",
                "hasattr",
                "setattr",
            ):
                used = [
                    a.value
                    for a in node.args[1:2]
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                ]
            hits += [f"{path.relative_to(SRC)}:{node.lineno}: {n}" for n in used if n in names]
    assert not hits, hits


MAX_FUNCTION_LINES = 60


def test_no_function_over_60_lines():
    over = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    over.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    assert not over, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {over}"
