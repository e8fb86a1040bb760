"""Shared test fixtures: one local Ray per test session (per xdist worker with `-n`), a private project
home, the real samples, a real `mlflow server` per test module; and the test tiers.

Tiers: `pytest -m unit` is the fast tier (no Ray, no servers, no training beyond a few steps in this
process). A test is marked `unit` automatically unless it is marked `slow` or `integration`, or uses a
fixture that starts Ray or a server (directly or through other fixtures: HEAVY_FIXTURES).
A test that starts Ray, a server or a long training by itself, without such a fixture, is marked
`integration` by hand.

The suite mirrors the code: `convlstm/`, `pipelines/`, `jobs/` hold unit and integration tests per
package, `infra/` checks deployment files and servers, `e2e/` runs real clusters and object storage;
`helpers/` (on sys.path) holds shared test helpers (tiny datasets and models, reference implementations).

Environment is set at import, before any test imports Ray or MLflow: Ray's temp dir under
/tmp (short socket paths), MLflow telemetry off, and CONVLSTM_HOME pointing at a per-session
folder so the embedded MLflow store and outputs never touch the checkout.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="convlstm-test-home-"))
_RAY_TMP = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))

os.environ.setdefault("RAY_TMPDIR", str(_RAY_TMP))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["CONVLSTM_HOME"] = str(_SESSION_HOME)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)


SAMPLE_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """`tests/data`: trimmed copies of real samples (radar: MeteoSwiss, FMI, KNMI, BoM, OPERA; the MNIST test
    set's first 2,000 digits; KTH's 00sequences.txt), each with its PROVENANCE.md."""
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def project_home() -> Path:
    """The CONVLSTM_HOME of this test session (embedded MLflow store, outputs)."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (2 CPUs, as on CI), shut down at the end."""
    from cluster_harness import retry_ray_start
    from pipelines.ray_session import init_ray

    ray = retry_ray_start(lambda: init_ray(num_cpus=2), cleanup=lambda: _kill_ray_processes_under(_RAY_TMP))
    yield ray
    ray.shutdown()


def _kill_ray_processes_under(temp_dir: Path) -> None:
    """Kill this process's children that a failed `ray.init` left running (their command lines name
    this session's Ray temp dir)."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            if str(temp_dir) in " ".join(child.cmdline()):
                child.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="session")
def mch_tiny(ray_local, sample_data, tmp_path_factory) -> Path:
    """The tiny MeteoSwiss dataset (`tiny_models.prepare_mch_tiny`: 32x32, 3 + 3 frames, chronological split),
    prepared once per session and shared: tests read it and never write into it."""
    from tiny_models import prepare_mch_tiny

    return prepare_mch_tiny(sample_data, tmp_path_factory.mktemp("shared") / "mch32")


@pytest.fixture(scope="session")
def radar_tiny(mch_tiny) -> str:
    """`models:/convlstm-radar-tiny@champion`: radar-tiny trained one short epoch on `mch_tiny`, in this process."""
    from tiny_models import train_tiny

    return train_tiny("radar", mch_tiny, "convlstm-radar-tiny")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (sqlite store, served artifacts in tmp); its process
    group is killed at teardown."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not become healthy in 180 s"
            time.sleep(0.5)
        yield uri, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# Fixtures that start Ray, a server or a cluster: a test whose fixture closure holds one is not a unit test.
HEAVY_FIXTURES = frozenset({"ray_local", "mlflow_server", "world", "cluster", "server", "s3_env", "s3_here"})


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that is not slow, integration or heavy as `unit`."""
    for item in items:
        heavy = HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if heavy or item.get_closest_marker("slow") or item.get_closest_marker("integration"):
            continue
        item.add_marker(pytest.mark.unit)


S3_BUCKET = "convlstm-test"


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server (threaded, in this process, on 127.0.0.1) with the bucket S3_BUCKET; yields the
    AWS/MLflow env that points clients at it (also set in this process for the module's duration)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket=S3_BUCKET)
        yield env
    server.stop()
