"""Import hygiene of the package, read from the source with ``ast`` (nothing is imported).

* no module longer than 600 lines;
* no ``from lungseg.x import _private`` from another module;
* no import cycle among lungseg modules (module-level imports; ``if TYPE_CHECKING:`` and
  imports inside functions do not count);
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
MAX_LINES = 600


@dataclass
class Module:
    name: str  # dotted, e.g. lungseg.data.nifti
    path: Path
    is_package: bool
    tree: ast.Module
    top_level: set[str] = field(default_factory=set)  # lungseg modules imported at module level
    anywhere: set[str] = field(default_factory=set)  # ... anywhere in the file
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
    def walk(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = _targets(mod, node, known)
                mod.anywhere |= targets
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
                walk(node.body, top=False)
                walk(node.orelse, top)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(list(ast.iter_child_nodes(node)), top=False)  # type: ignore[arg-type]
            elif isinstance(node, ast.ClassDef):
                walk(node.body, top)  # a class body runs at import time
            else:
                walk(list(ast.iter_child_nodes(node)), top)  # type: ignore[arg-type]

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


def test_no_module_is_longer_than_600_lines() -> None:
    long = {str(m.path.relative_to(REPO)): n for m in modules().values()
            if (n := len(m.path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [line for m in modules().values() for line in m.private_imports]
    assert not offenders, "private names imported across modules (give them a public home):\n" + "\n".join(offenders)


def test_no_import_cycle_among_lungseg_modules() -> None:
    known = modules()
    graph = {m.name: {t for t in m.top_level if t in known and t != m.name} for m in known.values()}
    assert not _cycles(graph), f"import cycles (module-level imports): {_cycles(graph)}"


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
        "from . import tracking\n"
        "from .baseline import _private_helper\n"
        "if TYPE_CHECKING:\n"
        "    from lungseg.model import build_unet3d\n"
        "def f():\n"
        "    from lungseg.training import fit\n"
    )
    mod = Module("lungseg.example", SRC / PACKAGE / "example.py", False, ast.parse(source))
    _collect(mod, modules())
    assert mod.top_level == {"lungseg.config", "lungseg.tracking", "lungseg.baseline"}
    assert mod.anywhere == mod.top_level | {"lungseg.model", "lungseg.training"}
    assert mod.private_imports == ["src/lungseg/example.py:5: from lungseg.baseline import _private_helper"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert "lungseg.runtime" in import_closure("lungseg.stages.synthesize")  # via lungseg/__init__.py
    assert _covered(REPO / "src/lungseg/data/synthetic/phantom.py", [REPO / "src/lungseg/data/synthetic"])
    assert not _covered(REPO / "src/lungseg/data/synthetic_extra.py", [REPO / "src/lungseg/data/synthetic"])
