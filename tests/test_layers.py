"""The import floors of docs/architecture.md ("Packages"), read from the source (pure AST, nothing imported):
(a) no module imports a higher floor (also not under TYPE_CHECKING or inside a function), (b) an import
inside a function carries a `# deferred: <reason>` comment on its line or the line above, (c) `convlstm/`
imports neither Ray nor MLflow; and, below, library code reads manifests and evaluation results by attribute,
and no public function takes more than MAX_PARAMETERS parameters."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("convlstm", "pipelines", "jobs")

# Lowest floor first. A module may import its own package and any lower floor; packages sharing a floor
# may not import each other. The base modules of jobs/ are open to all of jobs.
FLOORS: list[tuple[str, ...]] = [
    ("convlstm",),
    ("pipelines",),
    ("jobs", "jobs.errors", "jobs.paths", "jobs.plots", "jobs.jsonable", "jobs.images", "jobs.checkpoints",
     "jobs.signals"),
    ("jobs.tasks",),
    ("jobs.registry",),
    ("jobs.training",),
    ("jobs.evaluation",),
    ("jobs.nowcast",),  # a nowcast runs the model through evaluation's `predict`
    ("jobs.ops",),
    ("jobs.cli",),
]
BANNED_IN_CONVLSTM = ("ray", "mlflow")



def _unit(module: str) -> tuple[int, str] | None:
    """(floor, unit) of a project module: the longest FLOORS entry that is the module or a package above it."""
    best: tuple[int, str] | None = None
    for floor, units in enumerate(FLOORS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
                best = (floor, unit)
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement reaches (`from a import b` counts as `a.b`, which may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _inline_imports(tree: ast.Module) -> list[tuple[ast.stmt, str]]:
    """(import, enclosing function name) for every import inside a function body."""
    found = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.append((node, func.name))
    return found


def _deferred(line: str) -> bool:
    """A `# deferred: <reason>` comment with a reason of a few words."""
    reason = line.partition("# deferred:")[2]
    return len(reason.split()) >= 3


def violations() -> list[str]:
    found: list[str] = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            module = _module_name(path)
            source = path.read_text()
            lines = source.splitlines()
            tree = ast.parse(source, rel)
            here = _unit(module)
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                for target in _targets(node, module, path.name == "__init__.py"):
                    top = target.split(".")[0]
                    if package == "convlstm" and top in BANNED_IN_CONVLSTM:
                        found.append(f"{rel}:{node.lineno}: (c) convlstm/ imports {top}")
                    there = _unit(target)
                    if here is None or there is None or there[1] == here[1]:
                        continue
                    if there[0] > here[0] or (there[0] == here[0] and there[0] != 2):
                        found.append(f"{rel}:{node.lineno}: (a) {here[1]} imports {target} from a higher "
                                     "or sibling floor")
            for node, function in _inline_imports(tree):
                above = lines[node.lineno - 2] if node.lineno >= 2 else ""
                if not (_deferred(lines[node.lineno - 1]) or _deferred(above)):
                    found.append(f"{rel}:{node.lineno}: (b) import inside {function}() without a "
                                 "`# deferred: <reason>` comment")
    return sorted(set(found))


def test_imports_point_down() -> None:
    problems = violations()
    assert not problems, "\n".join(problems)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    assert _unit("jobs.tasks.base") == (3, "jobs.tasks")
    assert _unit("jobs.errors") == (2, "jobs.errors")
    assert _unit("jobs.training.config")[0] > _unit("jobs.tasks.base")[0]
    tree = ast.parse("def f():\n    import torch\n")
    assert [name for _, name in _inline_imports(tree)] == ["f"]


# The typed contracts between layers (issue 23 item 2): library code reads a dataset manifest or an
# evaluation result through the models' attributes, never by JSON key (the models' `__getitem__` is
# for scripts and tests), so a renamed field fails where it is read, not at run time far away.
CONTRACT_NAMES = {"manifest", "manifests", "trained_manifests", "updated", "previous_manifest"}
CONTRACT_CALLS = {"load_manifest", "build_manifest", "run_prepare", "load_evaluation", "evaluate", "score_model"}


def _contract_lookups(tree: ast.Module) -> list[int]:
    """Lines where a manifest or evaluation result is subscripted with a string key."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)):
            continue
        value = node.value
        if isinstance(value, ast.Call):
            value = value.func
        name = value.id if isinstance(value, ast.Name) else value.attr if isinstance(value, ast.Attribute) else None
        if name in CONTRACT_NAMES | CONTRACT_CALLS:
            lines.append(node.lineno)
    return lines


def test_library_code_reads_manifests_and_results_by_attribute() -> None:
    found = [f"{path.relative_to(REPO)}:{line}" for package in ("pipelines", "jobs")
             for path in sorted((REPO / package).rglob("*.py"))
             for line in _contract_lookups(ast.parse(path.read_text()))]
    assert not found, found
    sample = "load_manifest(p)['task']\nmanifest['splits']\nmanifest.splits['x']\n"
    assert _contract_lookups(ast.parse(sample)) == [1, 2]


# Modules by concern (issue 23 item 4): no public function of jobs/ or pipelines/ takes more than
# MAX_PARAMETERS parameters (self/cls, *args and **kwargs not counted); more are grouped in small
# dataclasses or the typed models (e.g. `Compute`, `RunOptions`, `Scoring`, `Publish`, `DatasetSpec`).
MAX_PARAMETERS = 8


def _wide_functions(tree: ast.Module) -> list[tuple[int, str, int]]:
    """(line, name, parameters) of public functions and public classes' methods with too many parameters."""
    found = []

    def visit(node: ast.AST, owner: str = "") -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, f"{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (not child.name.startswith("_") or child.name == "__init__"):
                args = child.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)
                         if a.arg not in ("self", "cls")]
                if len(names) > MAX_PARAMETERS:
                    found.append((child.lineno, f"{owner}{child.name}", len(names)))

    visit(tree)
    return found


def test_public_functions_take_at_most_eight_parameters() -> None:
    found = [f"{path.relative_to(REPO)}:{line}: {name}() takes {count} parameters (at most {MAX_PARAMETERS})"
             for package in ("pipelines", "jobs") for path in sorted((REPO / package).rglob("*.py"))
             for line, name, count in _wide_functions(ast.parse(path.read_text()))]
    assert not found, "\n".join(found)
    wide = ("def f(a, b, c, d, e, f, g, h, i): pass\nclass C:\n    def m(self, a, *, b=1): pass\n"
            "def _g(a, b, c, d, e, f, g, h, i): pass\n")
    assert _wide_functions(ast.parse(wide)) == [(1, "f", 9)]
