"""Shared test fixtures: one local Ray per test session, a private project home, the real samples.

The suite mirrors the code: `convlstm/`, `pipelines/`, `jobs/` hold unit and integration tests per
package, `infra/` checks deployment files and servers, `e2e/` runs real clusters and object storage;
`helpers/` (on sys.path) holds shared test helpers (tiny datasets and models, reference implementations).

Environment is set at import, before any test imports Ray or MLflow: Ray's temp dir under
/tmp (short socket paths), MLflow telemetry off, and CONVLSTM_HOME pointing at a per-session
folder so the embedded MLflow store and outputs never touch the checkout.
"""
from __future__ import annotations

import os
import sys
import tempfile
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


def _shared_data() -> Path:
    env = os.environ.get("CONVLSTM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`: real radar samples (mch, fmi, knmi), MNIST test set, KTH 00sequences.txt."""
    path = _shared_data()
    assert path.is_dir(), f"real sample data not found at {path} (set CONVLSTM_SHARED_DATA)"
    return path


@pytest.fixture(scope="session")
def project_home() -> Path:
    """The CONVLSTM_HOME of this test session (embedded MLflow store, outputs)."""
    return _SESSION_HOME


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session (2 CPUs, as on CI), shut down at the end."""
    from pipelines.ray_session import init_ray

    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
