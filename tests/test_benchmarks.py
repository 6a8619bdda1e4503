"""Benchmarks are code too: each one answers ``--help``, imports only what exists, and the cheap ones run.

The scripts are found by glob, so a new benchmark is covered without touching this file. ``benchmarks/_*.py``
are helpers shared by the scripts (not benchmarks themselves); each must be used by one.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
HELPERS = sorted((ROOT / "benchmarks").glob("_*.py"))


def _run(script: Path, *args: str, tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               TMPDIR=str(tmp), RAY_USAGE_STATS_ENABLED="0")
    return subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_benchmarks_are_found() -> None:
    names = {p.name for p in BENCHMARKS}
    assert {"query.py", "trust.py", "scale.py", "writer.py"} <= names, names


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_answers_help(script: Path, tmp_path: Path) -> None:
    """``--help`` prints the usage and what the benchmark measures, and does nothing else (no Ray, no work)."""
    result = _run(script, "--help", tmp=tmp_path)
    assert result.returncode == 0, f"{script.name} --help failed:\n{result.stderr[-3000:]}"
    assert result.stdout.startswith(f"usage: {script.name}"), result.stdout[:500]
    docstring = ast.get_docstring(ast.parse(script.read_text()))
    assert docstring, f"{script.name} needs a module docstring saying what it measures and what it prints"
    # The description is the docstring: its first line, at least, must be in the help.
    assert docstring.splitlines()[0].strip() in result.stdout, f"{script.name}: --help does not show its docstring"
    assert "Ray" not in result.stderr, f"{script.name} --help started Ray:\n{result.stderr[-2000:]}"
    assert not list(tmp_path.iterdir()), f"{script.name} --help wrote files: {list(tmp_path.iterdir())}"


def _package_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every ``enformer_batch`` import in a file, at any depth (function-level too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("enformer_batch"):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "enformer_batch"]
    return found


@pytest.mark.parametrize("script", BENCHMARKS + HELPERS, ids=lambda p: p.name)
def test_benchmark_imports_exist(script: Path) -> None:
    """Every name a benchmark takes from the package exists, including imports deferred into functions
    (``--help`` alone would not reach those)."""
    missing = []
    for line, module, name in _package_imports(script):
        try:
            imported = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"benchmarks/{script.name}:{line}: {module} ({e})")
            continue
        if name is not None and not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"benchmarks/{script.name}:{line}: {module} has no {name}")
    assert not missing, "benchmarks import what the package no longer has:\n" + "\n".join(missing)


@pytest.mark.parametrize("helper", HELPERS, ids=lambda p: p.name)
def test_helpers_are_used(helper: Path) -> None:
    users = [p.name for p in BENCHMARKS if f"from {helper.stem} import" in p.read_text()
             or f"import {helper.stem}" in p.read_text()]
    assert users, f"benchmarks/{helper.name} is used by no benchmark; delete it"


# Benchmarks cheap enough to run for real (seconds each), with what their output must contain.
CHEAP = [
    ("trust.py", ("--quick",), ("codes_digest", "resume check, 200 parts, tokens match")),
    ("scale.py", ("--plan-only", "--plan-chroms", "3"), ("| hg38 primary | 3 | 114,688 |", "planning")),
    ("query.py", ("--mb", "0.5", "--tracks", "4", "--runs", "2"), ("query, 1 track", "DuckDB, same rows")),
]


@pytest.mark.parametrize(("name", "args", "expected"), CHEAP, ids=[c[0] for c in CHEAP])
def test_cheap_benchmark_runs(name: str, args: tuple[str, ...], expected: tuple[str, ...], tmp_path: Path) -> None:
    result = _run(ROOT / "benchmarks" / name, *args, tmp=tmp_path)
    assert result.returncode == 0, f"{name} {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    for text in expected:
        assert text in result.stdout, f"{name}: {text!r} not in its output:\n{result.stdout[-3000:]}"
    assert not list(tmp_path.iterdir()), f"{name} left files behind: {list(tmp_path.iterdir())}"
