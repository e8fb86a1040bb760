"""Multi-node Ray clusters whose nodes share no disk: refuse node-local paths before any work.

On a Ray cluster with more than one alive node, a job's decode tasks, Ray Train workers and the
driver run on different machines. A plain path (`/data/kth`) then names a different folder on
each node: shards land on the workers' own disks while the manifest lands on the driver's, and Ray
Train fails minutes later on checkpoints it cannot gather. So every path a job reads or writes
(`--src`, `--out`, `--data`, `--storage`, reports) must be an object-store URI (s3://, gs://, any
pyarrow filesystem) or a folder every node mounts, declared in CONVLSTM_SHARED_PATHS
(`/mnt/shared:/mnt/other`, colon- or comma-separated). A declared folder is verified the way Ray
Train verifies its storage: the driver writes a marker file there, and one Ray task pinned to each
alive node (NodeAffinitySchedulingStrategy, 0 CPUs) must read it back; a node that cannot see it,
or does not answer within VERIFY_TIMEOUT_S, makes the check fail. Each refusal is one line
(`NodeLocalPath`, a ValueError: exit 2) naming the option and the fix.

Not connected to a cluster (no address, no RAY_ADDRESS, Ray not initialised), or on one node,
nothing is checked: a local Ray is one node.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import sys
import time
from typing import Collection, Mapping

from pipelines import storage
from pipelines.ray_session import init_ray

SHARED_PATHS_ENV = "CONVLSTM_SHARED_PATHS"
STORAGE_ENV = "CONVLSTM_STORAGE"  # jobs.paths.storage_root: the default root of job outputs
VERIFY_TIMEOUT_S = 120.0
MARKER_PREFIX = ".convlstm-shared-check-"
_verified: set[str] = set()  # shared roots verified by this process (one check per root)


class NodeLocalPath(ValueError):
    """A path the nodes of a multi-node cluster do not share; the message names the option and the fix."""


def shared_paths() -> list[str]:
    """The folders CONVLSTM_SHARED_PATHS declares mounted on every node (absolute, real paths)."""
    text = os.environ.get(SHARED_PATHS_ENV, "")
    return [os.path.realpath(os.path.expanduser(p)) for p in re.split(r"[:,]", text) if p.strip()]


def alive_nodes(address: str | None = None) -> list[dict] | None:
    """The alive nodes (`ray.nodes()` entries) of the Ray cluster this process is connected to, or
    None when it is not connected to one and none is named (`address`, RAY_ADDRESS): a job that
    starts its own local Ray runs on one node. Connects (`init_ray`) when an address is named."""
    ray = sys.modules.get("ray")
    initialized = ray is not None and ray.is_initialized()
    if not initialized and not (address or os.environ.get("RAY_ADDRESS")):
        return None

    ray = init_ray(address)
    return [node for node in ray.nodes() if node.get("Alive")]


def check_paths(paths: Mapping[str, str | None], *, address: str | None = None,
                nodes: list[dict] | None = None, defaulted: Collection[str] = ()) -> None:
    """Refuse (NodeLocalPath) any of `paths` ({option: path}; None values skipped) that is node-local
    on a multi-node cluster; verify the declared shared folders they lie in. `nodes`: the alive nodes
    if already known (default: `alive_nodes(address)`). `defaulted`: options whose path is the
    default under `<home>/outputs` (the message then points at CONVLSTM_STORAGE)."""
    local = {option: storage.as_uri(path) for option, path in paths.items()
             if path is not None and not storage.is_remote(path)}
    if not local:
        return
    if nodes is None:
        nodes = alive_nodes(address)
    if not nodes or len(nodes) < 2:
        return
    declared = shared_paths()
    for option, path in local.items():
        real = os.path.realpath(os.path.expanduser(path))
        root = next((d for d in declared if real == d or real.startswith(d.rstrip(os.sep) + os.sep)), None)
        if root is None:
            hint = (f" (the default: set {STORAGE_ENV}=s3://bucket/prefix or --storage-root for every output)"
                    if option in defaulted else "")
            raise NodeLocalPath(
                f"{option} {path}: node-local path on a {len(nodes)}-node cluster; use an s3:// URI or a path "
                f"every node mounts (declare it with {SHARED_PATHS_ENV}=/mnt/shared){hint}")
        if root not in _verified:
            verify_shared(root, nodes, option=option, path=path)
            _verified.add(root)


def verify_shared(root: str, nodes: list[dict], *, option: str = "path", path: str | None = None,
                  timeout_s: float = VERIFY_TIMEOUT_S) -> None:
    """Write a marker into the declared shared folder `root` from this node and read it back with one
    Ray task pinned to each of `nodes`; NodeLocalPath naming the nodes that cannot see it."""
    import ray  # deferred: Ray ~2-10 s to import; the module's other users skip it
    # deferred: Ray ~2-10 s to import; the module's other users skip it
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    shown = f"{option} {path or root}"
    if not os.path.isdir(root):
        raise NodeLocalPath(f"{shown}: {SHARED_PATHS_ENV} declares {root} shared, but it is not a folder on "
                            f"this node ({socket.gethostname()}); mount it on every node or use an s3:// URI")
    token = secrets.token_hex(16)
    marker = os.path.join(root, f"{MARKER_PREFIX}{token}")
    with open(marker, "w") as f:
        f.write(token)
    try:
        read = ray.remote(num_cpus=0, max_retries=0)(_read_marker)
        pending = {read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                   .remote(marker): node for node in nodes}
        results: dict[str, str | None] = {}
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=max(0.1, deadline - time.monotonic()))
            for ref in ready:
                node = pending.pop(ref)
                try:
                    results[_node_name(node)] = ray.get(ref)
                except Exception as exc:  # the node died, or the task could not run there
                    results[_node_name(node)] = f"error: {type(exc).__name__}"
        for ref, node in pending.items():
            ray.cancel(ref, force=True)
            results[_node_name(node)] = f"no answer within {timeout_s:g} s"
    finally:
        try:
            os.remove(marker)
        except OSError:
            pass
    blind = {name: seen for name, seen in results.items() if seen != token}
    if blind:
        detail = ", ".join(f"{name} ({'cannot read it' if seen is None else seen})" for name, seen in sorted(blind.items()))
        raise NodeLocalPath(f"{shown}: declared shared ({SHARED_PATHS_ENV}) but {len(blind)} of {len(nodes)} nodes "
                            f"do not see {root}: a marker written on {socket.gethostname()} was not readable on "
                            f"{detail}; mount it on every node or use an s3:// URI")


def _read_marker(path: str) -> str | None:
    """Ray task: the marker's content as this node sees it, None when it is not there."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _node_name(node: dict) -> str:
    return f"node {node.get('NodeManagerAddress', '?')} {node['NodeID'][:8]}"
