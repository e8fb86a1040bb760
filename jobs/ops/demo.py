"""The whole mission on one machine, on embedded defaults: data → shards → DDP training → registry →
evaluation against baselines → a nowcast from the registered radar model.

Synthetic KTH-style videos (generated) and the bundled MeteoSwiss radar sample (real) go through
the same code paths as the individual commands; the demo configs (`kth-demo`, `radar-demo`) keep it
to minutes on 2 CPU cores. Training is seeded and its Ray Data shards keep their order, so two runs
on one machine give the same models and the same scores.
Rerunning is safe: datasets whose parameters have not changed are reused, training registers
a new version (alias `challenger` once a champion exists), reports are rewritten.
"""
from __future__ import annotations

from importlib.resources import files

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from jobs.nowcast.forecast import nowcast
from jobs.tasks.plugins import task_class
from jobs.training.config import load_config
from pipelines.driver import Publish
from pipelines.kth import KthOptions, params, prepare_kth
from pipelines.manifest import Manifest, load_manifest

# Persons of the official KTH split (train 11-18, val 1, 4, 19-21, 23-25, test 2, 3, 5-10, 22).
KTH_PERSONS = {"train": [11, 12, 13, 14, 15, 16, 17, 18], "val": [1, 4], "test": [2, 3]}
KTH_VIDEO_FRAMES = 60
# 15-frame windows every 5 frames at 30x40: 480 training windows, small enough for 2 CPU cores.
KTH_FRAME_LEN, KTH_STRIDE, KTH_SIZE = 15, 5, (30, 40)
# The bundled sample is 40 frames of one evening: 20 / 10 / 10 in time order, 13 / 3 / 3 windows.
RADAR_IN_LEN, RADAR_OUT_LEN = 4, 4
RADAR_SIZE = (64, 64)
RADAR_CROP = (640, 640)
# The demo's own configs (jobs/configs/<task>-demo.yaml), tuned so both champions beat their
# baselines in a few minutes on 2 CPU cores; the tiny configs stay the one-minute smoke tests.
CONFIGS = {"kth": "kth-demo", "radar": "radar-demo"}
# Radar scores shown in the summary (evaluation.json summary names), and which way is better.
RADAR_SCORES = ("rainfall_mse", "correlation", "csi_ge_0.5")  # which way each is better: the radar task says


@dataclass
class DemoPlan:
    """Where the demo reads and writes; everything lives under `root` except the MLflow store."""

    root: Path
    radar_src: Path
    workers: int = 2
    address: str | None = None
    tracking_uri: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def videos(self) -> Path:
        return self.root / "kth-videos"

    def data(self, task: str) -> Path:
        return self.root / "data" / task

    def reports(self, name: str) -> Path:
        return self.root / "reports" / name


def bundled_radar_sample() -> Path:
    """The MeteoSwiss sample shipped inside the package (`jobs/samples/radar-mch`, package data), so a
    checkout, an editable install and an installed wheel all find it, whatever `CONVLSTM_HOME` is."""
    sample = files("jobs") / "samples" / "radar-mch"
    if not isinstance(sample, Path) or not sample.is_dir():  # a zipped or stripped install
        raise FileNotFoundError(f"bundled radar sample not found at {sample} (package data of jobs); "
                                "reinstall convlstm-pipeline or pass --radar-src")
    return sample


def stages(plan: DemoPlan) -> list[tuple[str, Callable[[DemoPlan], str]]]:
    return [
        ("generate KTH-style videos", make_videos),
        ("prepare kth shards (Ray Data, split by person)", prepare_kth_shards),
        ("prepare radar shards (Ray Data, MeteoSwiss sample)", prepare_radar_shards),
        (f"train {CONFIGS['kth']} (Ray Train DDP, {plan.workers} workers)", lambda p: train_task(p, "kth")),
        (f"train {CONFIGS['radar']} (Ray Train DDP, {plan.workers} workers)", lambda p: train_task(p, "radar")),
        ("evaluate kth champion", lambda p: evaluate_task(p, "kth")),
        ("evaluate radar champion vs persistence and optical flow", lambda p: evaluate_task(p, "radar")),
        ("nowcast from models:/convlstm-radar@champion", nowcast_from_registry),
    ]


