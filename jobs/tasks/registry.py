"""The task registry: `register` a `Task` subclass under its `name`; `get_task` builds one for a dataset.

The built-in tasks (kth, radar, mnist) register on first use; a new dataset registers its own task
class (see docs/architecture.md, "Adding a dataset").
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.tasks.base import Task

BUILTIN = ("kth", "radar", "mnist")
_TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make `cls` the task called `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a task needs a name")
    _TASKS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for name in BUILTIN:
        if name not in _TASKS:
            importlib.import_module(f"jobs.tasks.{name}")


def task_names() -> tuple[str, ...]:
    """Every registered task name, built-ins first."""
    _load_builtins()
    return tuple(_TASKS)


def check_name(name: str) -> str:
    """`name` if it is a task (built-in or registered) without importing the task modules; else ValueError."""
    if name not in BUILTIN and name not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(dict.fromkeys([*BUILTIN, *_TASKS]))}, got {name!r}")
    return name


def task_class(name: str) -> type["Task"]:
    """The task class called `name`; ValueError naming the known ones otherwise."""
    _load_builtins()
    if name not in _TASKS:
        raise ValueError(f"task must be one of {', '.join(_TASKS)}, got {name!r}")
    return _TASKS[name]


def get_task(cfg, manifest: dict) -> "Task":
    """The task object for `cfg.task` on the dataset `manifest`; ValueError when the dataset is another task's."""
    if manifest.get("task") != cfg.task:
        raise ValueError(f"--data holds a {manifest.get('task')!r} dataset, not {cfg.task!r}")
    return task_class(cfg.task)(cfg, manifest)
