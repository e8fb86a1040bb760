"""Scheduled retraining: new data -> a new dataset version -> challenger -> paired champion/challenger
comparison on the same held-out windows -> promotion. One idempotent step for a scheduler.

Order of work, and why it is crash-safe: (1) find what `src` holds that the dataset has not seen, by
content (the task's `new_sources`: new videos, new radar frames); with nothing new, and a model version
already trained on the dataset as it is, there is nothing to do (no lock, no MLflow run, no report);
(2) take the retrain lock (jobs.ops.locks, beside the dataset), freeze the current dataset as a version
(pipelines.versions) and extend it with `prepare --incremental` (published atomically); new inputs that
yield no new windows (same fingerprint) end the run as "nothing to do"; (3) freeze the new version;
(4) score the champion window by window on the configured split of that version, with the baselines
(logged to its run: its version page shows the scores); (5) train a challenger on that version,
warm-started from the champion or from scratch, registered with alias `challenger`, and score it the
same way; (6) decide by a paired test over the windows (jobs.ops.promotion), also against each
`must_beat` baseline; log `retrain-report.json`; (7) promote with ONE alias update as the very last
step, then record the decision in the model's history (jobs.registry.history). A run that dies before
(7) leaves `champion` where it was, and the next run picks the work up (see `retrain`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, field_validator


from jobs import paths
from jobs.jsonable import to_jsonable
from jobs.ops import models
from jobs.ops.locks import RetrainLock, lock_uri_for
from jobs.ops.promotion import Decision, PromotionRule, TestName, paired_test
from jobs.registry import history, tracking
from jobs.tasks import task_class
from jobs.training.config import Section, load_config, read_yaml, validate
from pipelines import cluster, storage, versions
from pipelines.manifest import Manifest, load_manifest

REPORT_NAME = "retrain-report.json"
# A second run while the lock is held exits with EX_TEMPFAIL (sysexits.h): "try again later",
# which is what the next scheduled tick does.


class RetrainConfig(Section):
    """`train_config`: training config path or packaged name (None = the task's), with
    `train_overrides` (`key.sub=value`) and `workers` Ray Train workers (`use_gpu`: one GPU each).
    `init`: the challenger starts from the champion's weights or from scratch. `metric`: scored per
    window on `split` of the new dataset version (None = the task's primary metric). Promotion
    (jobs.ops.promotion): a paired `test` (bootstrap or sign) over at least `min_windows` windows must
    reject "no improvement" at `confidence`, with a mean per-window improvement above `margin` (in the
    metric's unit); `must_beat` baselines (persistence, optical-flow) must be beaten the same way.
    `keep_versions`: dataset versions kept beside the dataset (None = all; the champion's and the
    challenger's data are never pruned). `prepare`: options of the task's prepare step that the
    manifest cannot give back (e.g. kth `sequences` file path); everything else comes from the
    manifest's `params`. `lock_ttl_s`: lease of the retrain lock, longer than a run ever takes (a
    crashed run blocks the next ones that long). `storage`: where checkpoints go (a URI every node
    reads on a cluster; None = the training default)."""

    train_config: str | None = None
    train_overrides: list[str] = []
    workers: int = Field(1, ge=0)
    use_gpu: bool = False
    init: Literal["warm-start", "from-scratch"] = "warm-start"
    metric: str | None = None
    test: TestName = "bootstrap"
    confidence: float = Field(0.95, gt=0, lt=1)
    min_windows: int = Field(10, ge=1)
    margin: float = Field(0.0, ge=0)
    must_beat: list[str] = []
    split: str = "test"
    keep_versions: int | None = Field(None, ge=1)
    prepare: dict[str, Any] = {}
    lock_ttl_s: float = Field(6 * 3600.0, gt=0)
    storage: str | None = None

    @field_validator("must_beat")
    @classmethod
    def _known_baselines(cls, value: list[str]) -> list[str]:
        # deferred: convlstm.baselines loads OpenCV ~4 s, torch ~5 s; the module's other users skip it
        from convlstm.baselines import BASELINES

        unknown = [b for b in value if b not in BASELINES]
        if unknown:
            raise ValueError(f"must be among {', '.join(BASELINES)}, got {', '.join(unknown)}")
        return value


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
class RetrainOptions:
    """How one retraining step runs: the new inputs' `fmt` (`--format`; default: the dataset's), the
    MLflow `tracking_uri`, the Ray `address`, the report folder `out` (default: see `_report_target`),
    `dry_run` (say what would be done, do nothing) and `log` (one progress line per call)."""

    fmt: str | None = None
    tracking_uri: str | None = None
    address: str | None = None
    out: str | None = None
    dry_run: bool = False
    log: Callable[[str], None] = print


def retrain(task: str, src: str, data: str, config: RetrainConfig,
            options: RetrainOptions = RetrainOptions()) -> dict[str, Any]:
    """Run one retraining step; returns the report (`status`: nothing-to-do, dry-run, first-champion,
    promoted or kept-champion; only the last three write `retrain-report.json`). Raises
    jobs.ops.locks.LockHeld while another run holds the lock, ValueError/FileNotFoundError for bad
    arguments before any work.

    There is work when `src` has new inputs that add windows, or when no version of the model was
    trained on the dataset as it is (a previous run extended the shards, then died before registering
    a challenger).
    """
    fmt, tracking_uri, address, out, log = options.fmt, options.tracking_uri, options.address, options.out, options.log
    task_class(task)  # ValueError naming the known tasks
    _check_cluster_paths(src, data, config, out, address)
    train_cfg = load_config(config.train_config, task, config.train_overrides)
    if not train_cfg.registry.register_model:
        raise ValueError("train_overrides: retraining needs registry.register true (the challenger is registered)")
    name = train_cfg.registered_model_name
    client = tracking.client(tracking_uri)
    manifest = load_manifest(data)
    if manifest.task != task:
        raise ValueError(f"--data {data} holds a {manifest.task} dataset, not {task}")
    if config.split not in manifest.splits:
        raise ValueError(f"split: {config.split!r} is not a split of {data} ({', '.join(sorted(manifest.splits))})")
    new = new_sources(task, src, manifest, config.prepare, fmt)
    stale = not _trained_on(client, name, manifest.fingerprint)
    report = _report(task, data, manifest, name, config, new)
    if not (new or stale):
        log(f"nothing to do: nothing new under {src} since {data} was built, and {name} has a version trained on it")
        return {**report, "status": "nothing-to-do"}
    if options.dry_run:
        log(f"dry run: {len(new)} new source(s){', e.g. ' + ', '.join(new[:5]) if new else ''}"
            f"{'; no model trained on the current data yet' if stale else ''}; would prepare, train and compare")
        return {**report, "status": "dry-run"}
    with RetrainLock(lock_uri_for(data), config.lock_ttl_s) as lock:
        # Re-read under the lock: a run that held it may just have done this work.
        manifest = load_manifest(data)
        new = new_sources(task, src, manifest, config.prepare, fmt)
        stale = not _trained_on(client, name, manifest.fingerprint)
        report = {**_report(task, data, manifest, name, config, new), "lock": {"uri": lock.uri, "owner": lock.owner}}
        if not (new or stale):
            log("nothing to do: another run has just done it")
            return {**report, "status": "nothing-to-do"}
        if new:
            log(f"{len(new)} new source(s): {', '.join(new[:5])}{' ...' if len(new) > 5 else ''}; "
                f"preparing {data} incrementally")
            report["data"]["previous_version"] = versions.snapshot(data)
            updated = update_dataset(task, src, data, manifest, config.prepare, fmt, address)
            report["data"]["fingerprint"] = updated.fingerprint
            if updated.fingerprint == manifest.fingerprint and not stale:
                log(f"nothing to do: the new inputs add no windows ({_why_no_windows(new, updated)})")
                return {**report, "status": "nothing-to-do"}
        else:
            log(f"no version of {name} was trained on {data} as it is (an earlier run stopped early): training")
        report["data"]["version"] = versions.snapshot(data)
        result = _train_and_compare(task, report["data"]["version"], train_cfg, config, report, lock,
                                    tracking_uri, address, out, log)
        if config.keep_versions:
            _prune(data, config.keep_versions, client, name, log)
        return result


def _why_no_windows(new: list[str], manifest: Manifest) -> str:
    """Per new input: rejected (with the reason) or too short for a window."""
    reasons = {r.source or r.file: r.reason for r in manifest.rejected}
    return "; ".join(f"{n}: rejected, {reasons[n]}" if n in reasons else f"{n}: no complete window" for n in new[:5])


def _prune(data: str, keep: int, client, name: str, log: Callable[[str], None]) -> None:
    """Retention: drop old dataset versions, never the data of the current champion or challenger."""
    protect = {f for alias in (tracking.CHAMPION, tracking.CHALLENGER)
               for v in [_version_by_alias(client, name, alias)] if v is not None
               for f in v.tags.get("data_fingerprint", "").split(",") if f}
    for uri in versions.prune(data, keep, protect):
        log(f"pruned dataset version {uri} (keep_versions {keep})")


def _check_cluster_paths(src: str, data: str, config: RetrainConfig, out: str | None, address: str | None) -> None:
    """On a multi-node cluster, refuse node-local paths before any work (pipelines.cluster): the dataset
    (extended by decode tasks), the checkpoints, the report, and a folder `src` (read by decode tasks;
    an archive or file `src` is read by this driver only)."""
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


def new_sources(task: str, src: str, manifest: Manifest, prepare: dict[str, Any], fmt: str | None) -> list[str]:
    """Names of the sources under `src` that the dataset holds neither as decoded nor as
    rejected (a source that failed once is retried only with the next genuinely new one);
    what a source is (a video, a day, a chunk) is the task's to say (`Task.source_names`)."""
    known = set(manifest.sources) | {r.source for r in manifest.rejected if r.source}
    return task_class(task).new_sources(src, manifest, prepare, fmt, known)


def update_dataset(task: str, src: str, data: str, manifest: Manifest, prepare: dict[str, Any],
                   fmt: str | None, address: str | None) -> Manifest:
    """Extend the dataset at `data` with the new sources under `src`, with the parameters it was
    built with (the manifest's `params`, plus `prepare`); returns the new manifest."""
    return task_class(task).extend_dataset(src, data, manifest, prepare, fmt, address)


# ----------------------------------------------------------------------------- models


def _train_and_compare(task: str, data: str, train_cfg, config: RetrainConfig, report: dict, lock: RetrainLock,
                       tracking_uri: str | None, address: str | None, out: str | None,
                       log: Callable[[str], None]) -> dict[str, Any]:
    """Steps (4)-(7) of the module docstring on the dataset version `data`."""
    # deferred: jobs.training.driver loads torch ~5 s; the module's other users skip it
    from jobs.training.driver import Compute, RunOptions, train

    name = train_cfg.registered_model_name
    client = tracking.client(tracking_uri)
    champion = _version_by_alias(client, name, tracking.CHAMPION)
    cls = task_class(task)
    metric = config.metric or cls.primary_metric
    higher = cls.metric_higher_is_better(metric)
    target = _report_target(out, name)
    scored = {}
    if champion is not None:  # scored first: a bad metric name fails before any training
        scored["champion"] = _score(name, str(champion.version), data, config, metric, target, tracking_uri, address)
    warm = config.init == "warm-start" and champion is not None
    log(f"training a challenger on {data} ({'warm-started from' if warm else 'from scratch; champion'} "
        f"{name} v{champion.version if champion else '-'})")
    summary = train(train_cfg, data, compute=Compute(workers=config.workers, use_gpu=config.use_gpu, address=address),
                    run=RunOptions(tracking_uri=tracking_uri, storage_path=config.storage,
                                   run_name=f"{task}-retrain-{_stamp()}",
                                   init_from=f"models:/{name}/{champion.version}" if warm else None))
    challenger = str(summary.model_version)
    report["challenger"] = {"version": challenger, "run_id": summary.run_id,
                            "data_fingerprint": report["data"]["fingerprint"],
                            "init": "warm-start" if warm else "from-scratch"}
    report.update(metric=metric, higher_is_better=higher)
    if champion is None:
        log(f"{name} had no champion: version {challenger} was registered as champion")
        _finish({**report, "status": "first-champion"}, target, summary.run_id, tracking_uri, log)
        history.record(tracking_uri, history.AliasDecision(
            name, "first-champion", champion_before=None, champion_after=challenger, challenger=challenger,
            reason="the model had no champion", split=config.split, data_fingerprint=report["data"]["fingerprint"]))
        return {**report, "status": "first-champion"}

    scored["challenger"] = _score(name, challenger, data, config, metric, target, tracking_uri, address)
    decision = decide(scored, config, higher)
    report["champion"] = {"version": str(champion.version), "run_id": champion.run_id,
                          "score": scored["champion"]["value"],
                          "data_fingerprint": champion.tags.get("data_fingerprint", "")}
    report["challenger"]["score"] = scored["challenger"]["value"]
    report["baselines"] = {b: v for b, v in scored["challenger"]["baselines"].items()}
    report.update(decision={"promote": decision.promote, "reason": decision.reason, "p_value": decision.p_value,
                            "n": decision.n, "gain": decision.gain, "test": config.test,
                            "confidence": config.confidence, "min_windows": config.min_windows},
                  status="promoted" if decision.promote else "kept-champion")
    log(f"{metric} on {config.split}: champion v{champion.version} {_g(scored['champion']['value'])}, "
        f"challenger v{challenger} {_g(scored['challenger']['value'])}: {decision.reason}")
    _finish(report, target, summary.run_id, tracking_uri, log)
    if decision.promote:
        lock.verify()
        models.set_champion(tracking_uri, name, challenger)  # the last step that matters
        log(f"promoted {name} v{challenger} to @{tracking.CHAMPION}")
    else:
        log(f"kept {name} v{champion.version} as @{tracking.CHAMPION}")
    history.record(tracking_uri, history.AliasDecision(
        name, report["status"], champion_before=str(champion.version),
        champion_after=challenger if decision.promote else str(champion.version), challenger=challenger,
        reason=decision.reason, metric=metric, split=config.split,
        data_fingerprint=report["data"]["fingerprint"], p_value=decision.p_value, n=decision.n,
        scores={"champion": scored["champion"]["value"], "challenger": scored["challenger"]["value"],
                **scored["challenger"]["baselines"]}))
    return report


def _score(name: str, version: str, data: str, config: RetrainConfig, metric: str, target: str,
           tracking_uri: str | None, address: str | None) -> dict[str, Any]:
    """Evaluate `name` v`version` with the baselines on the split (report files under `target`, logged
    to the version's run and page); {value, baselines: {name: value}, per_window: {method: [...]}}."""
    # deferred: jobs.evaluation.evaluate loads OpenCV ~4 s, torch ~5 s; the module's other users skip it
    from jobs.evaluation.evaluate import DEFAULT_BASELINES, LogTo, Scoring, evaluate

    baselines = tuple(dict.fromkeys([*DEFAULT_BASELINES, *config.must_beat]))
    result = evaluate(f"models:/{name}/{version}", data, config.split, baselines,
                      out=storage.join(target, f"evaluation-v{version}"),
                      scoring=Scoring(address=address, per_window=metric),
                      log=LogTo(tracking_uri=tracking_uri, own_run=True))
    return {"value": result.summary()[metric],
            "baselines": {m: s.summary[metric] for m, s in result.baselines().items()},
            "per_window": result.per_window.methods}


def decide(scored: dict[str, dict], config: RetrainConfig, higher: bool) -> Decision:
    """The paired test against the champion, then against each `must_beat` baseline."""
    rule = PromotionRule(test=config.test, confidence=config.confidence, min_windows=config.min_windows,
                    margin=config.margin)
    challenger = scored["challenger"]["per_window"]["model"]
    decision = paired_test(scored["champion"]["per_window"]["model"], challenger, higher, rule)
    for baseline in config.must_beat if decision.promote else ():
        against = paired_test(scored["challenger"]["per_window"][baseline], challenger, higher, rule, against=baseline)
        if not against.promote:
            return Decision(False, against.reason, against.p_value, against.n, decision.gain)
    return decision


def _g(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.6g}"


def _version_by_alias(client, name: str, alias: str):
    """The ModelVersion behind `name@alias`, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow ~10 s to import; the module's other users skip it

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# ----------------------------------------------------------------------------- report


def _report(task: str, data: str, manifest: Manifest, name: str, config: RetrainConfig, new: list[str]) -> dict:
    return {
        "task": task, "registered_model": name, "started": _now(), "new_sources": new,
        "data": {"path": data, "previous_fingerprint": manifest.fingerprint, "fingerprint": manifest.fingerprint},
        "split": config.split, "margin": config.margin, "config": config.model_dump(mode="json"),
    }


def _report_target(out: str | None, name: str) -> str:
    """Where this run's report goes: `out`, else `<CONVLSTM_STORAGE>/retrain/<model>/<time>`, else under
    the project outputs."""
    return storage.as_uri(out) if out else paths.output_location("retrain", name, _stamp())


def _finish(report: dict, target: str, run_id: str | None, tracking_uri: str | None,
            log: Callable[[str], None]) -> dict:
    """Write the report to `<target>/retrain-report.json` (strict JSON) and log it to the challenger's run."""
    report["finished"] = _now()
    with storage.staged_output(target, prefix="convlstm-retrain-") as folder:  # a URI: written here, uploaded
        path = folder / REPORT_NAME
        path.write_text(json.dumps(to_jsonable(report), indent=1, allow_nan=False) + "\n")
        if run_id:
            tracking.log_artifacts(tracking_uri, run_id, [path])
    log(f"report: {storage.join(target, REPORT_NAME) if storage.is_remote(target) else path}")
    return report


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
