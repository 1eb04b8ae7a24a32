"""The import direction: each layer imports only the layers below it, and no module imports itself back.

Layers, lowest first (docs/ARCHITECTURE.md):

    0  utils/config.py, cli.py, misc.py, logger.py, weights_io.py, memory.py, outputs.py, metrics.py, sessions.py,
       curves.py, autocast.py, timing.py
    1  Config_*.py
    2  utils/data/, Load_Dataset.py
    3  nets/
    4  utils/checkpoints.py (reading checkpoints, rebuilding a model)
    5  utils/training/ and utils/inference/, side by side: neither imports the other, so predicting loads no
       optimizer, scheduler or DDP code
    6  train_model.py, test.py
    7  tools/ (developer commands: they may run anything; entry points and library code never import them)

Every import counts, at module level or inside a function, so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
import os
import shutil
from typing import Dict, List, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("nets", "utils", "tools")
LAYERS = [  # (layer, path prefixes); the longest matching prefix decides
    (0, ["utils/config.py", "utils/cli.py", "utils/misc.py", "utils/logger.py", "utils/weights_io.py",
         "utils/memory.py", "utils/outputs.py", "utils/metrics.py", "utils/sessions.py", "utils/curves.py",
         "utils/autocast.py", "utils/timing.py", "utils/__init__.py"]),
    (1, ["Config_"]),
    (2, ["utils/data/", "Load_Dataset.py"]),
    (3, ["nets/"]),
    (4, ["utils/checkpoints.py"]),
    (5, ["utils/training/", "utils/inference/"]),
    (6, ["train_model.py", "test.py"]),
    (7, ["tools/"]),
]
# Packages of one layer that must not import each other.
SIBLINGS = [("utils/training/", "utils/inference/")]


def layer_of(path: str) -> int:
    matches = [(len(prefix), layer) for layer, prefixes in LAYERS for prefix in prefixes if path.startswith(prefix)]
    if not matches:
        raise AssertionError(f"{path} belongs to no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")
    return max(matches)[1]


def project_modules(root: str) -> Dict[str, str]:
    """``{dotted module name: path relative to root}`` for the project's code (tests excluded)."""
    modules = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and (rel != "." or d in PACKAGES)]
        for name in files:
            if name.endswith(".py"):
                path = os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/")
                dotted = path[:-3].replace("/", ".")
                modules[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return modules


def imports_of(path: str, root: str, modules: Dict[str, str]) -> Set[str]:
    """The project modules that the file imports, anywhere in it (``from a import b`` counts ``a.b`` when that is
    a module, else ``a``)."""
    tree = ast.parse(open(os.path.join(root, path), encoding="utf-8").read(), filename=path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # import a.b.c where only a.b is ours: a.b
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(root: str) -> Tuple[Dict[str, str], Dict[str, Set[str]]]:
    modules = project_modules(root)
    return modules, {name: imports_of(path, root, modules) - {name} for name, path in modules.items()}


def upward_imports(root: str) -> List[str]:
    modules, graph = import_graph(root)
    layer = {name: layer_of(path) for name, path in modules.items()}
    return sorted(f"{modules[a]} (layer {layer[a]}) imports {modules[b]} (layer {layer[b]})"
                  for a, targets in graph.items() for b in targets if layer[b] > layer[a])


def sibling_imports(root: str) -> List[str]:
    """Imports between the packages of one layer that must stay apart (:data:`SIBLINGS`)."""
    modules, graph = import_graph(root)
    found = []
    for a, targets in graph.items():
        for b in targets:
            for one, other in SIBLINGS:
                pa, pb = modules[a], modules[b]
                if (pa.startswith(one) and pb.startswith(other)) or (pa.startswith(other) and pb.startswith(one)):
                    found.append(f"{pa} imports {pb}")
    return sorted(found)


def cycles(root: str) -> List[List[str]]:
    """Each import cycle once, as the modules along it (a package's ``__init__`` importing its own submodules,
    which Python resolves, is not a cycle)."""
    modules, graph = import_graph(root)
    graph = {a: {b for b in targets if not a == b.rpartition(".")[0]} for a, targets in graph.items()}
    found, state = [], {}

    def visit(node: str, stack: List[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_every_module_has_a_layer():
    for path in project_modules(ROOT).values():
        layer_of(path)


def test_no_layer_imports_a_higher_one():
    assert upward_imports(ROOT) == []


def test_training_and_inference_do_not_import_each_other():
    assert sibling_imports(ROOT) == []


def test_a_planted_import_of_training_from_inference_is_caught(tmp_path):
    root = _copy_of_the_code(tmp_path)
    with open(os.path.join(root, "utils", "inference", "folder.py"), "a") as handle:
        handle.write("\n\ndef _planted():\n    from utils.training.engine import train_step\n\n    return train_step\n")
    assert sibling_imports(root) == ["utils/inference/folder.py imports utils/training/engine.py"]


def test_a_planted_import_of_a_tool_from_an_entry_point_is_caught(tmp_path):
    root = _copy_of_the_code(tmp_path)
    with open(os.path.join(root, "test.py"), "a") as handle:
        handle.write("\nfrom tools.summary import summarize  # noqa: E402\n")
    assert upward_imports(root) == ["test.py (layer 6) imports tools/summary.py (layer 7)"]


def test_a_planted_import_of_a_tool_from_library_code_is_caught(tmp_path):
    root = _copy_of_the_code(tmp_path)
    with open(os.path.join(root, "utils", "inference", "evaluate.py"), "a") as handle:
        handle.write("\nfrom tools.bench_timing import environment  # noqa: E402\n")
    assert upward_imports(root) == ["utils/inference/evaluate.py (layer 5) imports tools/bench_timing.py (layer 7)"]


def test_no_import_cycle():
    assert cycles(ROOT) == []


def _copy_of_the_code(tmp_path) -> str:
    """The project's Python files (packages and top-level modules) copied to ``tmp_path``."""
    copy = tmp_path / "repo"
    for package in PACKAGES:
        skip = shutil.ignore_patterns("__pycache__", "*.gz")
        shutil.copytree(os.path.join(ROOT, package), copy / package, ignore=skip)
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, name), copy / name)
    return str(copy)


def test_a_planted_upward_import_is_caught(tmp_path):
    root = _copy_of_the_code(tmp_path)
    with open(os.path.join(root, "utils", "data", "files.py"), "a") as handle:
        handle.write("\n\ndef _planted():\n    from nets.reclmis import RecLMIS  # lazy, and still caught\n\n"
                     "    return RecLMIS\n")
    assert upward_imports(root) == ["utils/data/files.py (layer 2) imports nets/reclmis.py (layer 3)"]


def test_a_planted_cycle_is_caught(tmp_path):
    root = _copy_of_the_code(tmp_path)
    with open(os.path.join(root, "nets", "attention.py"), "a") as handle:
        handle.write("\nfrom nets.interaction import Interactor  # noqa: E402\n")
    assert ["nets.attention", "nets.interaction", "nets.attention"] in cycles(root)


def test_a_module_outside_the_layers_is_named(tmp_path):
    root = _copy_of_the_code(tmp_path)
    open(os.path.join(root, "utils", "stray.py"), "w").close()
    assert "utils.stray" in project_modules(root)
    with pytest.raises(AssertionError, match="utils/stray.py belongs to no layer"):
        upward_imports(root)
