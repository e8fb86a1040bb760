"""Connect to Ray: a cluster when an address is given (or RAY_ADDRESS is set), else a local one.

A local Ray is bound to the loopback interface (Ray's single-machine mode: its node address is
127.0.0.1, so its gRPC servers and the autoscaler and dashboard metrics endpoints, which answer
without authentication, are not reachable from the network), runs without its dashboard and
without the per-node Prometheus export. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 and
RAY_enable_metrics_collection=1, set by the user, restore Ray's defaults. Call `init_ray()` at the start of
every job; it is a no-op when Ray is already initialised (tests share one session-wide instance).
`ray.init` replaces the process's SIGTERM handler with `sys.exit(15)`; the caller's handler is put
back (the CLI's turns SIGTERM into a clean stop, exit 143), and a SIGTERM during `ray.init` goes to
it too. An `address` argument (`--address`) is probed first (`check_address`): one that does not
answer, or is not Ray, fails in seconds instead of Ray's minutes of retries; RAY_ADDRESS (which Ray
sets for a cluster's jobs) is used as it is.

Connected to a cluster (an address or RAY_ADDRESS, as in every `convlstm submit` job), the output of
tasks and actors is forwarded to the driver even when `quiet`: the Ray Train workers' per-epoch
lines (rank 0) then reach `convlstm submit --wait` and `ray job logs`, the only place a job's
progress shows. A local Ray stays quiet.

A local Ray also bounds what a streamed Ray Data read holds ahead of its consumer: Ray Data's
object-store budget for the process's datasets (`DataContext.execution_options.resource_limits`) is
READ_AHEAD_PER_CPU per CPU (Ray Data's own default is half the object store, 30 % of RAM) unless
the caller set one; a cluster keeps Ray Data's defaults (docs/scaling.md, "Memory and disk per node").
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 5.0
READ_AHEAD_PER_CPU = 16 << 20  # bytes of Ray Data's object-store budget per CPU of a local Ray
# An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, a Ray Client
# server) answers with a SETTINGS frame (frame type 4 in the 4th byte); an HTTP/1 server does not.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True):
    """Initialise Ray once; returns the `ray` module. `address` wins over RAY_ADDRESS."""
    import ray  # deferred: Ray ~2-10 s to import; the module's other users skip it

    if address:
        check_address(address)  # also when connected already (tests share one Ray): a bad --address is refused
    if ray.is_initialized():
        return ray
    if threading.current_thread() is threading.main_thread():
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            return _init(ray, address, num_cpus, quiet)
        except SystemExit as exc:  # SIGTERM during ray.init, whose handler exits: the caller's decides
            if exc.code == signal.SIGTERM and callable(sigterm):
                sigterm(signal.SIGTERM, None)
            raise
        finally:
            signal.signal(signal.SIGTERM, sigterm)
    return _init(ray, address, num_cpus, quiet)


class NotARayCluster(ValueError):
    """`--address` names nothing that answers, or something that is not Ray (exit 2)."""


def check_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, in seconds and in one line (NotARayCluster), a cluster address that does not answer or
    is not a Ray GCS or Ray Client server: `ray.init` would retry for minutes, or fail with an error
    that is no answer. `auto` and `local` are Ray's own and pass; so do TLS clusters (RAY_USE_TLS),
    whose handshake is not probed."""
    shown = f"--address {address}"
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    if parts.scheme in ("http", "https"):
        raise NotARayCluster(f"{shown}: an HTTP URL (a Ray dashboard or Jobs API?); give the cluster's GCS "
                             "address, e.g. HEAD:6379, or run the command on the cluster with `convlstm submit`")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise NotARayCluster(f"{shown}: not HOST:PORT (e.g. HEAD:6379) or ray://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            conn.settimeout(timeout_s)
            conn.sendall(_H2_PREFACE)
            answer = conn.recv(9)
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise NotARayCluster(f"{shown}: no Ray cluster answers there ({reason}, within {timeout_s:g} s)") from None
    if len(answer) < 4 or answer[3] != 4:
        raise NotARayCluster(f"{shown}: something answers there, but not a Ray cluster (no gRPC); give the "
                             "cluster's GCS address, e.g. HEAD:6379")


def _init(ray, address: str | None, num_cpus: int | None, quiet: bool):
    address = address or os.environ.get("RAY_ADDRESS") or None  # RAY_ADDRESS (set by Ray on a cluster's jobs): as is
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
    bound_read_ahead(num_cpus or ray.cluster_resources().get("CPU", 1))
    return ray


def bound_read_ahead(cpus: float, context=None) -> None:
    """Cap Ray Data's object-store budget for this process's datasets (or `context`, a DataContext) at
    READ_AHEAD_PER_CPU x `cpus`, unless one is set. Datasets copy the budget when created (Ray Train's
    ingest options when built: `jobs.training.ray_fit.ordered_ingest`).
    Measured (benchmarks/README.md, "Archive scale"): without it a streamed pass of 16 days of radar
    buffered the split in the object store and its process tree's PSS grew 2.2x from 1 day."""
    from ray.data import DataContext  # deferred: Ray ~2-10 s to import; the module's other users skip it

    options = (context or DataContext.get_current()).execution_options
    if options.resource_limits.object_store_memory == float("inf"):
        options.resource_limits = options.resource_limits.copy(object_store_memory=int(cpus * READ_AHEAD_PER_CPU))


_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOCAL_ONLY = {_CLUSTER: "0", "RAY_enable_metrics_collection": "0"}
