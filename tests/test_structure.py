"""The package's shape: small functions and modules, and data flowing one way.

core (config, data, result, devices, measure, ...) -> engines -> study -> cost -> report -> use
-> cli (docs/architecture.md, whose table must name every module), and no import cycle
anywhere, type-checking imports included. These tests read the source, so a function
that grows past the limit or an import that reaches back up the chain fails here, naming it,
instead of in a review months later.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mnistbench"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
# Each exception says why; an empty dict is the goal.
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}

# Lower layers never import higher ones. A module not listed is a failure: place it.
LAYERS: list[tuple[str, ...]] = [
    # The core: the run's spec and result, data, devices, measurement, progress, a search trial's link, errors.
    (
        "__init__",
        "files",
        "errors",
        "data",
        "specfields",
        "config",
        "result",
        "published",
        "measure",
        "devices",
        "progress",
        "pruning",
    ),
    # The engines: the seam and registry (engines/__init__.py), the ResNet and SVM engines.
    ("engines",),
    # Studies: the study file, planning and running, the store, executors, scheduler, cleanup.
    ("study",),
    # What runs cost here: probes, rates, a study's forecast (given to the study as a callback).
    ("cost",),
    ("report",),
    # Using saved models: load, predict, evaluate, export, track in MLflow.
    ("use",),
    ("cli", "__main__"),
]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.stat().st_size)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if len(parts) > 1 and parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"mnistbench.{module} is in no layer of tests/test_structure.py")


def test_no_module_is_too_long() -> None:
    long = {
        _name(path): n
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
        and _name(path) not in LONG_MODULES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long() -> None:
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{_name(path)}.{node.name}"
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                    long[name] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """mnistbench modules imported anywhere in the file (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mnistbench":  # a module, or __version__ from __init__
                found.update(
                    "__init__" if alias.name.startswith("__") else alias.name
                    for alias in node.names
                )
            elif node.module.startswith("mnistbench."):
                module = node.module.removeprefix("mnistbench.")
                # `from mnistbench.report import text` imports the module report.text
                found.update(
                    f"{module}.{alias.name}" if _is_module(f"{module}.{alias.name}") else module
                    for alias in node.names
                )
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("mnistbench.")
                for a in node.names
                if a.name.startswith("mnistbench.")
            )
    return found


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_imports_flow_one_way(path: Path) -> None:
    own = _layer(_name(path))
    upward = sorted(m for m in _imports(path) if _layer(m) > own)
    assert not upward, f"mnistbench.{_name(path)} reaches up the chain to {upward}"


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports (type-checking ones included), inside a
    layer as much as across: a cycle makes the order of imports matter and the layers lie."""
    modules = {_name(path): path for path in _modules()}
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    seen: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if name in seen:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        seen.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_readmes_architecture_table_names_every_module_and_only_real_ones() -> None:
    """docs/architecture.md's layer table cannot drift from the tree: each module is named there
    (by its path under its folder, or, for data/, report/ and cli/, by the folder), and every
    path it names exists."""
    page = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    table = page.split("| layer |", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z_/]+(?:\.py|/))`", table))
    folders = {name for name in named if name.endswith("/")}
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        within = (relative.rsplit("/", 1)[-1], relative)  # `train.py` under its folder's row
        covered = relative == "__init__.py" or any(  # the package's version, nothing else
            relative.startswith(folder) for folder in ("data/", "report/", "cli/")
        )
        assert covered or set(within) & named, f"docs/architecture.md's table omits {relative}"
    for name in named - folders:
        found = list(PACKAGE.rglob(name.rsplit("/", 1)[-1]))
        assert found, f"docs/architecture.md names {name}: no such file"
    assert {"data/", "report/", "cli/", "study/", "use/", "engines/torch/"} <= folders
