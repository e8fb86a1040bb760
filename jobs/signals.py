"""Ctrl-C and SIGTERM for every command: the signal becomes an exception in the main thread, the
command unwinds (staging folders removed, the MLflow run ended KILLED, nothing registered or
published), and the CLI says so in one line, exit 130 (SIGINT) or 143 (SIGTERM).

- `begin()` / `end()`: what `jobs.cli.main` runs every command between (inside `kept()`, which puts
  the previous handlers back afterwards): `stop_on_signal` for SIGINT and SIGTERM, a fresh record of
  the signals received.
- `kept()`: puts back, when a block ends, the handlers in effect when it began: a library that installs
  its own (`ray.init` replaces SIGTERM's by `sys.exit`, Ray Train's `fit` SIGINT's) must not outlive
  the call. `install(abort)` re-installs ours inside such a call, with a bounded `abort` step first.
- `stopped(exc)`: whether an error is the consequence of a signal. SIGTERM sent to a whole process
  group also stops the Ray processes a command started (raylet, GCS, workers); what Ray raises next
  (a dead actor, a failed training) is reported as the signal, not as a failure.
- `stop_ray(code)`: shuts down the local Ray a command started, bounded: with its GCS gone, Ray's
  shutdown (and the abort of a Ray Train run) would wait 60 s for it and then exit 1, so the node's
  remaining processes are killed and the command exits at once with its signal's code.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from jobs.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)
ABORT_TIMEOUT_S = 10.0  # for an abort step (Ray Train's controller) before the signal is raised
SHUTDOWN_TIMEOUT_S = 10.0  # for shutting down a local Ray after a signal

RECEIVED: list[int] = []  # signals received during this command, oldest first (`begin`/`end` clear it)


def stop_on_signal(signum: int, frame=None) -> None:
    """Signal handler: SIGTERM raises Terminated, SIGINT KeyboardInterrupt, in the main thread. The
    signal is also recorded: Ray's `ray.get` re-raises any exception from a handler as a plain
    KeyboardInterrupt, and Ray's own failures may follow it (`stopped`)."""
    RECEIVED.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stopped(exc: BaseException) -> bool:
    """True when `exc` is a signal, or comes after one received during this command."""
    return isinstance(exc, KeyboardInterrupt) or bool(RECEIVED)


def outcome(exc: BaseException) -> tuple[str, int]:
    """("interrupted", 130) for Ctrl-C, ("terminated", 143) for SIGTERM (the last signal received wins)."""
    term = isinstance(exc, Terminated) or (bool(RECEIVED) and RECEIVED[-1] == signal.SIGTERM)
    return ("terminated", EXIT_TERMINATED) if term else ("interrupted", EXIT_INTERRUPTED)


def raise_if_stopped() -> None:
    """Raise the received signal again if one arrived and something swallowed its exception (a step
    that must not run after a signal, e.g. registering a model, calls this first)."""
    if RECEIVED:
        raise Terminated() if RECEIVED[-1] == signal.SIGTERM else KeyboardInterrupt()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def kept() -> Iterator[None]:
    """Put back the SIGINT and SIGTERM handlers of the block's start when it ends (main thread only)."""
    if not _main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def install(abort: Callable[[], None] | None = None) -> None:
    """Make SIGINT and SIGTERM raise (`stop_on_signal`) in the main thread; with `abort`, run it first
    (errors ignored; it must bound its own wait, e.g. by ABORT_TIMEOUT_S), with both signals ignored
    meanwhile so that a second Ctrl-C cannot cut it short."""
    if not _main_thread():
        return
    if abort is None:
        handler = stop_on_signal
    else:
        def handler(signum: int, frame=None) -> None:
            ignore()
            try:
                abort()
            except Exception:  # what is being aborted may be gone already
                pass
            finally:
                for each in SIGNALS:
                    signal.signal(each, stop_on_signal)
            stop_on_signal(signum, frame)
    for signum in SIGNALS:
        signal.signal(signum, handler)


def ignore() -> None:
    """Ignore SIGINT and SIGTERM from now on (main thread; `kept` puts the handlers back)."""
    if _main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def begin() -> None:
    """Start a command: forget the signals of the previous one, make SIGINT and SIGTERM raise (`install`)."""
    RECEIVED.clear()
    install()


def end() -> None:
    """End a command: forget its signals (library code called afterwards must not see them)."""
    RECEIVED.clear()


def ray_running() -> bool:
    """Whether this process is connected to Ray, or started a local Ray node (also one whose start a
    signal cut short), without importing Ray."""
    ray = sys.modules.get("ray")
    return ray is not None and (ray.is_initialized() or _local_node() is not None)


def _local_node():
    """The Ray node this process started (`ray.init` without an address), else None."""
    ray = sys.modules.get("ray")
    return getattr(ray._private.worker, "_global_node", None) if ray is not None else None


def ray_node_alive() -> bool:
    """False when this process started a local Ray and one of its processes (raylet, GCS, ...) has
    died, as after SIGTERM to the whole process group; True otherwise (a cluster's nodes are not ours)."""
    node = _local_node()
    if node is None or not node.head:
        return True
    try:
        return node.remaining_processes_alive()
    except Exception:
        return False


def stop_ray(code: int, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Shut down the local Ray this process started and leave no process of it behind. When its own
    processes died with the command (SIGTERM to the process group), or the shutdown takes longer than
    `timeout_s`, kill what is left of the node and exit with `code` at once (`os._exit`, after
    flushing stdout and stderr): Ray's shutdown would wait 60 s for the dead GCS, then exit 1."""
    import ray  # deferred: only after a command that used Ray

    node = _local_node()
    if ray_node_alive():
        done = threading.Event()

        def shutdown() -> None:
            try:
                ray.shutdown()
            except Exception:  # a node dying meanwhile
                pass
            finally:
                done.set()

        threading.Thread(target=shutdown, name="convlstm-ray-shutdown", daemon=True).start()
        if done.wait(timeout_s):
            return
    if node is not None:
        try:
            node.kill_all_processes(check_alive=False, allow_graceful=False)
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