def run_demo(plan: DemoPlan, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage in order, printing a progress line per stage; returns the collected results."""
    todo = stages(plan)
    started = time.monotonic()
    for i, (title, stage) in enumerate(todo, 1):
        echo(f"[{i}/{len(todo)}] {title} ...")
        t0 = time.monotonic()
        detail = stage(plan)
        echo(f"      done in {time.monotonic() - t0:5.1f} s  {detail}")
    plan.results["elapsed_s"] = round(time.monotonic() - started, 1)
    summary_path = plan.root / "demo-summary.json"
    summary_path.write_text(json.dumps(plan.results, indent=2, default=str))
    return plan.results


def make_videos(plan: DemoPlan) -> str:
    # deferred: pipelines.synthetic loads OpenCV ~4 s; the module's other users skip it
    from pipelines.synthetic import write_kth_videos

    persons = sorted(p for members in KTH_PERSONS.values() for p in members)
    expected = len(persons) * 6
    existing = list(plan.videos.rglob("*.avi")) if plan.videos.is_dir() else []
    if len(existing) == expected:
        return f"{expected} videos already in {plan.videos}"
    written = write_kth_videos(plan.videos, persons, scenarios=("d1",), frames=KTH_VIDEO_FRAMES, seed=0)
    return f"{len(written)} videos, 160x120 @ 25 fps, in {plan.videos}"


def prepare_kth_shards(plan: DemoPlan) -> str:
    options = KthOptions(frame_len=KTH_FRAME_LEN, stride=KTH_STRIDE, size=KTH_SIZE, split="official")
    manifest = _reuse(plan.data("kth"), params(options))
    if manifest is None:
        manifest = prepare_kth(plan.videos, str(plan.data("kth")), options,
                               publish=Publish(overwrite=True, address=plan.address, progress=False))
    plan.results["kth_data"] = {"path": str(plan.data("kth")), "fingerprint": manifest.fingerprint}
    return _counts(manifest)


def prepare_radar_shards(plan: DemoPlan) -> str:
    # deferred: pipelines.radar.prepare loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
    from pipelines.radar.prepare import RadarOptions, prepare_radar

    options = RadarOptions(in_len=RADAR_IN_LEN, out_len=RADAR_OUT_LEN, stride=1, size=RADAR_SIZE,
                           crop=RADAR_CROP, split="time", val_fraction=0.25, test_fraction=0.25)
    manifest = _reuse(plan.data("radar"), {
        "format": "mch", "in_len": RADAR_IN_LEN, "out_len": RADAR_OUT_LEN, "size": list(RADAR_SIZE),
        "crop": list(RADAR_CROP), "split": "time", "val_fraction": 0.25, "test_fraction": 0.25})
    if manifest is None:
        manifest = prepare_radar(plan.radar_src, str(plan.data("radar")), "mch", options,
                                 publish=Publish(overwrite=True, address=plan.address, progress=False))
    plan.results["radar_data"] = {"path": str(plan.data("radar")), "fingerprint": manifest.fingerprint}
    return _counts(manifest)


def train_task(plan: DemoPlan, task: str) -> str:
    # deferred: jobs.training.driver loads torch ~5 s; the module's other users skip it
    from jobs.training.driver import Compute, RunOptions, train

    cfg = load_config(CONFIGS[task], task)
    summary = train(cfg, plan.data(task), compute=Compute(workers=plan.workers, address=plan.address),
                    run=RunOptions(tracking_uri=plan.tracking_uri))
    plan.results[f"{task}_train"] = summary.to_dict()
    return (f"{summary.monitor}={summary.best_score:.4g}; registered {summary.registered_name} "
            f"v{summary.model_version} @{summary.alias}")


def evaluate_task(plan: DemoPlan, task: str) -> str:
    # deferred: jobs.evaluation.evaluate loads OpenCV ~4 s, torch ~5 s; the module's other users skip it
    from jobs.evaluation.evaluate import LogTo, Scoring, evaluate

    baselines = ("persistence", "optical-flow") if task == "radar" else ()
    result = evaluate(f"models:/convlstm-{task}@champion", str(plan.data(task)), split="test",
                      baselines=baselines, out=str(plan.reports(f"evaluate-{task}")),
                      scoring=Scoring(address=plan.address), log=LogTo(tracking_uri=plan.tracking_uri, own_run=True))
    plan.results[f"{task}_evaluation"] = {
        "report": str(plan.reports(f"evaluate-{task}")),
        "primary_metric": result.primary_metric.to_json(),
        "methods": {m: s.summary for m, s in result.methods.items()},
        "last_lead": {m: {k: v[-1] for k, v in s.per_lead.items() if v} for m, s in result.methods.items()},
    }
    primary = result.primary_metric
    return f"{primary.name}={_fmt(primary.value)} on {result.data.windows} test windows"


def nowcast_from_registry(plan: DemoPlan) -> str:
    out = plan.reports("nowcast")
    sidecar = nowcast("models:/convlstm-radar@champion", plan.radar_src, out, fmt="mch",
                      tracking_uri=plan.tracking_uri)
    plan.results["nowcast"] = {"out": str(out), "valid_times": sidecar.get("valid_times")}
    return f"{len(sidecar.get('valid_times', []))} frames in {out}"


def summary_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per task with data fingerprint, model version and scores."""
    rows = ["| task | data fingerprint | registered model | validation | test (model) | test (baselines) |",
            "|---|---|---|---|---|---|"]
    for task in ("kth", "radar"):
        trained = results.get(f"{task}_train", {})
        evaluation = results.get(f"{task}_evaluation", {})
        primary = evaluation.get("primary_metric", {})
        name = primary.get("name", "")
        baselines = ", ".join(f"{m} {_fmt(s.get(name))}" for m, s in evaluation.get("methods", {}).items()
                              if m != "model") or "n/a"
        rows.append(f"| {task} | {results.get(f'{task}_data', {}).get('fingerprint', '')[:12]} | "
                    f"{trained.get('registered_name')} v{trained.get('model_version')} @{trained.get('alias')} | "
                    f"{trained.get('monitor')} {_fmt(trained.get('best_score'))} | "
                    f"{name} {_fmt(primary.get('value'))} | {baselines} |")
    radar = results.get("radar_evaluation")
    if radar:
        baselines = [m for m in radar["methods"] if m != "model"]
        rows += ["", "| radar test windows | " + " | ".join(f"{n} (mean / last lead)" for n in RADAR_SCORES)
                 + "".join(f" | model beats {b}" for b in baselines) + " |",
                 "|---|" + "---|" * (len(RADAR_SCORES) + len(baselines))]
        for method, summary in radar["methods"].items():
            last = radar.get("last_lead", {}).get(method, {})
            cells = " | ".join(f"{_fmt(summary.get(n))} / {_fmt(last.get(n))}" for n in RADAR_SCORES)
            verdicts = "".join(f" | {_verdict(radar, b) if method == 'model' else ''}" for b in baselines)
            rows.append(f"| {method} | {cells}{verdicts} |")
    return "\n".join(rows)


def beats(radar_evaluation: dict[str, Any], baseline: str, method: str = "model") -> dict[str, bool]:
    """{`<score>` and `<score>@last`: whether `method` is better than `baseline` there} for RADAR_SCORES
    (means over the lead times, and the last lead); each score's direction from the radar task."""
    means, last = radar_evaluation["methods"], radar_evaluation.get("last_lead", {})
    verdict = {}
    higher = task_class("radar").metric_higher_is_better
    for name in RADAR_SCORES:
        for key, table in ((name, means), (f"{name}@last", last)):
            mine, theirs = table.get(method, {}).get(name), table.get(baseline, {}).get(name)
            verdict[key] = (mine is not None and theirs is not None
                            and (mine > theirs if higher(name) else mine < theirs))
    return verdict


def _verdict(radar_evaluation: dict[str, Any], baseline: str) -> str:
    missed = [k for k, ok in beats(radar_evaluation, baseline).items() if not ok]
    return "yes, all" if not missed else "no: " + ", ".join(missed)


def _reuse(out: Path, expected_params: dict) -> Manifest | None:
    """The existing manifest at `out` when its params include `expected_params`, else None."""
    if not (out / "manifest.json").is_file():
        return None
    manifest = load_manifest(str(out))
    expected = json.loads(json.dumps(expected_params))  # tuples -> lists, as stored
    made_with = manifest.params
    return manifest if all(made_with.get(k) == v for k, v in expected.items()) else None


def _counts(manifest: Manifest) -> str:
    counts = {split: info.count for split, info in manifest.splits.items()}
    return f"windows {counts}, {len(manifest.rejected)} rejected, fingerprint {manifest.fingerprint[:12]}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and value is not None else "n/a"
