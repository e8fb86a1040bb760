"""`convlstm models list|history|promote|rollback` on a real MLflow store, and the flows around
retraining: submitted runs carry the submitter's commit and job id, `jobs stop` ends the job's runs
KILLED with the reason, a radar prepare with an empty train split fails unless allowed."""
from __future__ import annotations

import json

import pytest

from jobs.cli import main
from jobs.ops.submit import build_submission
from jobs.registry import lineage, tracking
from jobs.registry.history import history

MODEL = "convlstm-models-cli-test"


@pytest.fixture
def store(tmp_path) -> str:
    """A sqlite MLflow store with MODEL v1 @champion and v2 @challenger (registry entries only)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = tracking.client(uri)
    c.create_registered_model(MODEL)
    for version in ("1", "2"):
        c.create_model_version(MODEL, source=str(tmp_path / f"model{version}"), tags={"task": "radar"})
    c.set_registered_model_alias(MODEL, tracking.CHAMPION, "1")
    c.set_registered_model_alias(MODEL, tracking.CHALLENGER, "2")
    return uri


def _aliases(uri: str) -> dict[str, str]:
    return {a: str(v) for a, v in tracking.client(uri).get_registered_model(MODEL).aliases.items()}


def test_promote_moves_the_champion_and_rollback_returns_it_both_recorded(store, capsys):
    assert main(["models", "list", "--tracking-uri", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": MODEL, "versions": 2, "latest": "2", "champion": "1",
                                                    "challenger": "2"}]
    assert main(["models", "promote", MODEL, "--version", "2", "--reason", "better on July", "--tracking-uri",
                 store]) == 0
    assert capsys.readouterr().out.strip() == f"{MODEL}@champion: v1 -> v2 (better on July)"
    assert _aliases(store) == {"champion": "2"}  # @challenger leaves the promoted version
    assert main(["models", "rollback", MODEL, "--reason", "bad in August", "--tracking-uri", store]) == 0
    assert _aliases(store) == {"champion": "1"}
    capsys.readouterr()
    entries = history(store, MODEL)
    assert [(e["action"], e["champion_before"], e["champion_after"], e["reason"]) for e in entries] == [
        ("promote", "1", "2", "better on July"), ("rollback", "2", "1", "bad in August")]
    assert main(["models", "history", MODEL, "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["TIME", "(UTC)", "ACTION"] and len(lines) == 3
    assert lines[2].split()[1:3] == ["rollback", "v2->v1"] and lines[2].endswith("bad in August")
    description = tracking.client(store).get_registered_model(MODEL).description
    assert "**v1** @champion" in description


def test_models_refuses_unknown_models_versions_and_a_rollback_without_history(store, capsys):
    for argv, named in ((["promote", MODEL, "--version", "7", "--reason", "x"], "--version 7"),
                        (["promote", MODEL, "--version", "1", "--reason", "x"], "already"),
                        (["rollback", MODEL, "--reason", "x"], "no earlier champion"),
                        (["history", "nope"], "nope")):
        assert main(["models", *argv, "--tracking-uri", store]) == 2
        err = capsys.readouterr().err
        assert named in err and len(err.strip().splitlines()) == 1
    assert _aliases(store) == {"champion": "1", "challenger": "2"}


def test_a_submitted_job_records_the_commit_taken_before_upload_and_its_id(monkeypatch):
    submission = build_submission(["convlstm", "train", "--task", "kth"], upload=False, install=False,
                                  env={"EXTRA": "1"})
    env = submission.runtime_env["env_vars"]
    commit = lineage.git_commit()
    assert commit and env[lineage.COMMIT_ENV] == commit and env["EXTRA"] == "1"
    assert env[lineage.SUBMISSION_ENV] == submission.submission_id
    monkeypatch.setenv(lineage.COMMIT_ENV, "0123abc")  # what the job's process sees on the cluster
    monkeypatch.setenv(lineage.SUBMISSION_ENV, "convlstm-train-1")
    tags = lineage.source_tags()
    assert tags["mlflow.source.git.commit"] == "0123abc" and tags[tracking.SUBMISSION_TAG] == "convlstm-train-1"


def test_stopping_a_job_ends_its_running_mlflow_runs_killed_with_the_reason(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.ensure_experiment(uri, "jobs-stop")
    job = tracking.create_run(uri, experiment, "train", {tracking.SUBMISSION_TAG: "job-1"}, {})
    other = tracking.create_run(uri, experiment, "train", {tracking.SUBMISSION_TAG: "job-2"}, {})
    assert tracking.kill_job_runs(uri, "job-1", "stopped by alice: wrong data") == [job]
    c = tracking.client(uri)
    run = c.get_run(job)
    assert run.info.status == "KILLED" and run.data.tags["convlstm.end_reason"] == "stopped by alice: wrong data"
    assert "KILLED: stopped by alice: wrong data" in run.data.tags[tracking.NOTE_TAG]
    assert c.get_run(other).info.status == "RUNNING"
    assert tracking.kill_job_runs(uri, "job-1", "again") == []  # already ended


def test_a_radar_prepare_without_train_windows_fails_unless_allowed(ray_local, sample_data, tmp_path, capsys):
    days = tmp_path / "days.json"
    days.write_text(json.dumps({"val": ["2016-07-11"], "test": ["2016-07-12"]}))
    argv = ["prepare", "radar", "--src", str(sample_data / "radar-mch-sample"), "--format", "mch", "--in-len", "2",
            "--out-len", "2", "--size", "16x16", "--days-file", str(days), "--out", str(tmp_path / "ds")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no window falls in the train, test split" in err and "--allow-empty-split" in err and not (tmp_path / "ds").exists()
    assert main([*argv, "--allow-empty-split"]) == 0
    out = capsys.readouterr().out
    assert "  train: 0 windows  <- empty split" in out and "  val: 36 windows" in out and "  test: 0 windows  <- empty split" in out


def test_experiment_links_open_the_training_view_of_the_installed_mlflow_ui(tmp_path):
    """MLflow 3.17's UI lays an experiment out by the `workflowType` URL parameter (GenAI by default),
    not by `mlflow.experimentKind`: the links the project prints carry the parameter, and the installed
    UI bundle reads it under that name with that value."""
    from pathlib import Path

    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.ensure_experiment(uri, "links")
    tracking.client(uri).create_experiment("not-ours")
    assert tracking.experiment_urls(uri, "http://127.0.0.1:5000/") == [
        ("links", f"http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning")]
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    sources = [p.read_text(errors="ignore") for p in bundle.glob("main.*.js")]
    assert any('get("workflowType")' in s and 'MACHINE_LEARNING="machine_learning"' in s for s in sources)


def test_the_splits_a_radar_prepare_must_fill_are_the_ones_asked_for(tmp_path):
    from jobs.cli.prepare_radar import required_splits
    from pipelines.radar.prepare import RadarOptions

    assert required_splits(RadarOptions()) == ("train", "val", "test")
    assert required_splits(RadarOptions(val_fraction=0, test_fraction=0.3)) == ("train", "test")
    days = tmp_path / "days.json"
    days.write_text(json.dumps({"train": ["2016-07-11"], "val": ["2016-07-12"], "test": []}))
    assert required_splits(RadarOptions(days_file=days)) == ("train", "val")
