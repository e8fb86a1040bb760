"""Tasks as plugins: one module per dataset kind (`kth`, `radar`, `mnist`), registered by name.

`get_task(cfg, manifest)` builds the task for a config and a dataset; `task_class(name)` gives its
class (metrics, primary metric and direction, baselines, published figures) without data. Names
load on first use, so importing `jobs.tasks.plugins` (as config validation does) needs no torch.
"""
import importlib

from jobs.tasks.plugins import check_name, get_task, register, task_class, task_names

__all__ = ["Evaluator", "ForecastTask", "Task", "check_name", "get_task", "register", "task_class", "task_names"]


_MODULE_OF = {"Evaluator": "jobs.tasks.evaluator", "ForecastTask": "jobs.tasks.forecast", "Task": "jobs.tasks.base"}


def __getattr__(name: str):
    if name in _MODULE_OF:
        # deferred: the task modules load torch (~5 s); config validation must not
        return getattr(importlib.import_module(_MODULE_OF[name]), name)
    raise AttributeError(f"module 'jobs.tasks' has no attribute {name!r}")
