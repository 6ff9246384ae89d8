"""pyproject.toml's runtime dependencies are exactly what the runtime packages import.

A library only the tests use belongs in the ``dev`` extra; one the runtime code never imports
(and nothing loads for it) does not belong in ``dependencies`` at all.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("gateway", "system_apis", "process_apis", "experience_apis")
FIRST_PARTY = {*RUNTIME_PACKAGES, "tests", "bench"}
LOADED_FOR_RUNTIME = {"uvloop"}  # not imported: uvicorn runs its loop when it is installed


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: Iterable[str]) -> set[str]:
    names = set()
    for line in requirements:
        match = re.match(r"[A-Za-z0-9._-]+", line.strip())
        assert match, line
        names.add(canonical(match.group(0)))
    return names


def imported_modules(directories: Iterable[Path]) -> set[str]:
    """Absolute imports of every module under ``directories``, at any depth of the code."""
    modules: set[str] = set()
    for directory in directories:
        for path in directory.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module)  # and the names, which may be submodules
                    modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    top = {m.split(".")[0] for m in modules}
    assert top - set(sys.stdlib_module_names) - FIRST_PARTY, "found no third-party import"
    return {m for m in modules if m.split(".")[0] not in {*sys.stdlib_module_names, *FIRST_PARTY}}


@cache
def distributions_by_top_module() -> dict[str, list[str]]:
    return dict(packages_distributions())


@cache
def files_of(dist_name: str) -> frozenset[Path]:
    dist = distribution(dist_name)
    return frozenset(Path(dist.locate_file(f)).resolve() for f in dist.files or ())


def providing_distribution(module: str) -> str | None:
    """The installed distribution that holds ``module``; None for a name that is no module
    of its own (a namespace package such as ``opentelemetry``, or a name imported from one)."""
    candidates = distributions_by_top_module().get(module.split(".")[0], [])
    assert candidates, f"{module} is not installed"
    if len(set(candidates)) == 1:
        return canonical(candidates[0])
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    [owner] = {canonical(d) for d in candidates if origin in files_of(d)}
    return owner


def distributions_imported_by(directories: Iterable[Path]) -> set[str]:
    found = {providing_distribution(m) for m in imported_modules(directories)}
    return {d for d in found if d is not None}


def declared(pyproject: Path) -> tuple[set[str], set[str]]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    runtime = requirement_names(project["dependencies"])
    dev = requirement_names(project["optional-dependencies"]["dev"])
    return runtime, dev


def test_runtime_dependencies_are_what_runtime_code_imports() -> None:
    runtime, _ = declared(ROOT / "pyproject.toml")
    imported = distributions_imported_by(ROOT / p for p in RUNTIME_PACKAGES)
    assert sorted(runtime - imported - LOADED_FOR_RUNTIME) == [], "declared, never imported"
    assert sorted(imported - runtime) == [], "imported, not declared"


def test_test_imports_are_declared_for_runtime_or_dev() -> None:
    runtime, dev = declared(ROOT / "pyproject.toml")
    imported = distributions_imported_by([ROOT / "tests"])
    assert sorted(imported - runtime - dev) == []
    assert sorted(runtime & dev) == [], "a runtime dependency repeated in dev"
