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

Here: steps (1)-(3) and retention. The retrain YAML and options are `jobs.ops.retrain_config`, steps
(4)-(7) `jobs.ops.challenger`, the report `jobs.ops.retrain_report`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from jobs import paths
from jobs.ops.challenger import train_and_compare
from jobs.ops.locks import RetrainLock, lock_uri_for
from jobs.ops.models import version_by_alias
from jobs.ops.retrain_config import RetrainConfig, RetrainOptions
from jobs.ops.retrain_report import new_report
from jobs.registry import tracking
from jobs.tasks import task_class
from jobs.training.config import load_config
from pipelines import cluster, storage, versions
from pipelines.manifest import Manifest, load_manifest

# A second run while the lock is held exits with EX_TEMPFAIL (sysexits.h): "try again later",
# which is what the next scheduled tick does.


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
    report = new_report(task, data, manifest, name, config, new)
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
        report = {**new_report(task, data, manifest, name, config, new), "lock": {"uri": lock.uri, "owner": lock.owner}}
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
        result = train_and_compare(task, report["data"]["version"], train_cfg, config, report, lock, options)
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
               for v in [version_by_alias(client, name, alias)] if v is not None
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
