"""Submit `convlstm …` command lines to a Ray cluster through the Jobs API, and follow them.

How the code reaches the cluster:
- uploaded (default): this source checkout becomes the job's `working_dir` (local data, outputs,
  virtual environments, .git, .env and caches excluded) and a leading `convlstm` becomes
  `python -m jobs.cli`, so the uploaded code runs rather than whatever the image has; the project's
  dependencies except torch and ray (the cluster image provides those) are pip-installed into the
  job's runtime env, unless `install=False` (`--no-install`: the image has them, e.g. the job image).
- installed (`upload=False`, `--no-upload`): the cluster image holds the project itself (the job image
  built from the repo-root `Dockerfile`); nothing is uploaded or installed, the entrypoint runs as given.

Environment reaches the job only explicitly: `PASSTHROUGH_ENV` (MLflow and S3 settings) from the
submitting shell, then the `--runtime-env` file's `env_vars`, then `--env KEY=VALUE` (later wins).
Token auth: see `auth_token`.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata as md
import os
import re
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TextIO

import yaml

from jobs.errors import CommandError
from jobs.registry.lineage import COMMIT_ENV, SUBMISSION_ENV, git_commit
from packaging.requirements import Requirement

if TYPE_CHECKING:
    from ray.job_submission import JobStatus, JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DISTRIBUTION = "convlstm-pipeline"
# gitignore-style, in order (a later `!` re-includes): a leading "/" anchors at the checkout root.
# Local datasets and outputs stay behind (jobs read shards from shared storage); the small demo
# sample (package data under jobs/samples) ships with the code.
WORKING_DIR_EXCLUDES = [
    ".git", ".venv", "venv", ".env", "/outputs", "/mlruns", "/data/*", "__pycache__",
    "*.pyc", ".pytest_cache", "*.egg-info", "/build", "/dist", ".whl", ".gl", ".mypy_cache", ".ruff_cache",
]
# Provided by the cluster image; reinstalling them per job would be slow and could mismatch the cluster.
CLUSTER_PROVIDED = {"torch", "ray"}
# Tracking and artifact-store settings worth carrying to the cluster; local file paths
# (AWS_CONFIG_FILE, AWS_CA_BUNDLE, …) are left out because they rarely exist there.
PASSTHROUGH_ENV = (
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_S3_IGNORE_TLS", "MLFLOW_DISABLE_TELEMETRY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    # Where jobs put their outputs on a cluster (jobs.paths.storage_root) and which mounts every node shares.
    "CONVLSTM_STORAGE", "CONVLSTM_SHARED_PATHS", "CONVLSTM_TRAIN_PLACEMENT",
)
# `convlstm submit --wait` exit codes by terminal job status.
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 3}


@dataclass
class Submission:
    """Everything `JobSubmissionClient.submit_job` needs; built without contacting the cluster."""

    entrypoint: str
    submission_id: str
    runtime_env: dict = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def resolve_address(address: str | None = None) -> str:
    """Jobs API address: `address`, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else 127.0.0.1:8265."""
    return (address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
            or DEFAULT_ADDRESS)


def auth_token() -> str | None:
    """The Ray auth token this client presents, or None (also when RAY_AUTH_MODE=disabled).

    Sources in Ray's own order: RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH,
    `~/.ray/auth_token`. A token found while RAY_AUTH_MODE is unset is still used, as `ray start`
    switches a head to token auth whenever that file exists.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if token_path:
        path = Path(token_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"RAY_AUTH_TOKEN_PATH names a missing file: {path}")
        return path.read_text().strip() or None
    default = Path.home() / ".ray" / "auth_token"
    return (default.read_text().strip() or None) if default.is_file() else None


def auth_headers() -> dict[str, str]:
    """`{"Authorization": "Bearer <token>"}` when `auth_token()` finds one, else `{}`.

    Passed explicitly so the client does not depend on this process's RAY_AUTH_MODE (which a
    local `ray.init()` may have flipped to `token`) nor on Ray's cached token loader.
    """
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def _address_env_hidden() -> Iterator[None]:
    # JobSubmissionClient lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override its address argument.
    saved = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def connect(address: str | None = None) -> JobSubmissionClient:
    """A Jobs API client for `resolve_address(address)`; unreachable or unauthorised -> CommandError."""
    from ray.exceptions import AuthenticationError  # deferred: Ray ~2-10 s to import; the module's other users skip it
    # deferred: Ray ~2-10 s to import; the module's other users skip it
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        with _address_env_hidden():
            return JobSubmissionClient(url, headers=auth_headers())
    except AuthenticationError as exc:
        raise CommandError(
            f"the Ray cluster at {url} refused this client ({str(exc).splitlines()[0]}); set "
            "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token (see infra/README.md)") from exc
    except ConnectionError as exc:
        raise CommandError(f"cannot reach the Ray Jobs API at {url}: {exc}") from exc
    except RuntimeError as exc:  # an HTTP server that is not Ray's dashboard: "Version check returned 404"
        raise CommandError(f"{url} is not a Ray Jobs API ({str(exc).strip().splitlines()[0]})") from exc


def source_checkout() -> Path | None:
    """The source checkout holding this package (editable installs), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "jobs" / "cli" / "__init__.py").is_file() else None


def cluster_requirements() -> list[str]:
    """This project's runtime requirements (no extras) minus those the cluster image provides."""
    keep = []
    for line in md.requires(DISTRIBUTION) or []:
        req = Requirement(line)
        if req.marker is not None and re.search(r"\bextra\s*==", str(req.marker)):
            continue
        if req.name.lower() not in CLUSTER_PROVIDED:
            keep.append(str(req))
    return keep


