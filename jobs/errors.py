"""The exceptions jobs raise, and the exit code the CLI gives each.

Library code raises these (or ValueError / FileNotFoundError / FileExistsError / NotADirectoryError
for bad arguments and inputs); only `jobs.cli` turns them into one line on stderr and an exit code.
"""
from __future__ import annotations

import os

EXIT_FAILED, EXIT_USAGE, EXIT_TEMPFAIL, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 75, 130, 143

# Bad parameters, missing or unreadable inputs: the user can fix the call (exit 2).
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


class CommandError(Exception):
    """A job failed for a reason the user can act on; printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class NonFiniteLossError(CommandError):
    """The training loss became NaN/inf; the run stopped and its last good checkpoint is kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (the MLflow run ends KILLED, nothing registered), exit 143."""


class LockHeld(RuntimeError):
    """The retrain lock belongs to another live run; `holder` is its JSON record (exit 75: retry later)."""

    def __init__(self, uri: str, holder: dict):
        super().__init__(f"{uri} is held by {holder.get('owner', '?')} since {holder.get('acquired', '?')} "
                         f"(expires {holder.get('expires', '?')})")
        self.holder = holder


class LockLost(RuntimeError):
    """This run's lease expired and another run took the lock over."""


# MLflow over HTTP: bounded retries so an unreachable tracking server fails in seconds (MLflow's own
# defaults, 7 retries with a backoff factor of 2 and a 120 s timeout, take minutes). The CLI sets
# these unless the environment does.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error behind `exc`: Ray's task errors hold it in `cause`, chained errors in
    `__cause__`; stops at the first OSError or MLflow error on the way down."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and not _is_ray_wrapper(exc) or _is_mlflow(exc) or _is_store_error(exc):
            return exc
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            return exc
        exc = inner
    return exc


def fault_message(exc: BaseException, tracking_uri: str = "") -> tuple[str, int] | None:
    """(one line, exit code) for a storage or MLflow fault behind `exc`, or None for anything else.

    Storage (OSError: read-only, no space, not found, permission): the path and the reason, exit 2.
    MLflow: its message's first line, exit 1; a tracking store that cannot be read or written (a
    corrupt or read-only sqlite file) names `tracking_uri`, exit 1; a tracking server that does not
    answer, exit 75 (retry later), saying how many retries were made.
    """
    cause = root_cause(exc)
    if _is_mlflow(cause) and _is_store_error(cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__
    if _is_store_error(cause):
        detail = _first_line(str(getattr(cause, "orig", None) or cause))
        return f"MLflow tracking store {tracking_uri or '(default)'}: {_shorten(detail)}", EXIT_FAILED
    if _is_mlflow(cause):
        text = _first_line(str(cause.message if hasattr(cause, "message") else cause))
        if any(word in str(cause) for word in ("Max retries exceeded", "Connection refused", "ConnectionError",
                                                "Failed to establish", "timed out")):
            retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
            return (f"MLflow tracking server unreachable after {retries} retries "
                    f"(MLFLOW_HTTP_REQUEST_MAX_RETRIES): {_shorten(text)}", EXIT_TEMPFAIL)
        return f"MLflow: {_shorten(text)}", EXIT_FAILED
    if isinstance(cause, OSError) and not isinstance(cause, ConnectionError):  # a network fault is no storage fault
        if cause.filename is not None and cause.strerror:
            where = f"{cause.filename} -> {cause.filename2}" if cause.filename2 else str(cause.filename)
            return f"{where}: {cause.strerror}", EXIT_USAGE
        return _first_line(str(cause)) or type(cause).__name__, EXIT_USAGE
    return None


def _is_store_error(exc: BaseException | None) -> bool:
    """An error of MLflow's database store (SQLAlchemy: corrupt, locked or read-only sqlite file)."""
    return exc is not None and type(exc).__module__.startswith("sqlalchemy")


def _is_mlflow(exc: BaseException) -> bool:
    return any(c.__module__.startswith("mlflow") and c.__name__ == "MlflowException" for c in type(exc).__mro__)


def _is_ray_wrapper(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("ray") or "RayTaskError" in type(exc).__name__


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
