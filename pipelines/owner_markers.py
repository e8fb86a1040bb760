"""Owner markers of staging folders, and the sweep of those a killed run left behind.

Staging folders left behind by a killed run (kill -9, power loss) are swept by later runs: each
staging folder holds an owner marker (OWNER_FILE: pid, host, boot id, process start time, creation
time), removed just before publishing. `pipelines.publish.staging` removes the `<out>.tmp-*` siblings
whose owner is gone: a dead (or reused) pid on this host, or, for another host, a marker older than
STALE_AFTER_S. Folders without a readable marker are never touched. Radar archive unpacking
(`.radar-src-*`) uses the same markers (`claim`, `sweep_stale`). Local paths only: object stores are
not swept.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

OWNER_FILE = ".convlstm-owner.json"
STALE_AFTER_S = 7 * 24 * 3600  # a marker from another host this old belongs to a dead run


def claim(folder: str | Path) -> None:
    """Write this process's owner marker into the (new, local) staging `folder`."""
    marker = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
              "start": _start_time(os.getpid()), "created": time.time()}
    (Path(folder) / OWNER_FILE).write_text(json.dumps(marker) + "\n")


def sweep_stale(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the folders in `parent` named `prefix*` whose owner marker says their run is gone
    (see the module docstring); returns them. Errors (permissions, races with another sweeper) are
    ignored: sweeping never fails a run."""
    removed = []
    try:
        candidates = [p for p in Path(parent).iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        try:
            marker = json.loads((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # no marker (being created, or not ours): never touched
        if isinstance(marker, dict) and owner_is_gone(marker):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def owner_is_gone(marker: dict, now: float | None = None) -> bool:
    """True when the process that wrote `marker` no longer runs: on this host (same hostname and boot
    id) its pid is dead or belongs to a later process; elsewhere its marker is older than STALE_AFTER_S."""
    try:
        if marker.get("host") == socket.gethostname() and marker.get("boot_id") == _boot_id():
            return not _alive(int(marker["pid"]), marker.get("start"))
        return (now if now is not None else time.time()) - float(marker["created"]) > STALE_AFTER_S
    except (KeyError, TypeError, ValueError):
        return False  # a marker we cannot read is left alone


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    current = _start_time(pid)
    return start is None or current is None or current == start


def _start_time(pid: int) -> str | None:
    """The process's start time since boot (Linux /proc, clock ticks) to tell a reused pid; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
