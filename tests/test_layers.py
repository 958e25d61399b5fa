"""The layers of matcv import one way: floor -> data -> models -> harness -> leaderboard -> command line.

Read from the source with ``ast`` (nothing is imported), so a new module is checked the moment it exists:
an import that climbs a layer, an import circle (function-level imports included: a lazy import hides a
circle, it does not remove it) or another module's private name fails here with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("datamodules", "lightning_modules", "benchmarks", "leaderboard")

# Longest prefix wins. A module whose name matches none is an error: place it in a layer here first.
LAYERS = {
    "matcv.datamodules.core": 0,  # task config, record and submission formats, atomic IO, hashing, cache folder
    "matcv.datamodules.measurements": 1,  # measurement standards (ASTM D1654, Al-Si measurements)
    "matcv.datamodules.synthetic": 2,  # simulators: they may measure what they draw
    "matcv.datamodules": 3,  # folds, manifests, augmentations, DataModules
    "matcv.lightning_modules": 4,  # LightningModules, networks, metrics, figures
    "matcv.benchmarks": 5,  # the harness: prepare, run, schedule, submit, predict (and the task YAMLs)
    "matcv.leaderboard": 6,  # tables, statistics, submission validation and scoring, the page
    "matcv.benchmarks.cli": 7,  # the `matcv` command drives harness and leaderboard
    "matcv.benchmarks.speed": 7,  # developer speed scripts
}
LAYER_NAMES = {0: "floor", 1: "measurements", 2: "simulators", 3: "data", 4: "models", 5: "harness",
               6: "leaderboard", 7: "command line"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["matcv", *parts])


def layer_of(module: str) -> int:
    matches = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS in {Path(__file__).name}")
    return LAYERS[max(matches, key=len)]


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))
            if "__pycache__" not in path.parts}


MODULES = project_modules()


def imports_of(module: str, path: Path, source: str | None = None) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every project import in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    source = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("matcv.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("matcv"):
                continue
            names = [alias.name for alias in node.names]
            # `from matcv.pkg import module` imports that module
            submodules = [f"{target}.{name}" for name in names if f"{target}.{name}" in MODULES]
            if submodules:
                found += [(sub, [], node.lineno) for sub in submodules]
                names = [name for name in names if f"{target}.{name}" not in MODULES]
            if names:
                found.append((target, names, node.lineno))
    return found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def upward_imports(module: str, path: Path, source: str | None = None) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} ({LAYER_NAMES[layer_of(module)]}) imports {target} "
            f"({LAYER_NAMES[layer_of(target)]})"
            for target, _names, line in imports_of(module, path, source)
            if target in MODULES and layer_of(target) > layer_of(module)]


def test_no_import_climbs_a_layer():
    upward = [line for module, path in MODULES.items() for line in upward_imports(module, path)]
    assert not upward, "imports that climb a layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = {module: sorted({target for target, _n, _l in imports_of(module, path)
                             if target in MODULES and target != module})
             for module, path in MODULES.items()}
    # Package __init__ files run before their modules; an import of `matcv.x.y` also runs `matcv.x`, but an
    # empty or re-exporting __init__ is no circle of its own, so only explicit edges count.
    circles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_module_imports_another_modules_private_names():
    private = [f"{path.relative_to(ROOT)}:{line} imports {name} from {target}"
               for module, path in MODULES.items() for target, names, line in imports_of(module, path)
               for name in names if name.startswith("_") and not name.startswith("__")]
    assert not private, "private names imported across modules:\n" + "\n".join(private)


@pytest.mark.parametrize("module, source", [
    ("matcv.benchmarks.harness.example", "from matcv.leaderboard.build import write_leaderboard\n"),
    ("matcv.datamodules.core.example", "def f():\n    from matcv.datamodules import folds\n"),
    ("matcv.lightning_modules.example", "from ..benchmarks.harness import runner\n"),
])
def test_the_checker_finds_an_upward_import(module, source):
    """The checker itself: absolute, function-level and relative upward imports are all found."""
    path = ROOT / Path(*module.split(".")[1:]).with_suffix(".py")
    assert len(upward_imports(module, path, source)) == 1
