"""Connect to Ray: a cluster when an address is given (or RAY_ADDRESS is set), else a local one.

A local Ray is bound to the loopback interface (Ray's single-machine mode: its node address is
127.0.0.1, so its gRPC servers and the autoscaler and dashboard metrics endpoints, which answer
without authentication, are not reachable from the network), runs without its dashboard and
without the per-node Prometheus export. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 and
RAY_enable_metrics_collection=1, set by the user, restore Ray's defaults. Call `init_ray()` at the start of
every job; it is a no-op when Ray is already initialised (tests share one session-wide instance).
`ray.init` replaces the process's SIGTERM handler with `sys.exit(15)`; the caller's handler is put
back (the CLI's turns SIGTERM into a clean stop, exit 143).

Connected to a cluster (an address or RAY_ADDRESS, as in every `convlstm submit` job), the output of
tasks and actors is forwarded to the driver even when `quiet`: the Ray Train workers' per-epoch
lines (rank 0) then reach `convlstm submit --wait` and `ray job logs`, the only place a job's
progress shows. A local Ray stays quiet.
"""
from __future__ import annotations

import logging
import signal
import threading

import os


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """Initialise Ray once; returns the `ray` module. `address` wins over RAY_ADDRESS."""
    import ray  # deferred: Ray ~2-10 s to import; the module's other users skip it

    if ray.is_initialized():
        return ray
    if threading.current_thread() is threading.main_thread():
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            return _init(ray, address, num_cpus, quiet)
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    return _init(ray, address, num_cpus, quiet)


def _init(ray, address: str | None, num_cpus: int | None, quiet: bool):
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"log_to_driver": not quiet or bool(address), "configure_logging": True}
    if quiet:
        # deferred: Ray ~2-10 s to import; the module's other users skip it
        import ray.data  # noqa: F401  (configures the ray.data logger on import; lower it afterwards)

        kwargs["logging_level"] = logging.WARNING
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines in the terminal
    if address:
        ray.init(address=address, **kwargs)
        return ray
    saved = {name: os.environ.get(name) for name in _LOCAL_ONLY}
    for name, value in _LOCAL_ONLY.items():
        os.environ.setdefault(name, value)  # read by the Ray processes this call starts
    from ray._private import ray_constants  # deferred: Ray ~2-10 s to import; the module's other users skip it

    local_only = os.environ[_CLUSTER] == "0"
    clustered, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, not local_only  # read at import
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1", **kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clustered
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
    return ray


_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOCAL_ONLY = {_CLUSTER: "0", "RAY_enable_metrics_collection": "0"}
