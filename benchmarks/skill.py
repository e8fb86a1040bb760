"""Forecast skill on the real radar samples, prepared, trained and scored by the product's own functions.

1. Prepares every archive in `--data-dir` (MeteoSwiss, FMI, KNMI, BoM, OPERA) with `prepare radar`
   (`pipelines.radar.prepare.prepare_radar`) by the fixed protocol: `--in-len 5 --out-len 12 --stride 1
   --size 128x128`, a chronological split per archive (`--split time`: the first frames train, the
   last `TEST_FRACTION[archive]` test; the samples are 24-144 frames, too short for a validation block
   too). Prepared datasets are reused under `--work`.
2. Trains `--config` (default `radar-skill`, the motion-aware recipe) with `jobs.training.driver.train`
   in this process (`workers=0`), pooled over the archives that have training windows and share the
   majority time step (5 min: a pooled run refuses other time steps), tracked in an MLflow store under
   `--work`. `--set key=value` overrides the config (`--set model.params.motion=null` is the plain
   ConvLSTM, `--set train.epochs=N` the budget). The process CPU time of training is recorded.
3. Scores the best checkpoint (or `--checkpoint`, without training), persistence, our optical flow and,
   where pySTEPS is installed, pySTEPS' extrapolation on every archive's test windows with
   `convlstm evaluate`'s scoring (`jobs.evaluation.window_scores`: per-window states of the task's scores,
   rainfall MSE, correlation, CSI/HSS at the HKO-7 thresholds, FSS), summed per archive and pooled.
   Writes `skill.json` (per archive and pooled, per lead and mean) and each one's lead-time plots
   (`jobs.evaluation.report.plot_lead_times`) under `--out/<archive>/`.

    python benchmarks/skill.py --data-dir /work/shared/data --out skill-motion
    python benchmarks/skill.py --data-dir /work/shared/data --out skill-plain --set model.params.motion=null \
        --set model.params.smoothing=null --set loss.name=balanced_mse --set optim.lr=1e-4

`--data-dir` defaults to the repository's tests/data, whose trimmed samples (4-24 frames) are shorter
than the protocol's 17-frame windows: the benchmark needs the full archives.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

ARCHIVES = {"mch": "radar-mch-sample", "fmi": "radar-fmi-sample", "knmi": "radar-knmi-sample",
            "bom": "radar-bom-sample", "opera": "radar-opera-sample"}
# Chronological test share per archive: each test block must hold one 17-frame window at least
# (MeteoSwiss and FMI 40 frames, KNMI 92, BoM 144 at 10 min, OPERA 24 at 15 min: test only).
TEST_FRACTION = {"mch": 0.45, "fmi": 0.45, "knmi": 0.3, "bom": 0.3, "opera": 0.75}
IN_LEN, OUT_LEN, SIZE = 5, 12, 128
REPORTED = ("rainfall_mse", "correlation", "csi_ge_0.5", "csi_ge_2", "csi_ge_5", "csi_ge_10", "hss_ge_0.5",
            "hss_ge_2", "hss_ge_5", "hss_ge_10", "fss_ge_1_s1", "fss_ge_1_s5", "fss_ge_1_s15")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "tests" / "data",
                        help="folder holding the archives' radar-*-sample folders, e.g. /work/shared/data (default: "
                             "tests/data, whose trimmed samples are too short for the protocol's 17-frame windows)")
    parser.add_argument("--archives", default=",".join(ARCHIVES), help="comma-separated, of " + ", ".join(ARCHIVES))
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "convlstm-skill",
                        help="prepared datasets (reused), checkpoints and the MLflow store")
    parser.add_argument("--out", type=Path, default=Path("skill-results"), help="skill.json and plots go here")
    parser.add_argument("--config", default="radar-skill", help="training config (packaged name or path)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--checkpoint", help="score this checkpoint (a jobs.registry.modelio reference) instead of "
                                             "training; --training-note says how it was trained")
    parser.add_argument("--baselines", default=None,
                        help="comma-separated baselines, 'none' for none (default: persistence, optical-flow and "
                             "pysteps where installed)")
    parser.add_argument("--training-note", default="", help="recorded with --checkpoint, e.g. its CPU time")
    args = parser.parse_args(argv)
    unknown = [a for a in args.archives.split(",") if a not in ARCHIVES]
    if unknown:
        parser.error(f"--archives: unknown {unknown} (have {', '.join(ARCHIVES)})")
    missing = [ARCHIVES[a] for a in args.archives.split(",") if not (args.data_dir / ARCHIVES[a]).is_dir()]
    if missing:
        parser.error(f"--data-dir {args.data_dir}: no {', '.join(missing)} folder there (give the folder of the "
                     f"radar archives, e.g. --data-dir /work/shared/data)")
    return args


def prepare(archives: list[str], data: Path, work: Path) -> dict[str, Path]:
    """`prepare radar` of each archive by the protocol (skipped where the dataset is already there, under a
    name that holds a hash of `data`: the trimmed and the full samples never share a prepared dataset)."""
    import hashlib

    from pipelines.radar.prepare import RadarOptions, prepare_radar
    from pipelines.driver import Publish

    out, source = {}, hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:8]
    for name in archives:
        path = work / "data" / f"{name}-{SIZE}-{IN_LEN}-{OUT_LEN}-{source}"
        if not (path / "manifest.json").exists():
            options = RadarOptions(in_len=IN_LEN, out_len=OUT_LEN, stride=1, size=(SIZE, SIZE), split="time",
                                   val_fraction=0.0, test_fraction=TEST_FRACTION[name])
            prepare_radar(data / ARCHIVES[name], str(path), "auto", options, publish=Publish(progress=False))
        out[name] = path
    return out


def training_datasets(paths: dict[str, Path]) -> list[str]:
    """The archives with training windows at the most common time step (a pooled run needs one step)."""
    from collections import Counter

    from pipelines.manifest import load_manifest

    manifests = {name: load_manifest(str(path)) for name, path in paths.items()}
    usable = {n: m for n, m in manifests.items() if m["splits"].get("train", {}).get("count")}
    step = Counter(m["time_step_s"] for m in usable.values()).most_common(1)[0][0]
    return [n for n, m in usable.items() if m["time_step_s"] == step]


def score(model, cfg, paths: dict[str, Path], baselines: tuple[str, ...]) -> dict[str, dict]:
    """`convlstm evaluate`'s scores of the model and baselines on each archive's test windows and pooled
    over all of them: {archive | "pooled": {task, protocol, primary_metric, data, methods}}. Windows are
    scored once into per-window states (`jobs.evaluation.window_scores`), summed per archive and over all."""
    from jobs.evaluation.window_scores import WindowScorer, window_states
    from jobs.tasks import get_task
    from pipelines.manifest import load_manifest

    results, everything, scorer = {}, [], None
    for name, path in paths.items():
        manifest = load_manifest(str(path))
        if not manifest["splits"].get("test", {}).get("count"):
            continue
        task = get_task(cfg, manifest)
        scorer = WindowScorer(task, model, baselines)
        keyed = window_states(scorer, str(path), "test")
        everything += keyed
        results[name] = summaries(scorer, keyed, task.protocol(manifest, "test", task.in_len, task.out_len), [name])
    results["pooled"] = summaries(scorer, everything, results[next(iter(results))]["protocol"], list(results))
    return results


def summaries(scorer, keyed: list, protocol: dict, archives: list[str]) -> dict:
    """A `score_model`-shaped result of the summed per-window states (what the lead-time plots read)."""
    from jobs.evaluation.window_scores import merge_states

    methods = {name: scorer.task.summarize(acc) for name, acc in merge_states(scorer, keyed).items()}
    primary = scorer.task.primary_metric
    data = {"path": ",".join(archives), "manifest": "", "fingerprint": "", "split": "test", "windows": len(keyed)}
    return {"task": "radar", "protocol": protocol, "data": {**data, "archives": archives},
            "primary_metric": {"name": primary, "higher_is_better": scorer.task.higher_is_better,
                               "value": methods["model"]["summary"][primary]},
            "methods": methods}


def process_tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from jobs.evaluation import report
    from jobs.evaluation.result import EvaluationResult
    from jobs.jsonable import to_jsonable
    from jobs.registry.modelio import load_model
    from jobs.training.config import from_dict, load_config
    from jobs.training.driver import Compute, RunOptions, train
    from convlstm.baselines import pysteps_available

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args.out.mkdir(parents=True, exist_ok=True)
    archives = args.archives.split(",")
    started = time.perf_counter()
    paths = prepare(archives, args.data_dir, args.work)
    prepare_s = time.perf_counter() - started
    trained_on = training_datasets(paths)
    cfg = load_config(args.config, "radar", args.set)
    print(f"prepared {', '.join(archives)} in {prepare_s:.0f} s; training on {', '.join(trained_on)}", flush=True)

    if args.checkpoint:
        model, info = load_model(args.checkpoint)
        cfg = from_dict(info["config"])
        training = {"checkpoint": args.checkpoint, "epoch": info.get("epoch"), "note": args.training_note}
    else:
        cpu, wall = process_tree_cpu_s(), time.perf_counter()
        summary = train(cfg, [str(paths[n]) for n in trained_on], compute=Compute(workers=0),
                        run=RunOptions(tracking_uri=f"sqlite:///{args.work / 'mlflow.db'}",
                                       storage_path=str(args.work / "train")))
        training = {"cpu_s": process_tree_cpu_s() - cpu, "wall_s": time.perf_counter() - wall, **summary.to_dict(),
                    "load_average_after": list(os.getloadavg())}
        print(f"trained {summary.epochs} epochs ({summary.steps} steps) in {training['cpu_s']:.0f} CPU s "
              f"({training['wall_s']:.0f} wall s); best {summary.monitor} {summary.best_score:.4g} at epoch "
              f"{summary.best_epoch}", flush=True)
        model, info = load_model(summary.best_checkpoint)
    baselines = ("persistence", "optical-flow") + (("pysteps-extrapolation",) if pysteps_available() else ())
    if args.baselines is not None:
        baselines = tuple(b for b in args.baselines.split(",") if b and b != "none")
    started = time.perf_counter()
    results = to_jsonable(score(model, cfg, paths, baselines))
    for name, result in results.items():
        report.plot_lead_times(EvaluationResult.parse(result, name), args.out / name)
    print(f"scored {results['pooled']['data']['windows']} test windows in {time.perf_counter() - started:.0f} s",
          flush=True)

    out = {"protocol": {"in_len": IN_LEN, "out_len": OUT_LEN, "size": SIZE, "stride": 1, "split": "time",
                        "test_fraction": TEST_FRACTION},
           "config": cfg.to_dict(), "trained_on": trained_on, "baselines": list(baselines),
           "parameters": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
           "prepare_s": prepare_s, "training": training, "load_average_end": list(os.getloadavg()),
           "results": {name: {"windows": r["data"]["windows"],
                              "summary": {m: {k: s["summary"].get(k) for k in REPORTED} for m,
                                          s in r["methods"].items()},
                              "per_lead": {m: {k: s["per_lead"].get(k) for k in REPORTED} for m,
                                           s in r["methods"].items()}}
                       for name, r in results.items()}}
    (args.out / "skill.json").write_text(json.dumps(to_jsonable(out), indent=1))
    print(f"{'':<8} {'method':<14} {'windows':>7} {'MSE':>8} {'CSI@0.5':>8} {'CSI@2':>7} {'FSS@1/s5':>8} {'corr':>6}")
    for name, r in out["results"].items():
        for method, s in r["summary"].items():
            print(f"{name:<8} {method:<14} {r['windows']:>7} " + " ".join(
                f"{s[k]:>{w}.4g}" if s[k] is not None else f"{'-':>{w}}"
                for k, w in (("rainfall_mse", 8), ("csi_ge_0.5", 8), ("csi_ge_2", 7), ("fss_ge_1_s5", 8),
                             ("correlation", 6))))
    print(f"wrote {args.out / 'skill.json'}")
    return out


if __name__ == "__main__":
    main()
