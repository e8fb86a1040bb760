"""The `convlstm` package copied next to a logged model (MLflow `code_paths`), so the model loads
where this project is not installed."""
from __future__ import annotations

import shutil
from pathlib import Path

import convlstm


def convlstm_package(folder: Path) -> str:
    """A clean copy of the `convlstm` package (no bytecode caches) under `folder`, for `code_paths`."""
    source = Path(convlstm.__file__).resolve().parent
    target = folder / "convlstm"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)
