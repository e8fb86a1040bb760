"""The exceptions jobs raise, and the exit code the CLI gives each.

Library code raises these (or ValueError / FileNotFoundError / FileExistsError / NotADirectoryError
for bad arguments and inputs); only `jobs.cli` turns them into one line on stderr and an exit code.
"""
from __future__ import annotations

EXIT_FAILED, EXIT_USAGE, EXIT_TEMPFAIL, EXIT_INTERRUPTED = 1, 2, 75, 130

# Bad parameters, missing or unreadable inputs: the user can fix the call (exit 2).
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


class CommandError(Exception):
    """A job failed for a reason the user can act on; printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class NonFiniteLossError(CommandError):
    """The training loss became NaN/inf; the run stopped and its last good checkpoint is kept."""


class LockHeld(RuntimeError):
    """The retrain lock belongs to another live run; `holder` is its JSON record (exit 75: retry later)."""

    def __init__(self, uri: str, holder: dict):
        super().__init__(f"{uri} is held by {holder.get('owner', '?')} since {holder.get('acquired', '?')} "
                         f"(expires {holder.get('expires', '?')})")
        self.holder = holder


class LockLost(RuntimeError):
    """This run's lease expired and another run took the lock over."""
