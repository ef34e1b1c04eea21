"""Import hygiene of the package, read from the source with ``ast`` (nothing is imported).

* no module longer than 500 lines;
* no ``from lungseg.x import _private`` from another module;
* no import cycle among lungseg modules, counting every import that runs (module level and
  inside functions; only ``if TYPE_CHECKING:`` blocks, which never run, do not count), also none
  inside a package such as ``synthetic/``;
* the layers of ``docs/architecture.md``: each package imports only the packages below it
  (``inference`` nothing from ``training``, even indirectly; no library module imports
  ``stages`` or ``cli``);
* every ``dvc.yaml`` stage lists, as deps, each file of its command's import closure
  (``lungseg <stage>`` runs ``lungseg.stages.<stage>``; every import anywhere in a reached
  module counts, function-level ones included, and so do the packages' ``__init__.py``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = "lungseg"
MAX_LINES = 500


@dataclass
class Module:
    name: str  # dotted, e.g. lungseg.io.nifti
    path: Path
    is_package: bool
    tree: ast.Module
    top_level: set[str] = field(default_factory=set)  # lungseg modules imported at module level
    anywhere: set[str] = field(default_factory=set)  # ... anywhere in the file
    runtime: set[str] = field(default_factory=set)  # ... anywhere except ``if TYPE_CHECKING:`` blocks
    private_imports: list[str] = field(default_factory=list)  # "line: from x import _y"


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    base = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        name, is_package = _module_name(path)
        found[name] = Module(name, path, is_package, ast.parse(path.read_text(), filename=str(path)))
    for mod in found.values():
        _collect(mod, found)
    return found


def _targets(mod: Module, node: ast.Import | ast.ImportFrom, known: dict[str, Module]) -> set[str]:
    """The lungseg modules an import statement loads (``from pkg import submodule`` names the submodule)."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                out.add(alias.name)
        return out
    source = _resolve(mod, node)
    if source.split(".")[0] != PACKAGE:
        return out
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        out.add(sub if sub in known else source)
    return out


def _collect(mod: Module, known: dict[str, Module]) -> None:
    def walk(nodes: list[ast.stmt], top: bool, runs: bool = True) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(mod, node, known)
                mod.anywhere |= targets
                if runs:
                    mod.runtime |= targets
                if top:
                    mod.top_level |= targets
                if isinstance(node, ast.ImportFrom) and targets:
                    source = _resolve(mod, node)
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__") \
                                and f"{source}.{alias.name}" not in known and source != mod.name:
                            mod.private_imports.append(f"{mod.path.relative_to(REPO)}:{node.lineno}: "
                                                       f"from {source} import {alias.name}")
            elif isinstance(node, ast.If) and _is_type_checking(node):
                walk(node.body, top=False, runs=False)
                walk(node.orelse, top, runs)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(list(ast.iter_child_nodes(node)), False, runs)  # type: ignore[arg-type]
            elif isinstance(node, ast.ClassDef):
                walk(node.body, top, runs)  # a class body runs at import time
            else:
                walk(list(ast.iter_child_nodes(node)), top, runs)  # type: ignore[arg-type]

    walk(mod.tree.body, top=True)


def _parents(name: str, known: dict[str, Module]) -> set[str]:
    """Packages whose ``__init__`` runs before ``name`` (non-empty ones only)."""
    parts = name.split(".")
    out = set()
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in known and known[pkg].path.stat().st_size > 0:
            out.add(pkg)
    return out


def import_closure(entry: str) -> set[str]:
    """Every lungseg module that running ``entry`` can load (function-level imports included)."""
    known = modules()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen or name not in known:
            continue
        seen.add(name)
        todo.extend(known[name].anywhere | _parents(name, known))
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ---------------------------------------------------------------- the rules


