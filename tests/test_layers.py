"""The package's import graph follows its layers (README "Project layout").

Each module of ``hpsh_tf2`` belongs to a layer; a module may import modules of its own layer or
of lower layers, never of a higher one. Also enforced: no import cycle, no private name imported
across modules, package imports at module top (only the CLI imports lazily, so that ``--help``
answers without TensorFlow), and ``layout.py`` is the only module that spells a run-folder
file name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "hpsh_tf2"

# Lowest first. A module's layer is the first prefix that matches its dotted name.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "hpsh_tf2",
        "hpsh_tf2.config",
        "hpsh_tf2.errors",
        "hpsh_tf2.atomic",
        "hpsh_tf2.layout",
        "hpsh_tf2.xla",
        "hpsh_tf2.registry",
        "hpsh_tf2.saved_files",
        "hpsh_tf2.console",
    ),
    ("hpsh_tf2.ops", "hpsh_tf2.evaluation.relevance"),
    ("hpsh_tf2.data", "hpsh_tf2.models", "hpsh_tf2.geo"),
    ("hpsh_tf2.losses", "hpsh_tf2.samplers", "hpsh_tf2.features"),
    ("hpsh_tf2.dataset", "hpsh_tf2.encode"),
    ("hpsh_tf2.evaluation",),
    ("hpsh_tf2.training", "hpsh_tf2.export", "hpsh_tf2.serving", "hpsh_tf2.lock"),
    ("hpsh_tf2.index",),
    ("hpsh_tf2.workflow", "hpsh_tf2.table"),
    ("hpsh_tf2.cli", "hpsh_tf2.__main__"),
)
# CLI front modules import lazily so that `--help` needs no TensorFlow.
LAZY_IMPORTS_ALLOWED = {"hpsh_tf2.cli", "hpsh_tf2.index.commands", "hpsh_tf2.index.scene_commands"}
# Optional extras: the module only exists to wrap a dependency a user may not have installed.
LAZY_EDGES_ALLOWED = {("hpsh_tf2.index.build", "hpsh_tf2.index.beam")}  # apache-beam ([beam])
RUN_FOLDER_NAMES = (
    "config.yaml",
    "split.json",
    "scan_report.json",
    "scan_cache.json",
    "steps.json",
    "hash_model.keras",
    "image_model.keras",
    "history.csv",
    "train_summary.json",
    "report.json",
    "codes.npz",
    "state.json",
    "row.json",
    "results.csv",
    "results.md",
    "results.png",
    "index.db",
    "index.npz",
    "index_build.json",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best, rank = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank is None:
        raise AssertionError(f"module {module} has no layer: add it to LAYERS")
    return rank


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = (PACKAGE / Path(*base[1:]) / "__init__.py").is_file()
    anchor = base if is_package else base[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _imports(module: str, tree: ast.Module):
    """(imported module, imported names, line, at top level) of every hpsh_tf2 import."""
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hpsh_tf2"):
                    yield alias.name, (), node.lineno, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.startswith("hpsh_tf2"):
                names = tuple(a.name for a in node.names)
                yield target, names, node.lineno, id(node) in top_level


def _targets(target: str, names: tuple[str, ...], modules) -> list[str]:
    """``from pkg import sub`` imports the module ``pkg.sub``; anything else imports ``target``."""
    subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
    return subs or [target]


def _edges():
    modules = _modules()
    for module, tree in modules.items():
        for target, names, line, top in _imports(module, tree):
            for dep in _targets(target, names, modules):
                yield module, dep, names, line, top


def test_every_module_has_a_layer():
    for module in _modules():
        _layer(module)


def test_no_upward_import():
    upward = [
        f"{module}:{line} imports {dep} (layer {_layer(dep)} > {_layer(module)})"
        for module, dep, _, line, _ in _edges()
        if _layer(dep) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for module, dep, *_ in _edges():
        if dep != module and not module.startswith(dep + "."):  # a package's own __init__
            graph.setdefault(module, set()).add(dep)
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_no_private_name_imported_across_modules():
    private = [
        f"{module}:{line} imports {name} from {dep}"
        for module, dep, names, line, _ in _edges()
        for name in names
        if name.startswith("_") and not name.endswith("__") and dep != module
    ]
    assert not private, "\n".join(private)


def test_package_imports_are_at_module_top():
    lazy = [
        f"{module}:{line} imports {dep} inside a function"
        for module, dep, _, line, top in _edges()
        if not top
        and module not in LAZY_IMPORTS_ALLOWED
        and (module, dep) not in LAZY_EDGES_ALLOWED
    ]
    assert not lazy, "\n".join(lazy)


def test_only_layout_spells_run_folder_names():
    names = "|".join(map(re.escape, RUN_FOLDER_NAMES))
    pattern = re.compile(rf"""["']({names})["']""")
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "layout.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_checks_catch_violations(tmp_path):
    """The graph helpers see an upward edge and a lazy import in a made-up module."""
    source = "from hpsh_tf2.workflow import run\n\ndef f():\n    import hpsh_tf2.cli\n"
    tree = ast.parse(source)
    found = list(_imports("hpsh_tf2.ops.fake", tree))
    assert ("hpsh_tf2.workflow", ("run",), 1, True) in found
    assert ("hpsh_tf2.cli", (), 4, False) in found
    assert _layer("hpsh_tf2.workflow") > _layer("hpsh_tf2.ops.fake")
