"""Connect to Ray: a cluster when an address is given (or RAY_ADDRESS is set), else a local one.

Local Ray binds its dashboard to 127.0.0.1. Call `init_ray()` at the start of every job; it
is a no-op when Ray is already initialised (tests share one session-wide instance).

Connected to a cluster (an address or RAY_ADDRESS, as in every `convlstm submit` job), the output of
tasks and actors is forwarded to the driver even when `quiet`: the Ray Train workers' per-epoch
lines (rank 0) then reach `convlstm submit --wait` and `ray job logs`, the only place a job's
progress shows. A local Ray stays quiet.
"""
from __future__ import annotations

import os


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """Initialise Ray once; returns the `ray` module. `address` wins over RAY_ADDRESS."""
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"log_to_driver": not quiet or bool(address), "configure_logging": True}
    if quiet:
        import logging

        kwargs["logging_level"] = logging.WARNING
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1", **kwargs)
    return ray
