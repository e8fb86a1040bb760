"""`convlstm submit` and `convlstm jobs`: the submission built offline, then a real Ray cluster.

The cluster is a private `ray start --head` in token-auth mode (RAY_AUTH_MODE=token with a
per-test RAY_AUTH_TOKEN, so ~/.ray/auth_token is never read or written), on free ports and its own
temp dir, driven only through subprocesses and the Jobs API; the session Ray of other tests is
never touched. Its processes share one process group, which teardown kills (tests/helpers/cluster_harness.py,
shared with the multi-node tests).
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cluster_harness import CONVLSTM, client_env as _client_env, free_ports as _free_ports, start_head
from jobs.ops import submit as jobsubmit


# --- the submission, built without a cluster ---------------------------------------------------

def test_entrypoint_runs_uploaded_code_unless_no_upload():
    argv = ["convlstm", "train", "--name", "two words"]
    assert jobsubmit.cluster_entrypoint(argv) == "python -m jobs.cli train --name 'two words'"
    assert jobsubmit.cluster_entrypoint(argv, upload=False) == "convlstm train --name 'two words'"
    assert jobsubmit.cluster_entrypoint(["python", "-c", "print(1)"]) == "python -c 'print(1)'"
    with pytest.raises(ValueError, match="entrypoint"):
        jobsubmit.cluster_entrypoint([])


def test_submission_id_names_the_subcommand_and_is_unique():
    a = jobsubmit.default_submission_id(["convlstm", "prepare", "kth"])
    b = jobsubmit.default_submission_id(["convlstm", "prepare", "kth"])
    assert a.startswith("convlstm-prepare-") and a != b
    assert jobsubmit.default_submission_id(["python", "x.py"]).startswith("convlstm-job-")


def test_runtime_env_ships_checkout_without_torch_ray_or_local_clutter(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-shell")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/home/me/.aws/config")  # a local path: not passed
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text("env_vars:\n  MLFLOW_TRACKING_URI: http://mlflow.mlflow.svc:5000\n"
                        "excludes: ['*.ckpt']\n")
    runtime_env = jobsubmit.build_runtime_env(runtime_env_file=env_file, env={"MLFLOW_EXPERIMENT_NAME": "cli"})

    assert Path(runtime_env["working_dir"]) == jobsubmit.source_checkout()
    excludes = runtime_env["excludes"]
    assert {".git", ".venv", "/outputs", "/data/*", ".env", "__pycache__", "*.ckpt"} <= set(excludes)
    assert not any("jobs" in e for e in excludes)  # the bundled sample is package data under jobs/samples
    packages = " ".join(runtime_env["pip"]["packages"])
    assert "mlflow" in packages and "pyarrow" in packages
    assert "torch" not in packages and "ray" not in packages.replace("pyarrow", "")
    assert "pytest" not in packages  # the test extra stays local
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"  # file > shell
    assert runtime_env["env_vars"]["MLFLOW_EXPERIMENT_NAME"] == "cli"  # --env > everything
    assert "AWS_CONFIG_FILE" not in runtime_env["env_vars"]


def test_no_install_skips_pip_and_no_upload_ships_nothing_but_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    no_pip = jobsubmit.build_runtime_env(install=False)
    assert "working_dir" in no_pip and "pip" not in no_pip
    runtime_env = jobsubmit.build_runtime_env(upload=False, env={"A": "1"})
    assert runtime_env == {"env_vars": {**jobsubmit.passthrough_env(), "A": "1"}}


def test_bad_arguments_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="--env"):
        jobsubmit.parse_env_assignments(["NOEQUALS"])
    with pytest.raises(FileNotFoundError, match="--runtime-env"):
        jobsubmit.load_runtime_env_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match="--runtime-env"):
        jobsubmit.load_runtime_env_file(tmp_path / "list.yaml")
    assert jobsubmit.parse_env_assignments(["A=1=2", "B="]) == {"A": "1=2", "B": ""}


def test_cli_takes_several_env_pairs_and_everything_after_the_separator():
    from jobs.cli import build_parser

    args = build_parser().parse_args(["submit", "--env", "A=1", "B=2", "--env", "C=3", "--no-install", "--",
                                      "convlstm", "train", "--env", "not-ours"])
    assert args.env == ["A=1", "B=2", "C=3"] and args.install is False and args.upload is True
    assert args.entrypoint == ["--", "convlstm", "train", "--env", "not-ours"]


def test_address_precedence(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobsubmit.resolve_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://a:8265")
    assert jobsubmit.resolve_address() == "http://a:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://b:8265")
    assert jobsubmit.resolve_address() == "http://b:8265"
    assert jobsubmit.resolve_address("http://c:8265") == "http://c:8265"


def test_auth_token_sources_in_rays_order(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert jobsubmit.auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert jobsubmit.auth_headers() == {"Authorization": "Bearer from-home"}
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobsubmit.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobsubmit.auth_token() == "from-env"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert jobsubmit.auth_token() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="RAY_AUTH_TOKEN_PATH"):
        jobsubmit.auth_token()


def test_exit_codes():
    assert [jobsubmit.exit_code(s) for s in ("SUCCEEDED", "FAILED", "STOPPED")] == [0, 1, 3]
    with pytest.raises(ValueError):
        jobsubmit.exit_code("RUNNING")


def test_unreachable_cluster_is_one_line_exit_1():
    port = _free_ports(1)[0]  # nothing listens there
    done = subprocess.run([CONVLSTM, "jobs", "list", "--address", f"http://127.0.0.1:{port}"],
                          capture_output=True, text=True, env=_client_env(token=None), timeout=120)
    assert done.returncode == 1
    assert "cannot reach the Ray Jobs API" in done.stderr and "Traceback" not in done.stderr


# --- a real cluster (tests/helpers/cluster_harness.py) ------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    head = start_head(num_cpus=2)
    try:
        yield head
    finally:
        head.stop()


@pytest.mark.slow
def test_cluster_requires_the_token(cluster):
    done = subprocess.run([CONVLSTM, "jobs", "list", "--address", cluster.address], capture_output=True,
                          text=True, env=_client_env(token=None, HOME=tempfile.gettempdir()), timeout=120)
    assert done.returncode == 1
    assert "RAY_AUTH_TOKEN" in done.stderr and "Traceback" not in done.stderr


# The jobs below pass --no-install: this cluster runs from the project's .venv, which has every
# dependency, and Ray would clone that whole virtualenv (~2 GB) for a pip runtime env. The pip list
# itself is checked offline above.

@pytest.mark.slow
def test_submit_wait_uploads_code_and_env(cluster, tmp_path):
    done = cluster.convlstm(
        "submit", "--address", cluster.address, "--wait", "--no-install", "--env", "CONVLSTM_PROBE=42", "--",
        "python", "-c", "import jobs, os; print('probe', os.environ['CONVLSTM_PROBE'], "
                        "os.environ['MLFLOW_TRACKING_URI'], jobs.__file__, sorted(os.listdir('.')))",
        MLFLOW_TRACKING_URI=(tmp_path / "mlruns").as_uri())
    assert done.returncode == 0, done.stdout + done.stderr
    submission_id = done.stdout.splitlines()[0]
    assert submission_id.startswith("convlstm-job-")
    probe = next(line for line in done.stdout.splitlines() if line.startswith("probe"))
    _, value, uri, jobs_file, shipped = probe.split(maxsplit=4)
    assert value == "42" and uri == (tmp_path / "mlruns").as_uri()
    assert "runtime_resources" in jobs_file  # imported from the uploaded working_dir, not the checkout
    # A fresh clone has no data/ or outputs/ folder, so only the project's own packages are certain.
    assert all(f"'{name}'" in shipped for name in ("jobs", "pipelines", "convlstm", "pyproject.toml"))
    assert "'.venv'" not in shipped and "'.git'" not in shipped and "'outputs'" not in shipped


@pytest.mark.slow
def test_prepare_and_train_run_on_the_cluster(cluster, tmp_path):
    import mlflow

    from pipelines.manifest import load_manifest
    from pipelines.synthetic import write_kth_videos

    src, data = tmp_path / "kth-videos", tmp_path / "kth"
    # One person from each official split: train 11, val 19, test 22.
    write_kth_videos(src, persons=[11, 19, 22], actions=("boxing", "walking"), scenarios=("d1",), frames=12)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    submit = ("submit", "--address", cluster.address, "--wait", "--no-install",
              "--env", f"CONVLSTM_HOME={tmp_path / 'home'}", "--")

    prepare = cluster.convlstm(*submit, "convlstm", "prepare", "kth", "--src", str(src), "--out", str(data),
                               "--frame-len", "5", "--stride", "5", "--size", "24x32")
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    assert prepare.stdout.splitlines()[0].startswith("convlstm-prepare-")
    manifest = load_manifest(str(data))
    assert manifest["task"] == "kth" and all(manifest["splits"][s]["count"] > 0 for s in ("train", "val", "test"))

    train = cluster.convlstm(*submit, "convlstm", "train", "--task", "kth", "--data", str(data),
                             "--config", "kth-tiny", "--run-name", "submitted", "train.epochs=1",
                             "data.limit_train=16", "data.limit_val=8", MLFLOW_TRACKING_URI=tracking_uri)
    assert train.returncode == 0, train.stdout + train.stderr
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, filter_string="tags.mlflow.runName = 'submitted'")
    assert run.info.status == "FINISHED" and run.data.metrics


@pytest.mark.slow
def test_failing_job_exits_1_and_jobs_commands_show_it(cluster):
    done = cluster.convlstm("submit", "--address", cluster.address, "--wait", "--no-upload", "--",
                            "python", "-c", "import sys; print('about to fail'); sys.exit(7)")
    assert done.returncode == 1, done.stdout + done.stderr
    submission_id = done.stdout.splitlines()[0]
    assert "about to fail" in done.stdout and "FAILED (entrypoint exit code 7)" in done.stderr

    listing = cluster.convlstm("jobs", "list", "--address", cluster.address)
    assert listing.returncode == 0 and submission_id in listing.stdout
    row = next(line for line in listing.stdout.splitlines() if line.startswith(submission_id))
    assert "FAILED" in row
    status = cluster.convlstm("jobs", "status", submission_id, "--address", cluster.address)
    assert status.returncode == 0 and "FAILED" in status.stdout
    for follow in ([], ["--follow"]):
        logs = cluster.convlstm("jobs", "logs", submission_id, *follow, "--address", cluster.address)
        assert logs.returncode == 0 and "about to fail" in logs.stdout, follow
    missing = cluster.convlstm("jobs", "status", "no-such-job", "--address", cluster.address)
    assert missing.returncode == 2 and "no-such-job" in missing.stderr
    again = cluster.convlstm("submit", "--address", cluster.address, "--no-upload", "--submission-id", submission_id,
                             "--", "true")
    assert again.returncode == 1 and "refused the submission" in again.stderr and "Traceback" not in again.stderr
    detached = cluster.convlstm("submit", "--address", cluster.address, "--no-upload", "--", "true")
    (new_id,) = detached.stdout.split()
    assert detached.returncode == 0 and f"convlstm jobs logs {new_id} --follow" in detached.stderr
    assert str(jobsubmit.wait_until_terminal(cluster.client(), new_id)) == "SUCCEEDED"


@pytest.mark.slow
def test_stopped_job_exits_3(cluster):
    submission_id = jobsubmit.default_submission_id(["convlstm", "sleep"])
    waiting = subprocess.Popen(
        [CONVLSTM, "submit", "--address", cluster.address, "--wait", "--no-upload",
         "--submission-id", submission_id, "--", "python", "-c", "import time; time.sleep(600)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_client_env(cluster.token))
    try:
        client = cluster.client()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if str(client.get_job_status(submission_id)) == "RUNNING":
                    break
            except RuntimeError:  # not submitted yet
                pass
            time.sleep(1)
        stop = cluster.convlstm("jobs", "stop", submission_id, "--address", cluster.address)
        assert stop.returncode == 0 and "stop requested" in stop.stdout
        out, err = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
    assert waiting.returncode == 3, out + err
    assert str(client.get_job_status(submission_id)) == "STOPPED"
