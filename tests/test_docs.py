"""docs/architecture.md cannot rot silently: its layer table is ``LAYERS``, and every name it uses exists.

The guide names modules, classes, functions, files and tests; a rename that forgets it fails here, naming
the line. All checks are static (``ast`` and the file system): nothing is imported, so they take well under
a second and never load torch or Ray.

* Every repository path in the text (``enformer_batch/…``, ``tests/…``, ``docs/…``, …) exists, and so does
  every relative link, down to the heading an anchor points at.
* Every backticked dotted name whose first part is a module of the package (``kinds.atlas.plan_parts``,
  ``store.OutputStore.write_part``; a leading ``enformer_batch.`` is allowed) or a class of the package
  (``Kind.parts``) is defined: the module, a name at its top level, then an attribute of that class (its
  bases in the package included). Any other dotted name must start with a root listed in ``FOREIGN``, so a
  misspelt module is an error rather than something skipped.
* Every backticked ``test_…`` name is a test or fixture defined in ``tests/``.
* Every module of the package appears in the guide (the module drawing), so does every test file (what it
  covers), and the table under "## Layers" places each module where ``LAYERS`` does.
* The README's "## Architecture" section, the guide in short, is held to the same names rule.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.test_architecture import LAYERS, PACKAGE, ROOT, package_modules

GUIDE = ROOT / "docs" / "architecture.md"

# Dotted names the guide may use that are not the package's: other libraries.
FOREIGN = {"pyarrow", "torch", "ray", "duckdb", "numpy"}
# A dotted span ending in one of these is a file name (``config.json``), not a Python name.
FILE_SUFFIXES = {"json", "md", "py", "parquet", "tsv", "txt", "safetensors", "bin", "fa", "gz", "yaml", "png",
                 "lock", "fai", "gzi", "2bit", "vcf", "bed", "toml"}
TOP_DIRS = ("enformer_batch", "tests", "benchmarks", "docs", "jobs", "tools", "cluster")

# A path ends where the name does; one followed by a glob or placeholder (``benchmarks/_*.py``) is skipped.
PATH = re.compile(r"(?<![\w/.-])((?:" + "|".join(TOP_DIRS) + r")/[\w./-]*[\w/])(?![\w./*<-])")
LINK = re.compile(r"\]\(([^)\s]+)\)")
BACKTICKED = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
CALL = re.compile(r"([\w.]+)\(.*\)")


@dataclass
class Names:
    """What a module defines at its top level, and the attributes of each class it defines."""

    top: set[str] = field(default_factory=set)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)


def _top_level(body: list[ast.stmt], names: Names) -> None:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.top.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.top.add(node.name)
            names.classes[node.name] = node
        elif isinstance(node, ast.Assign):
            names.top.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.top.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):  # re-exports exist for a reader too
            names.top.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                _top_level(getattr(node, block, []), names)
            for handler in getattr(node, "handlers", []):
                _top_level(handler.body, names)


@cache
def _modules() -> dict[str, Names]:
    found = {}
    for name, path in package_modules().items():
        names = Names()
        _top_level(ast.parse(path.read_text(), filename=str(path)).body, names)
        found[name] = names
    return found


@cache
def _classes() -> dict[str, list[ast.ClassDef]]:
    """Every class of the package by name (a name may be defined in several modules)."""
    by_name: dict[str, list[ast.ClassDef]] = {}
    for names in _modules().values():
        for name, node in names.classes.items():
            by_name.setdefault(name, []).append(node)
    return by_name


def _class_attributes(node: ast.ClassDef, seen: frozenset[str] = frozenset()) -> set[str]:
    """Methods, class-level and annotated fields, ``self.x = …`` in any method, and the same of its bases."""
    attrs: set[str] = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            attrs.add(item.name)
            for sub in ast.walk(item):
                targets = sub.targets if isinstance(sub, ast.Assign) else (
                    [sub.target] if isinstance(sub, (ast.AnnAssign, ast.AugAssign)) else [])
                attrs.update(t.attr for t in targets if isinstance(t, ast.Attribute)
                             and isinstance(t.value, ast.Name) and t.value.id == "self")
        elif isinstance(item, ast.Assign):
            attrs.update(t.id for t in item.targets if isinstance(t, ast.Name))
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            attrs.add(item.target.id)
        elif isinstance(item, ast.ClassDef):
            attrs.add(item.name)
    for base in node.bases:
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        if name and name not in seen:
            for parent in _classes().get(name, []):
                attrs |= _class_attributes(parent, seen | {node.name})
    return attrs


def _has_attribute(classes: list[ast.ClassDef], attr: str) -> bool:
    return any(attr in _class_attributes(c) for c in classes)


def dotted_name(span: str) -> str | None:
    """The dotted Python name a backticked span holds (``a.b(x)`` -> ``a.b``), or None if it holds none."""
    span = span.strip()
    call = CALL.fullmatch(span)
    if call:
        span = call.group(1)
    if not DOTTED.fullmatch(span) or span.rsplit(".", 1)[1] in FILE_SUFFIXES:
        return None
    return span


def check_name(name: str) -> str | None:
    """None if ``name`` exists in the package (or is another library's), else what is wrong with it."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        parts = parts[1:]
    modules = _modules()
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        if module in modules:
            rest = parts[i:]
            break
    else:
        if parts[0] in _classes():
            if len(parts) == 2 and _has_attribute(_classes()[parts[0]], parts[1]):
                return None
            return f"class {parts[0]} has no attribute {'.'.join(parts[1:])}"
        if parts[0] in FOREIGN:
            return None
        return (f"{parts[0]} is neither a module nor a class of {PACKAGE} (another library's? add its root to "
                "FOREIGN in tests/test_docs.py)")
    if not rest:
        return None
    names = modules[module]
    if rest[0] not in names.top:
        return f"{PACKAGE}.{module} has no {rest[0]}"
    if len(rest) == 1:
        return None
    node = names.classes.get(rest[0])
    if node is None:
        return f"{PACKAGE}.{module}.{rest[0]} is not a class, so .{'.'.join(rest[1:])} cannot be checked"
    if len(rest) == 2 and _has_attribute([node], rest[1]):
        return None
    return f"{PACKAGE}.{module}.{rest[0]} has no attribute {'.'.join(rest[1:])}"


@cache
def _test_functions() -> set[str]:
    """Functions defined at the top level of tests/ (tests and fixtures)."""
    found = set()
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.add(node.name)
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def problems(text: str, base: Path = GUIDE.parent) -> tuple[list[str], int]:
    """What in ``text`` names something that does not exist (``line: problem``), and how many names were checked."""
    found, checked = [], 0
    for number, line in enumerate(text.splitlines(), 1):
        for path in PATH.findall(line):
            checked += 1
            if not (ROOT / path).exists():
                found.append(f"{number}: {path} does not exist")
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:|#", target):
                continue  # a URL, or an anchor of this page
            checked += 1
            file, _, anchor = target.partition("#")
            resolved = (base / file).resolve()
            if not resolved.exists():
                found.append(f"{number}: link target {target} does not exist")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                found.append(f"{number}: {file} has no heading for #{anchor}")
        for span in BACKTICKED.findall(line):
            name = dotted_name(span)
            if name is not None:
                checked += 1
                wrong = check_name(name)
                if wrong:
                    found.append(f"{number}: `{span}`: {wrong}")
            elif re.fullmatch(r"test_\w+", span.strip()):
                checked += 1
                if span.strip() not in _test_functions():
                    found.append(f"{number}: `{span}` is defined nowhere in tests/")
    return found, checked


def test_every_name_in_the_guide_exists() -> None:
    found, checked = problems(GUIDE.read_text())
    assert not found, ("docs/architecture.md names what the code does not have; correct the guide (or the code):\n"
                       + "\n".join(f"  docs/architecture.md:{p}" for p in found))
    assert checked >= 100, f"only {checked} names checked: the patterns no longer match the guide's style"


def test_the_readme_architecture_section_names_what_exists() -> None:
    """The README's short version of the guide is held to the same rule."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    found, checked = problems(section, base=ROOT)
    assert not found, ("README.md, section Architecture, names what the code does not have:\n"
                       + "\n".join(f"  section line {p}" for p in found))
    assert checked >= 3, checked


def test_every_module_is_in_the_guide() -> None:
    text = GUIDE.read_text()
    missing = []
    for path in package_modules().values():
        relative = path.relative_to(ROOT / PACKAGE).as_posix()
        if not re.search(r"(?<![\w/])" + re.escape(relative) + r"(?!\w)", text) and \
                f"{PACKAGE}/{relative}" not in text:
            missing.append(relative)
    assert not missing, (f"module(s) {', '.join(missing)} are not in docs/architecture.md: add each to the "
                         "module drawing, with what it owns")


def test_every_test_file_is_in_the_guide() -> None:
    text = GUIDE.read_text()
    missing = [p.name for p in sorted((ROOT / "tests").glob("test_*.py")) if f"tests/{p.name}" not in text]
    assert not missing, (f"{', '.join(missing)} not in docs/architecture.md: add each to the table under "
                         "'How the tests are organised', with what it covers")


def layer_table(text: str) -> dict[str, int]:
    """Module -> layer, from the table rows (``| 0 | `retry`, ... |``) under the "## Layers" heading."""
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in re.finditer(r"^\| *(\d+) *\|([^|]*)\|", section, re.MULTILINE):
        for module in BACKTICKED.findall(row.group(2)):
            table[module] = int(row.group(1))
    return table


def test_the_guide_layer_table_is_layers() -> None:
    table = layer_table(GUIDE.read_text())
    wrong = sorted(f"{m}: guide {table.get(m)}, LAYERS {LAYERS.get(m)}" for m in set(table) | set(LAYERS)
                   if table.get(m) != LAYERS.get(m))
    assert not wrong, ("the layer table in docs/architecture.md differs from LAYERS in tests/test_architecture.py "
                       "(missing: None):\n  " + "\n  ".join(wrong))


def test_the_checks_catch_what_they_must() -> None:
    """The checks above would pass vacuously if a pattern stopped matching."""
    text = "\n".join([
        "`store.OutputStore.write_part` and `enformer_batch.engine.run_job(job)` and `OutputStore.publish` exist;",
        "`store.OutputStore.no_such_method`, `engine.no_such_function`, `OutputStore.no_such_member`,",
        "`familes.FAMILIES`, `test_no_such_test`, enformer_batch/no_such_module.py,",
        "[a link](no_such_file.md), [an anchor](contract.md#no-such-section), [fine](contract.md#commit-protocol)",
        "`config.json`, `pyarrow.dataset`, `--stride`, `test_the_checks_catch_what_they_must` are not flagged",
    ])
    found, checked = problems(text, base=ROOT / "docs")
    assert [p.split(":")[0] for p in found] == ["2"] * 3 + ["3"] * 3 + ["4"] * 2, found
    assert checked == 14, checked
    assert layer_table("x\n## Layers\n\n| 0 | `a`, `b` | x |\n| 3 | `c` | y |\n\n## Next\n| 9 | `d` | z |\n") == {
        "a": 0, "b": 0, "c": 3}
