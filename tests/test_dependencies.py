"""Every third-party module the project's code imports is a declared dependency in pyproject.toml
(a module that works only because another package happens to pull it in breaks on a fresh install)."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib

from conftest import REPO

PACKAGES = ("convlstm", "pipelines", "jobs")


def imported_modules() -> dict[str, str]:
    """{top-level module: a file importing it} over the project's packages (absolute imports only)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def declared() -> set[str]:
    """Required dependencies, plus optional extras other than `test` (imported only where the feature
    is used, with an error naming the extra when it is missing, e.g. `pysteps`)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"],
             *(spec for extra, specs in project.get("optional-dependencies", {}).items() if extra != "test"
               for spec in specs)]
    names = {re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0] for spec in specs}
    return {name.lower().replace("_", "-") for name in names}


def test_every_import_is_a_declared_dependency():
    stdlib = set(sys.stdlib_module_names)
    distributions = md.packages_distributions()
    missing = {}
    for module, where in imported_modules().items():
        if module in stdlib or module in PACKAGES or module == "__future__":
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not owners & declared():
            missing[module] = where
    assert not missing, f"imported but not declared in [project].dependencies: {missing}"
