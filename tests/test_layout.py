"""The layout is the architecture: no import cycles anywhere, no import from a lower layer into a
higher one, packages above each other in a fixed order. Every import counts, function-level
(lazy) ones included: they are dependencies too."""
from __future__ import annotations

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("catalog", "model", "stages", "pipelines", "train")
# Which project packages each package may import (its own included).
ALLOWED = {
    "catalog": {"catalog"},
    "model": {"model"},
    "stages": {"stages", "catalog", "model"},
    "pipelines": {"pipelines", "stages", "catalog", "model"},
    "train": {"train", "pipelines", "stages", "catalog", "model"},
}
# Layers inside stages/, bottom first; a module may import its own subpackage and lower layers.
STAGE_LAYERS = (
    ("stages.errors", "stages.config", "stages.registry", "stages.metrics"),
    ("stages.audio",),
    ("stages.analysis", "stages.synth"),
    ("stages.corpus",),
    ("stages.sources",),
)


def project_modules() -> dict[str, str]:
    out = {}
    for top in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


MODULES = project_modules()


def imported(name: str, path: str) -> set[str]:
    """Project modules that `name` imports, resolved to the longest known module name."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODULES)
    out = set()
    for module in found:
        parts = module.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in MODULES:
                out.add(candidate)
                break
    return out - {name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def stage_layer(name: str) -> tuple[int, str]:
    for level, members in enumerate(STAGE_LAYERS):
        for member in members:
            if name == member or name.startswith(member + "."):
                return level, member
    raise AssertionError(f"{name} is in no layer of stages/: add it to STAGE_LAYERS")


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_packages_import_only_downwards():
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps
           if d.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not bad, bad


def test_stage_layers_import_only_downwards():
    bad = []
    for m, deps in GRAPH.items():
        if not m.startswith("stages.") or m == "stages":
            continue
        level, own = stage_layer(m)
        for d in deps:
            if not d.startswith("stages.") or d == "stages":
                continue
            d_level, d_own = stage_layer(d)
            if d_own != own and d_level >= level:
                bad.append(f"{m} (layer {level}) -> {d} (layer {d_level})")
    assert not bad, bad


def test_stages_top_level_is_subpackages_and_a_handful_of_modules():
    entries = os.listdir(os.path.join(REPO, "stages"))
    modules = sorted(e for e in entries if e.endswith(".py") and e != "__init__.py")
    packages = sorted(e for e in entries if os.path.isfile(os.path.join(REPO, "stages", e, "__init__.py")))
    assert packages == ["analysis", "audio", "corpus", "sources", "synth"]
    assert len(modules) <= 5, modules


def test_the_checker_sees_lazy_imports():
    """A function-level import is an edge of the graph (the analyzer loads backends lazily)."""
    assert "stages.analysis.diarize" in GRAPH["stages.analysis.analyzer"]
