"""Scheduled retraining: new sources -> incremental shards -> challenger -> champion/challenger
comparison on one held-out split -> promotion. One idempotent step for a scheduler.

Order of work, and why it is crash-safe: (1) list the sources under `src` that the dataset's
manifest does not hold; with none, and a model version already trained on the dataset as it is,
there is nothing to do (no lock, no MLflow run); (2) take the retrain lock (jobs.ops.locks, beside the
dataset) and extend the shards with `prepare --incremental` (published atomically: the old
dataset stays readable); (3) score the champion on the configured split of the new dataset;
(4) train a challenger, warm-started from the champion's weights or from scratch, registered with
alias `challenger`, and score it on the same split; tag both versions with the decision, scores
and data fingerprints, and log `retrain-report.json`; (5) promote, if the challenger wins by the
margin, with ONE alias update as the very last step. A run that dies before (5) leaves
`champion` where it was, and the next run picks the work up (see `retrain`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field


from jobs import paths
from jobs.registry import tracking
from jobs.training.config import Section, load_config, read_yaml, validate
from jobs.ops.locks import RetrainLock, lock_uri_for
from jobs.tasks import task_class

REPORT_NAME = "retrain-report.json"
TAG = f"{tracking.TAG_PREFIX}retrain."
# A second run while the lock is held exits with EX_TEMPFAIL (sysexits.h): "try again later",
# which is what the next scheduled tick does.


class RetrainConfig(Section):
    """`train_config`: training config path or packaged name (None = the task's), with
    `train_overrides` (`key.sub=value`) and `workers` Ray Train workers (`use_gpu`: one GPU each).
    `init`: the challenger starts from the champion's weights or from scratch. `metric`: scored on
    `split` of the new dataset (None = the task's primary metric); the challenger is promoted only if
    it beats the champion by more than `margin` (absolute, in the metric's unit). `prepare`: options of
    the task's prepare step that the manifest cannot give back (e.g. kth `sequences` file path);
    everything else comes from the manifest's `params`. `lock_ttl_s`: lease of the retrain lock,
    longer than a run ever takes (a crashed run blocks the next ones that long). `storage`: where
    checkpoints go (a URI every node reads on a cluster; None = the training default)."""

    train_config: str | None = None
    train_overrides: list[str] = []
    workers: int = Field(1, ge=0)
    use_gpu: bool = False
    init: Literal["warm-start", "from-scratch"] = "warm-start"
    metric: str | None = None
    margin: float = Field(0.0, ge=0)
    split: str = "test"
    prepare: dict[str, Any] = {}
    lock_ttl_s: float = Field(6 * 3600.0, gt=0)
    storage: str | None = None


def load_retrain_config(path: str | Path | None = None, **overrides: Any) -> RetrainConfig:
    """Read and validate a retrain YAML (None = defaults); non-None `overrides` (field=value,
    e.g. from the command line) win. ValueError names the key (or the file and line)."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        raw = read_yaml(path, "--config")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return validate(RetrainConfig, raw)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(champion: float, challenger: float, higher_is_better: bool, margin: float) -> Decision:
    """Promote only when the challenger beats the champion by MORE than `margin`; a tie or a
    non-finite score keeps the champion."""
    if not (math.isfinite(champion) and math.isfinite(challenger)):
        return Decision(False, f"non-finite score (champion {champion}, challenger {challenger})")
    gain = challenger - champion if higher_is_better else champion - challenger
    verdict = "beats" if gain > margin else "does not beat"
    return Decision(gain > margin, f"challenger {verdict} champion by more than {margin:g} "
                                   f"({'+' if gain >= 0 else ''}{gain:.6g})")


def retrain(task: str, src: str, data: str, config: RetrainConfig, *, fmt: str | None = None,
            tracking_uri: str | None = None, address: str | None = None, out: str | None = None,
            dry_run: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one retraining step; returns the report (`status`: nothing-to-do, dry-run, no-new-windows,
    first-champion, promoted or kept-champion). Raises jobs.ops.locks.LockHeld while another run holds
    the lock, ValueError/FileNotFoundError for bad arguments before any work.

    There is work when `src` has new sources, or when no version of the model was trained on the
    dataset as it is (a previous run extended the shards, then died before registering a challenger).
    """
    from pipelines.manifest import load_manifest

    task_class(task)  # ValueError naming the known tasks
    _check_cluster_paths(src, data, config, out, address)
    train_cfg = load_config(config.train_config, task, config.train_overrides)
    if not train_cfg.registry.register_model:
        raise ValueError("train_overrides: retraining needs registry.register true (the challenger is registered)")
    name = train_cfg.registered_model_name
    client = tracking.client(tracking_uri)
    manifest = load_manifest(data)
    if manifest["task"] != task:
        raise ValueError(f"--data {data} holds a {manifest['task']} dataset, not {task}")
    if config.split not in manifest["splits"]:
        raise ValueError(f"split: {config.split!r} is not a split of {data} ({', '.join(sorted(manifest['splits']))})")
    new = new_sources(task, src, manifest, config.prepare, fmt)
    stale = not _trained_on(client, name, manifest["fingerprint"])
    report = _report(task, data, manifest, name, config, new)
    if not (new or stale):
        log(f"nothing to do: every source under {src} is already in {data}, and {name} has a version "
            f"trained on it")
        return {**report, "status": "nothing-to-do"}
    if dry_run:
        log(f"dry run: {len(new)} new source(s){', e.g. ' + ', '.join(new[:5]) if new else ''}"
            f"{'; no model trained on the current data yet' if stale else ''}; would prepare, train and compare")
        return {**report, "status": "dry-run"}
    with RetrainLock(lock_uri_for(data), config.lock_ttl_s) as lock:
        # Re-read under the lock: a run that held it may just have done this work.
        manifest = load_manifest(data)
        new = new_sources(task, src, manifest, config.prepare, fmt)
        stale = not _trained_on(client, name, manifest["fingerprint"])
        report = {**_report(task, data, manifest, name, config, new), "lock": {"uri": lock.uri, "owner": lock.owner}}
        if not (new or stale):
            log("nothing to do: another run has just done it")
            return {**report, "status": "nothing-to-do"}
        if new:
            log(f"{len(new)} new source(s): preparing {data} incrementally")
            updated = update_dataset(task, src, data, manifest, config.prepare, fmt, address)
            report["data"]["fingerprint"] = updated["fingerprint"]
            if updated["fingerprint"] == manifest["fingerprint"] and not stale:
                log("no new windows (the new sources were rejected: see the manifest's `rejected`)")
                return _finish({**report, "status": "no-new-windows"}, out, None, tracking_uri, log)
        else:
            log(f"no version of {name} was trained on {data} as it is (an earlier run stopped early): training")
        return _train_and_compare(task, data, train_cfg, config, report, lock, tracking_uri, address, out, log)


def _check_cluster_paths(src: str, data: str, config: RetrainConfig, out: str | None, address: str | None) -> None:
    """On a multi-node cluster, refuse node-local paths before any work (pipelines.cluster): the dataset
    (extended by decode tasks), the checkpoints, the report, and a folder `src` (read by decode tasks;
    an archive or file `src` is read by this driver only)."""
    from pipelines import cluster, storage

    local_folder = not storage.is_remote(src) and Path(src).is_dir()
    cluster.check_paths({"--data": data, "--src": src if local_folder else None,
                         "--storage": config.storage or paths.output_location("train"),
                         "--out": out or paths.output_location("retrain")},
                        address=address, defaulted={k for k, v in (("--storage", config.storage), ("--out", out))
                                                    if not v})


def _trained_on(client, name: str, fingerprint: str) -> bool:
    """Whether a version of the registered model `name` was trained on data `fingerprint`."""
    return bool(client.search_model_versions(f"name='{name}' and tags.data_fingerprint='{fingerprint}'",
                                             max_results=1))


# ----------------------------------------------------------------------------- data


def new_sources(task: str, src: str, manifest: dict, prepare: dict[str, Any], fmt: str | None) -> list[str]:
    """Names of the sources under `src` that the dataset holds neither as decoded nor as
    rejected (a source that failed once is retried only with the next genuinely new one);
    what a source is (a video, a day, a chunk) is the task's to say (`Task.source_names`)."""
    known = set(manifest["sources"]) | {r["source"] for r in manifest.get("rejected", []) if r.get("source")}
    return task_class(task).new_sources(src, manifest, prepare, fmt, known)


def update_dataset(task: str, src: str, data: str, manifest: dict, prepare: dict[str, Any],
                   fmt: str | None, address: str | None) -> dict:
    """Extend the dataset at `data` with the new sources under `src`, with the parameters it was
    built with (the manifest's `params`, plus `prepare`); returns the new manifest."""
    return task_class(task).extend_dataset(src, data, manifest, prepare, fmt, address)


# ----------------------------------------------------------------------------- models


def _train_and_compare(task: str, data: str, train_cfg, config: RetrainConfig, report: dict, lock: RetrainLock,
                       tracking_uri: str | None, address: str | None, out: str | None,
                       log: Callable[[str], None]) -> dict[str, Any]:
    from jobs.evaluation.evaluate import higher_is_better, model_score, primary_metric
    from jobs.training.driver import train

    name = train_cfg.registered_model_name
    client = tracking.client(tracking_uri)
    champion = _version_by_alias(client, name, tracking.CHAMPION)
    metric, higher = (config.metric, higher_is_better(config.metric, task)) if config.metric else primary_metric(task)
    scores = {}
    if champion is not None:  # scored first: a bad metric name fails before any training
        scores["champion"] = model_score(f"models:/{name}/{champion.version}", data, config.split, metric,
                                         tracking_uri=tracking_uri, address=address)
    warm = config.init == "warm-start" and champion is not None
    log(f"training a challenger ({'warm-started from' if warm else 'from scratch; champion'} "
        f"{name} v{champion.version if champion else '-'})")
    summary = train(train_cfg, data, workers=config.workers, use_gpu=config.use_gpu, address=address,
                    tracking_uri=tracking_uri, storage_path=config.storage, run_name=f"{task}-retrain-{_stamp()}",
                    init_from=f"models:/{name}/{champion.version}" if warm else None)
    report["challenger"] = {"version": summary.model_version, "run_id": summary.run_id,
                            "data_fingerprint": report["data"]["fingerprint"],
                            "init": "warm-start" if warm else "from-scratch"}
    if champion is None:
        log(f"{name} had no champion: version {summary.model_version} was registered as champion")
        return _finish({**report, "status": "first-champion"}, out, summary.run_id, tracking_uri, log)

    scores["challenger"] = model_score(f"models:/{name}/{summary.model_version}", data, config.split, metric,
                                       tracking_uri=tracking_uri, address=address)
    decision = decide(scores["champion"], scores["challenger"], higher, config.margin)
    report["champion"] = {"version": str(champion.version), "run_id": champion.run_id, "score": scores["champion"],
                          "data_fingerprint": champion.tags.get("data_fingerprint", "")}
    report["challenger"]["score"] = scores["challenger"]
    report.update(metric=metric, higher_is_better=higher,
                  decision={"promote": decision.promote, "reason": decision.reason},
                  status="promoted" if decision.promote else "kept-champion")
    log(f"{metric} on {config.split}: champion v{champion.version} {scores['champion']:.6g}, "
        f"challenger v{summary.model_version} {scores['challenger']:.6g}: {decision.reason}")
    _tag_versions(client, name, report)
    _finish(report, out, summary.run_id, tracking_uri, log)
    if decision.promote:
        lock.verify()
        client.set_registered_model_alias(name, tracking.CHAMPION, summary.model_version)  # the last step
        log(f"promoted {name} v{summary.model_version} to @{tracking.CHAMPION}")
        try:  # cosmetic, after the promotion: the description's version list shows the new @champion
            tracking.describe_registered_model(tracking_uri, name)
        except Exception as exc:  # noqa: BLE001 - the promotion stands
            log(f"warning: registered model description not updated: {exc}")
    else:
        log(f"kept {name} v{champion.version} as @{tracking.CHAMPION}")
    return report


def _version_by_alias(client, name: str, alias: str):
    """The ModelVersion behind `name@alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _tag_versions(client, name: str, report: dict) -> None:
    """Decision, scores and data fingerprints on both versions (the champion's tags describe its
    latest defence)."""
    tags = {
        "decision": "promote" if report["decision"]["promote"] else "keep-champion",
        "reason": report["decision"]["reason"],
        "metric": report["metric"], "split": report["split"], "margin": f"{report['margin']:g}",
        "eval_data_fingerprint": report["data"]["fingerprint"],
        "champion_version": report["champion"]["version"], "challenger_version": report["challenger"]["version"],
        "champion_score": f"{report['champion']['score']:.6g}",
        "challenger_score": f"{report['challenger']['score']:.6g}",
        "champion_data_fingerprint": report["champion"]["data_fingerprint"],
        "challenger_data_fingerprint": report["challenger"]["data_fingerprint"],
        "challenger_run_id": report["challenger"]["run_id"],
    }
    for version in (report["champion"]["version"], report["challenger"]["version"]):
        for key, value in tags.items():
            client.set_model_version_tag(name, version, f"{TAG}{key}", value)


# ----------------------------------------------------------------------------- report


def _report(task: str, data: str, manifest: dict, name: str, config: RetrainConfig, new: list[str]) -> dict:
    return {
        "task": task, "registered_model": name, "started": _now(), "new_sources": new,
        "data": {"path": data, "previous_fingerprint": manifest["fingerprint"], "fingerprint": manifest["fingerprint"]},
        "split": config.split, "margin": config.margin, "config": config.model_dump(mode="json"),
    }


def _finish(report: dict, out: str | None, run_id: str | None, tracking_uri: str | None,
            log: Callable[[str], None]) -> dict:
    """Write the report to `<out>/retrain-report.json` (a folder or URI; default
    `<CONVLSTM_STORAGE>/retrain/<model>/<time>`, else under the project outputs) and log it to the
    challenger's run when there is one."""
    from pipelines import storage

    report["finished"] = _now()
    target = storage.as_uri(out) if out else paths.output_location("retrain", report["registered_model"], _stamp())
    with storage.staged_output(target, prefix="convlstm-retrain-") as folder:  # a URI: written here, uploaded
        path = folder / REPORT_NAME
        path.write_text(json.dumps(report, indent=1) + "\n")
        if run_id:
            tracking.log_artifacts(tracking_uri, run_id, [path])
    log(f"report: {storage.join(target, REPORT_NAME) if storage.is_remote(target) else path}")
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
