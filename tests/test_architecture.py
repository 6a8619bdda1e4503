"""Guard rails for the layout of the package and the repository.

* The import graph of ``enformer_batch`` has no cycle and never points from a lower layer to a higher one
  (``LAYERS`` below), so a newcomer can read the package bottom-up and a stage can be tested without the
  ones above it. Imports inside functions count: deferring an import hides a cycle from Python, not from
  the reader.
* No tracked file cites a path outside the repository: a clone must be self-contained, and the project's
  contract lives in ``docs/contract.md``.

Both are static (``ast`` and ``git ls-files``): nothing is imported, so they run in well under a second.
"""

from __future__ import annotations

import ast
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "enformer_batch"

# Lower numbers are lower layers; a module may import its own layer or lower ones. A subpackage's modules
# (``kinds.atlas``) sit in the subpackage's layer. Place a new module here when you add it.
LAYERS: dict[str, int] = {
    # plain building blocks: no model, no storage protocol
    "retry": 0, "genome": 0, "windows": 0, "tracks": 0, "vcf": 0, "augment": 0, "demo": 0, "regions": 0,
    "version": 0, "units": 0, "annotation": 0, "gene_scores": 0,
    # model families: what a checkpoint is, how it loads, how it is run
    "families": 1, "settings": 1, "model": 1, "borzoi": 1, "loader": 1, "simulated": 1, "integrity": 1,
    "inference": 2, "attribution": 2,  # the predictor and its gradients (no Ray)
    "store": 3, "lease": 3,  # the output on storage and its commit protocol
    "engine": 4,  # Ray orchestration, kind-agnostic
    "kinds": 5,  # job kinds on the engine: atlas, variants, mutagenesis, edits
    "atlas": 6, "validate": 6, "export": 6, "estimate": 6,  # reading, checking and sizing outputs
    "serve": 6,  # interactive experiments: a page and an API over warm replicas (only cli imports it)
    "cli": 7, "__init__": 7,  # the public faces
}


@dataclass(frozen=True)
class Edge:
    source: str  # module name relative to the package: "engine", "kinds.atlas", "__init__"
    target: str
    file: str  # relative to the repository root
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``: never executed
    deferred: bool = False  # inside a function: runs when it is called

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} -> {self.target}"


def package_modules(base: Path = ROOT / PACKAGE) -> dict[str, Path]:
    """Module name (relative to the package, ``__init__`` for the package itself) -> file."""
    modules = {}
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()  # kinds/__init__.py is the module "kinds"
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name == "__init__" or modules[name].name == "__init__.py"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module an absolute dotted name refers to (the longest existing prefix), or None if outside."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return "__init__"