def test_no_module_is_longer_than_500_lines() -> None:
    long = {str(m.path.relative_to(REPO)): n for m in modules().values()
            if (n := len(m.path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [line for m in modules().values() for line in m.private_imports]
    assert not offenders, "private names imported across modules (give them a public home):\n" + "\n".join(offenders)


def _runtime_graph() -> dict[str, set[str]]:
    known = modules()
    return {m.name: {t for t in m.runtime if t in known and t != m.name} for m in known.values()}


def test_no_import_cycle_among_lungseg_modules() -> None:
    cycles = _cycles(_runtime_graph())
    assert not cycles, f"import cycles (imports that run, function-level ones included): {cycles}"


# What each layer may import (docs/architecture.md), bottom up. The shared basics (the package
# root, config*, errors, fileio, morphology) import only each other and are open to every layer.
BASICS = {"lungseg", "lungseg.config", "lungseg.config_data", "lungseg.config_checks", "lungseg.errors",
          "lungseg.fileio", "lungseg.morphology"}
LAYERS = {
    "lungseg.io": set(),
    "lungseg.nn": set(),
    "lungseg.figures": {"lungseg.io"},
    "lungseg.synthetic": {"lungseg.io"},
    "lungseg.inference": {"lungseg.io", "lungseg.nn", "lungseg.figures"},
    "lungseg.evaluation": {"lungseg.io", "lungseg.nn", "lungseg.figures", "lungseg.inference"},
    "lungseg.training": {"lungseg.io", "lungseg.nn", "lungseg.figures", "lungseg.inference", "lungseg.evaluation"},
}
TOP = ("lungseg.stages", "lungseg.cli")  # may import anything; nothing imports them


def _layer(name: str) -> str:
    """The layer (a key of LAYERS or TOP) a module belongs to, or the module itself for the basics."""
    for pkg in (*LAYERS, *TOP):
        if name == pkg or name.startswith(pkg + "."):
            return pkg
    return name


def test_every_module_belongs_to_a_layer_or_the_basics() -> None:
    stray = sorted(m for m in modules() if _layer(m) not in LAYERS and _layer(m) not in TOP and m not in BASICS)
    assert not stray, f"modules outside the layers and the shared basics (docs/architecture.md): {stray}"


def test_basics_import_only_basics() -> None:
    bad = {m: sorted(t for t in mod.runtime if t not in BASICS) for m, mod in modules().items() if m in BASICS}
    bad["lungseg"] = [t for t in bad["lungseg"] if t != "lungseg.nn.runtime"]  # TensorFlow's env first (no imports)
    bad = {m: v for m, v in bad.items() if v}
    assert not bad, f"shared basics importing a layer: {bad}"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    allowed = LAYERS[package] | {package}
    bad = sorted(f"{m} -> {t}" for m, mod in modules().items() if _layer(m) == package
                 for t in mod.runtime if _layer(t) not in allowed and _layer(t) not in BASICS)
    assert not bad, f"{package} imports packages it must not (docs/architecture.md): {bad}"


def test_inference_never_reaches_training_even_indirectly() -> None:
    """A served model must not drag in the trainer: nothing an inference module can load is training."""
    reached = {m: sorted(t for t in import_closure(m) if _layer(t) == "lungseg.training")
               for m in modules() if _layer(m) == "lungseg.inference"}
    reached = {m: v for m, v in reached.items() if v}
    assert not reached, f"inference modules that can load training modules: {reached}"


def test_library_never_imports_stages_or_cli() -> None:
    bad = sorted(f"{m} -> {t}" for m, mod in modules().items() if _layer(m) not in TOP
                 for t in mod.anywhere if _layer(t) in TOP)
    assert not bad, f"library modules importing stages/cli: {bad}"


def _stage_deps(stage: dict, base: Path) -> list[Path]:
    wdir = (base / stage.get("wdir", ".")).resolve()
    return [wdir / d for d in stage.get("deps", []) if "${" not in d]


def _covered(path: Path, deps: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in deps)


DVC_FILES = [REPO / "dvc.yaml", *sorted(REPO.glob("pipelines/*/dvc.yaml"))]
DVC_STAGES = {  # "<dvc.yaml relative to the repo>:<stage>" -> (stage, folder of its dvc.yaml)
    f"{f.relative_to(REPO)}:{name}": (stage, f.parent)
    for f in DVC_FILES for name, stage in yaml.safe_load(f.read_text())["stages"].items()
}


@pytest.mark.parametrize("stage_name", sorted(DVC_STAGES))
def test_dvc_stage_deps_cover_the_import_closure_of_its_command(stage_name: str) -> None:
    stage, base = DVC_STAGES[stage_name]
    stage = stage.get("do", stage)  # a foreach stage's body
    cmd = stage["cmd"].split()
    assert cmd[:1] == ["lungseg"] and len(cmd) >= 2, f"stage {stage_name}: cmd {stage['cmd']!r} is not `lungseg <stage>`"
    entry = f"{PACKAGE}.stages.{cmd[1].replace('-', '_')}"
    assert entry in modules(), f"stage {stage_name}: no module {entry} for `{stage['cmd']}`"
    deps = _stage_deps(stage, base)
    missing = sorted(str(modules()[m].path.relative_to(REPO)) for m in import_closure(entry)
                     if not _covered(modules()[m].path, deps))
    assert not missing, f"dvc.yaml stage {stage_name}: deps miss modules its command imports: {missing}"
    stale = [str(d.relative_to(REPO)) for d in deps if str(d.relative_to(REPO)).startswith("src/") and not d.exists()]
    assert not stale, f"dvc.yaml stage {stage_name}: deps name files that do not exist: {stale}"


# ---------------------------------------------------------------- the checker itself


def test_checker_sees_function_level_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """The parser is what the rules rest on: check it on a hand-written module."""
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from lungseg.config import Params\n"
        "from . import metrics\n"
        "from .baseline import _private_helper\n"
        "if TYPE_CHECKING:\n"
        "    from lungseg.nn.model import build_unet3d\n"
        "def f():\n"
        "    from lungseg.training import fit\n"
    )
    mod = Module("lungseg.evaluation.example", SRC / PACKAGE / "evaluation" / "example.py", False, ast.parse(source))
    _collect(mod, modules())
    assert mod.top_level == {"lungseg.config", "lungseg.evaluation.metrics", "lungseg.evaluation.baseline"}
    assert mod.runtime == mod.top_level | {"lungseg.training.fit"}
    assert mod.anywhere == mod.runtime | {"lungseg.nn.model"}
    assert mod.private_imports == [
        "src/lungseg/evaluation/example.py:5: from lungseg.evaluation.baseline import _private_helper"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert "lungseg.nn.runtime" in import_closure("lungseg.stages.synthesize")  # via lungseg/__init__.py
    assert _layer("lungseg.inference.serving") == "lungseg.inference" and _layer("lungseg.inference") == "lungseg.inference"
    assert _layer("lungseg.errors") == "lungseg.errors" and _layer("lungseg.stages.train") == "lungseg.stages"
    assert _covered(REPO / "src/lungseg/synthetic/phantom.py", [REPO / "src/lungseg/synthetic"])
    assert not _covered(REPO / "src/lungseg/io/synthetic_extra.py", [REPO / "src/lungseg/synthetic"])
