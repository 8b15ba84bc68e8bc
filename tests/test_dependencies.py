"""Every package cortex's code imports is one pyproject.toml declares: the library's imports among its
runtime dependencies, the tests' among the runtime and ``test`` dependencies. A fresh clone installs
only those (CI does), so an import that works here only because the shared environment happens to have
the package (installed for a peer such as LiteLLM) fails this test, not a user."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    return {_canonical(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def _imported(folder: Path) -> dict[str, Path]:
    """Top-level modules imported anywhere under ``folder`` (also inside functions and try blocks),
    each with one file importing it."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


@functools.cache
def _distributions() -> dict[str, list[str]]:
    """Import name -> the installed distributions providing it (a scan of the environment: once)."""
    return dict(importlib.metadata.packages_distributions())


def _undeclared(folder: Path, declared: set[str]) -> list[str]:
    local = {p.stem for p in folder.rglob("*.py")} | {"cortex"}
    distributions = _distributions()
    problems = []
    for module, path in _imported(folder).items():
        if module in sys.stdlib_module_names or module in local:
            continue
        providers = {_canonical(d) for d in distributions.get(module, [])}
        if not providers & declared:
            problems.append(
                f"{module} (imported by {path.relative_to(ROOT)}; provided by {providers or '?'})"
            )
    return problems


def test_the_library_imports_only_its_runtime_dependencies():
    assert _undeclared(ROOT / "src", _declared()) == []


def test_the_tests_import_only_runtime_and_test_dependencies():
    assert _undeclared(ROOT / "tests", _declared("test")) == []