def parse_env_assignments(pairs: list[str] | None) -> dict[str, str]:
    """`["KEY=VALUE", …]` -> dict; a pair without `=` or with an empty key raises ValueError."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--env expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def load_runtime_env_file(path: str | Path | None) -> dict:
    """A YAML runtime_env mapping (Ray's runtime_env keys), or {} when `path` is None."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--runtime-env file not found: {path}")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"--runtime-env must hold a YAML mapping, got {type(loaded).__name__}: {path}")
    return loaded


def passthrough_env() -> dict[str, str]:
    """The `PASSTHROUGH_ENV` variables set in this process (tracking URI, credentials, S3 endpoint)."""
    return {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}


def build_runtime_env(upload: bool = True, install: bool = True, runtime_env_file: str | Path | None = None,
                      env: dict[str, str] | None = None) -> dict:
    """The job's runtime_env: the file's keys, working_dir/excludes when `upload`, pip when also
    `install`, and env_vars.

    Keys the file sets (`working_dir`, `pip`) are kept; `excludes` are appended to; env_vars precedence
    is passthrough < file < `env`.
    """
    runtime_env = load_runtime_env_file(runtime_env_file)
    if upload:
        checkout = source_checkout()
        if checkout is None and "working_dir" not in runtime_env:
            raise ValueError("no source checkout to upload as working_dir (installed package); "
                             "pass --no-upload to run the cluster image's convlstm")
        runtime_env.setdefault("working_dir", str(checkout))
        runtime_env["excludes"] = list(dict.fromkeys([*runtime_env.get("excludes", []), *WORKING_DIR_EXCLUDES]))
        if install:
            runtime_env.setdefault("pip", {"packages": cluster_requirements(), "pip_check": False})
    env_vars = {**passthrough_env(), **runtime_env.get("env_vars", {}), **(env or {})}
    if env_vars:
        runtime_env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    return runtime_env


def cluster_entrypoint(argv: list[str], upload: bool = True) -> str:
    """The shell command the cluster runs; a leading `convlstm` runs the uploaded code when `upload`."""
    if not argv:
        raise ValueError("entrypoint is empty: give the command after `--`, e.g. `-- convlstm train …`")
    if upload and argv[0] == "convlstm":
        argv = ["python", "-m", "jobs.cli", *argv[1:]]
    return shlex.join(argv)


def default_submission_id(argv: list[str]) -> str:
    """`convlstm-<subcommand>-<YYYYmmdd-HHMMSS>-<6 hex>`; `job` stands in for non-convlstm commands."""
    name = argv[1] if len(argv) > 1 and argv[0] == "convlstm" else "job"
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "job"
    return f"convlstm-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def build_submission(argv: list[str], upload: bool = True, install: bool = True,
                     runtime_env_file: str | Path | None = None, env: dict[str, str] | None = None,
                     submission_id: str | None = None) -> Submission:
    """Entrypoint, submission id, runtime_env and metadata for `argv` (the command after `--`). The job's
    env records the submission id and the git commit of this checkout (MLflow runs of the job carry both)."""
    entrypoint = cluster_entrypoint(argv, upload)
    submission_id = submission_id or default_submission_id(argv)
    commit = git_commit()  # here, before the upload (which leaves .git behind)
    recorded = {SUBMISSION_ENV: submission_id, **({COMMIT_ENV: commit} if commit else {})}
    return Submission(
        entrypoint=entrypoint,
        submission_id=submission_id,
        runtime_env=build_runtime_env(upload, install, runtime_env_file, {**recorded, **(env or {})}),
        metadata={"submitted_by": "convlstm submit", "command": shlex.join(argv)},
    )


def submit(client: JobSubmissionClient, submission: Submission) -> str:
    """Submit; returns the submission id. A refusal (duplicate id, bad runtime_env) -> CommandError."""
    try:
        return client.submit_job(entrypoint=submission.entrypoint, submission_id=submission.submission_id,
                                 runtime_env=submission.runtime_env, metadata=submission.metadata)
    except RuntimeError as exc:
        # The server's message may carry its traceback; its last line says what was wrong.
        reason = [line.strip() for line in str(exc).splitlines() if line.strip(" .")][-1]
        raise CommandError(f"the Jobs API refused the submission: {reason}") from exc


def wait_until_terminal(client: JobSubmissionClient, submission_id: str,
                        poll_s: float = 1.0) -> JobStatus:
    """Poll the job's status until it is SUCCEEDED, FAILED or STOPPED."""
    while True:
        status = client.get_job_status(submission_id)
        if status.is_terminal():
            return status
        time.sleep(poll_s)


def follow_logs(client: JobSubmissionClient, submission_id: str, out: TextIO = sys.stdout) -> JobStatus:
    """Stream the job's driver output to `out` until the job ends; returns its terminal status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except RuntimeError as exc:
        raise CommandError(f"lost the log stream of {submission_id} ({exc}); the job may still be running: "
                           f"`convlstm jobs status {submission_id}`") from exc
    return wait_until_terminal(client, submission_id)


def exit_code(status: JobStatus | str) -> int:
    """0 SUCCEEDED, 1 FAILED, 3 STOPPED (`EXIT_CODES`); a non-terminal status raises ValueError."""
    try:
        return EXIT_CODES[str(status)]
    except KeyError:
        raise ValueError(f"status {status} is not terminal") from None