class _Imports(ast.NodeVisitor):
    """Every import of a module, at any depth (functions, classes, try blocks, TYPE_CHECKING blocks)."""

    def __init__(self, module: str, modules: dict[str, Path], file: str):
        self.module, self.modules, self.file = module, modules, file
        self.edges: list[Edge] = []
        self._type_only = 0
        self._functions = 0
        # Absolute name of the package a relative import of this module starts from.
        own = [PACKAGE] + ([] if module == "__init__" else module.split("."))
        self._package = own if _is_package(module, modules) else own[:-1]

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
        if not guarded:
            self.generic_visit(node)
            return
        self._type_only += 1
        for child in node.body:
            self.visit(child)
        self._type_only -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def _add(self, absolute: str, line: int) -> None:
        target = _resolve(absolute, self.modules)
        edge = Edge(self.module, target or "", self.file, line, self._type_only > 0, self._functions > 0)
        if target is not None and target != self.module and edge not in self.edges:  # one per imported module
            self.edges.append(edge)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self._package[: len(self._package) - (node.level - 1)]
            if not base:
                return  # beyond the package: not ours to judge
            origin = ".".join(base + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        for alias in node.names:
            # ``from . import store`` imports the module store; ``from .engine import Part`` the module engine.
            submodule = f"{origin}.{alias.name}"
            if _resolve(submodule, self.modules) not in (None, _resolve(origin, self.modules)):
                self._add(submodule, node.lineno)
            else:
                self._add(origin, node.lineno)


def import_edges(base: Path = ROOT / PACKAGE) -> tuple[dict[str, Path], list[Edge]]:
    modules = package_modules(base)
    edges = []
    for name, path in modules.items():
        visitor = _Imports(name, modules, str(path.relative_to(base.parent)))
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        edges.extend(visitor.edges)
    return modules, edges


def layer_of(module: str) -> int | None:
    return LAYERS.get(module, LAYERS.get(module.split(".")[0]))


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    modules, _ = import_edges()
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, (
        f"module(s) {', '.join(unplaced)} of {PACKAGE} have no layer: add each to LAYERS in "
        f"tests/test_architecture.py, at the lowest layer whose modules are all it imports"
    )


def test_imports_never_go_up_a_layer() -> None:
    _, edges = import_edges()
    upward = [e for e in edges
              if layer_of(e.source) is not None and layer_of(e.target) is not None
              and layer_of(e.target) > layer_of(e.source)]
    assert not upward, (
        "imports from a lower layer to a higher one (see LAYERS in tests/test_architecture.py); move the code "
        "to the lower layer, or pass it in from above:\n"
        + "\n".join(f"  {e} (layer {layer_of(e.source)} -> {layer_of(e.target)})"
                    + (" [type-only]" if e.type_only else "") for e in upward)
    )


def test_only_the_cli_imports_serve() -> None:
    """The server is an access layer of its own: nothing but the command line starts it."""
    _, edges = import_edges()
    outside = [e for e in edges if e.target.split(".")[0] == "serve" and e.source.split(".")[0] not in ("serve", "cli")]
    assert not outside, "only cli may import serve:\n" + "\n".join(f"  {e}" for e in outside)


def test_no_import_cycles() -> None:
    _, edges = import_edges()
    # A TYPE_CHECKING import never runs, so it cannot take part in an import-time cycle; the layer rule
    # above still applies to it.
    runtime = [e for e in edges if not e.type_only]
    found = cycles(runtime)
    lines = []
    for component in found:
        members = set(component)
        lines.append(f"  cycle among {', '.join(component)}:")
        lines += [f"    {e}" for e in runtime if e.source in members and e.target in members]
    assert not found, "import cycles in " + PACKAGE + " (break each by moving code down a layer):\n" + "\n".join(lines)


def test_the_checker_sees_what_it_must() -> None:
    """The checks above would pass vacuously if the graph came out empty or relative imports were missed."""
    modules, edges = import_edges()
    assert {"engine", "store", "windows", "cli", "__init__"} <= set(modules)
    pairs = {(e.source, e.target) for e in edges}
    assert ("store", "windows") in pairs  # a module-level relative import
    assert any(e.source == "cli" and not e.type_only for e in edges)
    # Function-level imports count: cli imports its commands' modules inside the handlers.
    assert any(e.source == "cli" and e.deferred for e in edges)
    assert cycles([Edge("a", "b", "f", 1, False), Edge("b", "c", "f", 2, False), Edge("c", "a", "f", 3, False),
                   Edge("c", "d", "f", 4, False)]) == [["a", "b", "c"]]


def test_the_resolver_on_a_package_with_a_subpackage(tmp_path: Path) -> None:
    """Relative imports at every level, ``from . import module``, subpackages, TYPE_CHECKING and functions."""
    base = tmp_path / PACKAGE
    (base / "kinds").mkdir(parents=True)
    files = {
        "__init__.py": "from .kinds import atlas\n__version__ = '1'\n",
        "engine.py": ("from . import store\nfrom typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from .kinds import Kind\n"),
        "store.py": "import enformer_batch.windows\n",
        "windows.py": "import os\n",
        "kinds/__init__.py": "from .atlas import run\nclass Kind: ...\n",
        "kinds/atlas.py": ("from ..engine import x\nfrom .. import __version__\n"
                           "def run():\n    from . import variants\n"),
        "kinds/variants.py": "from enformer_batch.kinds.atlas import run\n",
    }
    for name, text in files.items():
        (base / name).write_text(text)
    modules, edges = import_edges(base)
    assert set(modules) == {"__init__", "engine", "store", "windows", "kinds", "kinds.atlas", "kinds.variants"}
    got = {(e.source, e.target, e.type_only, e.deferred) for e in edges}
    assert got == {
        ("__init__", "kinds.atlas", False, False),
        ("engine", "store", False, False),
        ("engine", "kinds", True, False),
        ("store", "windows", False, False),
        ("kinds", "kinds.atlas", False, False),
        ("kinds.atlas", "engine", False, False),
        ("kinds.atlas", "__init__", False, False),
        ("kinds.atlas", "kinds.variants", False, True),
        ("kinds.variants", "kinds.atlas", False, False),
    }
    assert layer_of("kinds.atlas") == LAYERS["kinds"]
    # kinds imports kinds.atlas but nothing imports kinds back, so it is outside the cycle.
    assert cycles([e for e in edges if not e.type_only]) == [["__init__", "kinds.atlas", "kinds.variants"]]


# --- no citations of paths outside the repository ------------------------------------------------------

# Built from pieces so that this file does not match itself.
OUTSIDE = [
    (re.compile(r"\.\./" + "shared"), "a path outside the repository"),
    (re.compile(r"\bdesign" + r"\.md\b"), "a file outside the repository (the contract is docs/contract.md)"),
    (re.compile("/work" + r"/(?:shared|main|wt)\b"), "a path on the machine it was written on"),
]
CHECKED = ["*.py", "*.md", "Makefile", "*.toml", "*.yaml", "*.yml"]


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--", *CHECKED], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")
    return [line for line in out.splitlines() if line]


def test_no_tracked_file_cites_a_path_outside_the_repository() -> None:
    files = tracked_files()
    hits = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree, not yet in the index
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern, what in OUTSIDE:
                if pattern.search(line):
                    hits.append(f"  {name}:{number}: {what}: {line.strip()[:120]}")
    assert not hits, ("tracked files cite what a clone does not have; cite docs/contract.md (by section) or "
                      "a file in the repository instead:\n" + "\n".join(hits))


def test_the_citation_patterns_match() -> None:
    samples = ["see ../" + "shared/notes.md", "(design" + ".md, \"Tiling\")", "/work" + "/shared/x"]
    for sample, (pattern, _) in zip(samples, OUTSIDE):
        assert pattern.search(sample), sample
    assert not any(p.search('docs/contract.md, "Tiling and stitching"') for p, _ in OUTSIDE)
