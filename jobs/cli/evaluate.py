"""`convlstm evaluate`: score a model and the persistence/optical-flow baselines on one split of a dataset."""
from __future__ import annotations

import argparse
import json

from jobs.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model and the baselines on a split; write evaluation.json/.md and plots",
        description="Score a model (models:/NAME@ALIAS, an MLflow run id or a model path) and the no-training "
                    "baselines on the same windows of one split: radar in mm/h (rainfall MSE/MAE, CSI/FAR/POD/HSS "
                    "at 0.5, 2, 5, 10, 30 mm/h, correlation, skill vs persistence), Moving MNIST per frame "
                    "(cross-entropy, MSE, MAE, SSIM, PSNR), KTH accuracy and confusion matrix. Large splits are "
                    "scored with Ray Data; the numbers equal a single-process run. MLflow: --log-to-run RUN_ID "
                    "logs the outputs into that run, --log into the run that produced the model.")
    p.add_argument("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, a run id or a path (default: none, "
                                   "the baselines alone: how good is extrapolation on this archive?)")
    p.add_argument("--data", required=True, help="dataset folder or URI (with manifest.json); one at a time, "
                                                 "also for a model trained on several")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--baselines", default="persistence,optical-flow",
                   help="comma-separated baselines, or 'none': persistence, optical-flow, and with "
                        "pip install 'convlstm-pipeline[pysteps]' pySTEPS' nowcasts pysteps-extrapolation, "
                        "pysteps-sprog (default: persistence,optical-flow)")
    p.add_argument("--out", help="output folder or s3:// URI (default: <CONVLSTM_STORAGE>/evaluations/<time>, "
                                 "else <home>/outputs/evaluations/<time>)")
    options.storage_root(p)
    p.add_argument("--batch-size", type=int, default=8, help="windows per inference batch (default: 8)")
    p.add_argument("--distributed-min-windows", type=int, default=512,
                   help="score with Ray Data from this many windows on; 0 always (default: 512)")
    options.ray_address(p)
    options.tracking_uri(p)
    p.add_argument("--log-to-run", metavar="RUN_ID", help="log metrics and outputs into this MLflow run")
    p.add_argument("--log", action="store_true", help="log metrics and outputs into the model's own run")
    options.device(p)
    p.add_argument("--allow-data-mismatch", action="store_true",
                   help="score data whose grid, format or time step differ from the model's training data "
                        "(refused by default)")
    options.json_output(p, "the result")
    p.set_defaults(func=run)


def parse_baselines(text: str) -> tuple[str, ...]:
    """'persistence,optical-flow' -> ('persistence', 'optical-flow'); 'none' or '' -> ()."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    return () if names == ("none",) else names


def run(args: argparse.Namespace) -> int:
    # deferred: jobs.evaluation.evaluate loads OpenCV ~4 s, torch ~5 s; the module's other users skip it
    from jobs.evaluation.evaluate import LogTo, Scoring, evaluate

    options.apply_storage_root(args)
    scoring = Scoring(batch_size=args.batch_size, distributed_min_windows=args.distributed_min_windows,
                      address=args.address, device=args.device, allow_mismatch=args.allow_data_mismatch)
    result = evaluate(args.model, args.data, args.split, parse_baselines(args.baselines), args.out, scoring=scoring,
                      log=LogTo(tracking_uri=args.tracking_uri, run=args.log_to_run, own_run=args.log))
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    primary = result.primary_metric.name
    print(f"evaluated  {args.model or 'baselines'} on {result.data.split} ({result.data.windows} windows"
          f"{', Ray Data' if result.distributed else ''})")
    for method, scores in result.methods.items():
        value = scores.summary.get(primary)
        print(f"{method:18s} {primary} = {'n/a' if value is None else f'{value:.6g}'}")
    for item in result.skipped:
        print(f"skipped    {item.method}: {item.reason}")
    print(f"outputs    {result.out}")
    return 0
