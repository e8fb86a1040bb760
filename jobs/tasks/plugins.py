"""The task table (not MLflow's Model Registry): which `Task` class each task name means.

Tasks come from three places, looked up in this order: the built-ins (kth, radar, mnist, imported on
first use), classes registered in this process with `@register`, and installed packages that declare
an entry point in the `convlstm.tasks` group (`blobs = my_package.tasks:BlobsTask` in their
pyproject's `[project.entry-points."convlstm.tasks"]`), the way pySTEPS finds its importer plugins.
Entry points are listed without importing them, so checking a name needs no torch.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.tasks.base import Task
    from pipelines.manifest import Manifest

BUILTIN = ("kth", "radar", "mnist")
ENTRY_POINT_GROUP = "convlstm.tasks"
_TASKS: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make `cls` the task called `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a task needs a name")
    _TASKS[cls.name] = cls
    return cls


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _known() -> list[str]:
    return list(dict.fromkeys([*BUILTIN, *_TASKS, *_entry_points()]))


def _load(name: str) -> None:
    if name in _TASKS:
        return
    if name in BUILTIN:
        importlib.import_module(f"jobs.tasks.{name}")
        return
    ep = _entry_points().get(name)
    if ep is None:
        return
    cls = ep.load()
    if getattr(cls, "name", None) != name:
        raise ValueError(f"entry point {ENTRY_POINT_GROUP}:{name} = {ep.value} is not a Task named {name!r}")
    _TASKS.setdefault(name, cls)


def task_names() -> tuple[str, ...]:
    """Every task name: built-ins, registered, installed (entry points)."""
    names = _known()
    for name in names:
        _load(name)
    return tuple(names)


def check_name(name: str) -> str:
    """`name` if it is a task (built-in, registered or installed) without importing task modules; else ValueError."""
    if name not in _known():
        raise ValueError(f"task must be one of {', '.join(_known())}, got {name!r}")
    return name


def task_class(name: str) -> type["Task"]:
    """The task class called `name`; ValueError naming the known ones otherwise."""
    _load(check_name(name))
    return _TASKS[name]


def get_task(cfg, manifest: Manifest) -> Task:
    """The task object for `cfg.task` on the dataset `manifest`; ValueError when the dataset is another task's."""
    if manifest.task != cfg.task:
        raise ValueError(f"--data holds a {manifest.task!r} dataset, not {cfg.task!r}")
    return task_class(cfg.task)(cfg, manifest)
