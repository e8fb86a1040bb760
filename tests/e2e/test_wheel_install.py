"""Installed from a built wheel, outside any checkout, the package finds its bundled radar sample and
packaged configs, and the demo's data path runs (issue 9 item 13).

How this proves "installed as a wheel" rather than "imported from the checkout":

1. The sources (pyproject.toml, README.md and the three packages, nothing else) are copied to a
   temporary folder and built there with `pip wheel --no-deps --no-build-isolation` (no network:
   the build backend comes from this environment), so the checkout is neither used nor written.
2. A fresh virtual environment is created with `python -m venv --without-pip` (no system site
   packages) and the wheel is installed into it with `pip --python <venv python> install --no-deps
   --no-index`, the way a user's `pip install` lays it out (package data, `convlstm` console script).
3. The third-party dependencies (torch, Ray, MLflow, ...) are not reinstalled: a `.pth` file in the
   new environment appends this environment's site-packages to `sys.path`. Directories named in a
   `.pth` file are only appended, their own `.pth` files are not executed, so this environment's
   editable install of the project (a `__editable__` finder started from a `.pth`) stays inactive,
   and the venv's own site-packages (holding the wheel) comes first on `sys.path`.
4. Every command runs with `cwd` outside the checkout, without PYTHONPATH, with a fresh
   CONVLSTM_HOME, and the test asserts that `jobs`, `convlstm` and `pipelines` and the sample were
   imported from the new environment's site-packages.

Then the quick paths: `convlstm demo --help`, `convlstm prepare radar` on the sample found through
`jobs.ops.demo.bundled_radar_sample()` (package data via importlib.resources), and `convlstm train`
with the packaged demo config for a few in-process steps.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "convlstm", "pipelines", "jobs")

pytestmark = pytest.mark.slow


def _run(cmd: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done


def test_wheel_installs_and_runs_the_demo_data_path_outside_a_checkout(tmp_path):
    # 1. Build the wheel from a copy of the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    base_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp_path / "dist", src], cwd=tmp_path, env=base_env)
    (wheel,) = (tmp_path / "dist").glob("convlstm_pipeline-*.whl")

    # 2. A fresh venv with the wheel installed; 3. this environment's dependencies appended by a .pth.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=base_env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
         cwd=tmp_path, env=base_env)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=base_env).stdout.strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_dependencies.pth").write_text("".join(f"{d}\n" for d in deps))

    # 4. Outside the checkout, fresh home, no PYTHONPATH.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**base_env, "CONVLSTM_HOME": str(tmp_path / "home"), "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    where = json.loads(_run([python, "-c", (
        "import json, sys, convlstm, jobs, pipelines\n"
        "from jobs import paths\n"
        "from jobs.ops.demo import bundled_radar_sample\n"
        "from jobs.training.config import config_path\n"
        "print(json.dumps({'modules': [m.__file__ for m in (convlstm, jobs, pipelines)],\n"
        "                  'sample': str(bundled_radar_sample()), 'config': str(config_path('radar-tiny')),\n"
        "                  'home': str(paths.project_home()),\n"
        "                  'finders': [type(f).__name__ + getattr(f, '__name__', '') for f in sys.meta_path]}))")],
        cwd=elsewhere, env=env).stdout)
    for module in where["modules"]:
        assert Path(module).is_relative_to(site), f"{module} was not imported from the installed wheel in {site}"
    assert not any("editable" in f.lower() for f in where["finders"]), where["finders"]
    sample, config = Path(where["sample"]), Path(where["config"])
    assert sample.is_relative_to(site) and config.is_relative_to(site)
    assert len(list(sample.rglob("*.gif"))) == 40 and (sample / "PROVENANCE.md").is_file()
    assert Path(where["home"]) == tmp_path / "home"  # not a checkout, not ~/.convlstm

    convlstm = venv / "bin" / "convlstm"
    assert "--radar-src" in _run([convlstm, "demo", "--help"], cwd=elsewhere, env=env).stdout
    data = tmp_path / "radar"
    _run([convlstm, "prepare", "radar", "--src", sample, "--format", "mch", "--out", data, "--in-len", 4,
          "--out-len", 4, "--size", "32x32", "--crop", "640x640", "--split", "time", "--val-fraction", 0.25,
          "--test-fraction", 0.25], cwd=elsewhere, env=env)
    manifest = json.loads((data / "manifest.json").read_text())
    # 40 frames, chronological 20 / 10 / 10, windows of 8 frames every frame: 13 / 3 / 3.
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 13, "val": 3, "test": 3}

    trained = _run([convlstm, "train", "--task", "radar", "--data", data, "--config", "radar-tiny", "--workers", 0,
                    "--json", "train.epochs=1", "data.limit_train=4", "data.limit_val=2"], cwd=elsewhere, env=env)
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["registered_name"] == "convlstm-radar" and summary["steps"] >= 1
    assert (tmp_path / "home" / "outputs" / "mlflow" / "mlflow.db").is_file()
