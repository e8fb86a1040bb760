"""Where a run comes from: the code version (a git subprocess, or the submitter's commit), MLflow's
standard run-context tags and the project's lineage tags (task, stack versions, the exact shards)."""
from __future__ import annotations

import getpass
import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

from pipelines.manifest import Manifest

TAG_PREFIX = "convlstm."
COMMIT_ENV = "CONVLSTM_GIT_COMMIT"  # set by `convlstm submit`: the job's upload has no .git
SUBMISSION_ENV = "CONVLSTM_SUBMISSION_ID"  # set by `convlstm submit`: the Ray job that runs this process
SUBMISSION_TAG = f"{TAG_PREFIX}submission_id"


def git_commit() -> str | None:
    """The code version: COMMIT_ENV when set (a submitted job: the submitter's checkout, read before
    the upload), else HEAD of the checkout holding this package (`<sha>-dirty` with local changes), if any."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def run_tags(task: str, manifest: Manifest, manifest_path: str) -> dict[str, str]:
    """Lineage tags: task, code version, stack versions, and the exact shards (fingerprint, path)."""
    tags = {
        f"{TAG_PREFIX}task": task,
        f"{TAG_PREFIX}ray_version": md.version("ray"),
        f"{TAG_PREFIX}torch_version": md.version("torch"),
        f"{TAG_PREFIX}data_fingerprint": manifest.fingerprint,
        f"{TAG_PREFIX}manifest_path": manifest_path,
        f"{TAG_PREFIX}pipeline_version": manifest.pipeline_version,
    }
    commit = git_commit()
    if commit:
        tags[f"{TAG_PREFIX}git_commit"] = commit
    return {**source_tags(), **tags}


def source_tags() -> dict[str, str]:
    """MLflow's standard run-context tags, as `mlflow.start_run` sets them: `mlflow.user`,
    `mlflow.source.type` (LOCAL), `mlflow.source.name` (`convlstm <command>` when run by the CLI, else
    the program) and `mlflow.source.git.commit` of the checkout holding this package (`-dirty` with
    local changes; absent for an installed, non-git copy)."""
    # deferred: mlflow ~10 s to import; the module's other users skip it
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: v for k, v in resolve_tags().items() if k.startswith("mlflow.")}
    entry = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if (Path(entry).name == "convlstm" or entry.endswith(("jobs/cli/__main__.py", "jobs/cli/__init__.py"))) \
            and len(sys.argv) > 1:
        tags["mlflow.source.name"] = f"convlstm {sys.argv[1]}"
    tags.setdefault("mlflow.source.name", entry or "convlstm")
    tags.setdefault("mlflow.source.type", "LOCAL")
    tags.setdefault("mlflow.user", _user())
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get(SUBMISSION_ENV):
        tags[SUBMISSION_TAG] = os.environ[SUBMISSION_ENV]
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


