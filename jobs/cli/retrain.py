"""`convlstm retrain`: one scheduled retraining step with champion/challenger promotion."""
from __future__ import annotations

import argparse
import json
import os

from jobs.cli import options
from jobs.errors import EXIT_TEMPFAIL, CommandError, LockHeld, LockLost
from jobs.ops.retrain import retrain
from jobs.ops.retrain_config import RetrainOptions, load_retrain_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain", help="scheduled step: new data -> new dataset version -> challenger -> promote if significantly better",
        description="Find inputs under --src that the dataset at --data has not seen (new videos, new radar "
                    "frames; none, or none that add windows: print 'nothing to do', exit 0, no training, no "
                    "report); extend the shards incrementally as a new dataset version (<data>.versions/); "
                    "train a challenger (alias challenger); score champion and challenger window by window "
                    "on the same held-out split; move @champion only if a paired test says the challenger "
                    "is better (and better than each --must-beat baseline); record the decision in "
                    "`convlstm models history`. Exit codes: 0 done, 75 another retrain holds the lock (retry at the next tick), "
                    "2 bad arguments, 1 failure.")
    options.task(p)
    p.add_argument("--src", required=True, help="raw inputs: KTH video folder, radar folder/archive, MNIST IDX file")
    p.add_argument("--data", required=True, help="the published dataset to extend (folder or s3:// URI)")
    p.add_argument("--config", help="retrain YAML (train_config, train_overrides, workers, init, metric, test, "
                                    "confidence, min_windows, margin, must_beat, split, keep_versions, prepare, "
                                    "lock_ttl_s); default: built-in defaults")
    p.add_argument("--format", dest="fmt", help="radar input format (default: the dataset's)")
    p.add_argument("--metric", help="metric to compare on (default: the task's primary metric)")
    p.add_argument("--margin", type=float, help="mean per-window improvement the challenger needs (default 0)")
    p.add_argument("--test", choices=("bootstrap", "sign"), help="paired test over the windows (default bootstrap)")
    p.add_argument("--confidence", type=float, help="confidence the paired test needs (default 0.95)")
    p.add_argument("--min-windows", type=int, help="fewest scored windows a promotion needs (default 10)")
    p.add_argument("--must-beat", metavar="BASELINES",
                   help="comma-separated baselines the challenger must also beat on the split, e.g. optical-flow,persistence")
    p.add_argument("--keep-versions", type=int,
                   help="dataset versions to keep in <data>.versions (default: all; the champion's are kept)")
    p.add_argument("--gpu", dest="use_gpu", action="store_const", const=True,
                   help="train the challenger with one GPU per Ray Train worker (config: use_gpu)")
    p.add_argument("--storage", help="checkpoint root, a URI every node reads on a cluster (config: storage; "
                                     "default: <CONVLSTM_STORAGE>/train, else <home>/outputs/train)")
    options.storage_root(p)
    init = p.add_mutually_exclusive_group()
    init.add_argument("--warm-start", dest="init", action="store_const", const="warm-start",
                      help="start the challenger from the champion's weights")
    init.add_argument("--from-scratch", dest="init", action="store_const", const="from-scratch",
                      help="train the challenger from a fresh initialisation")
    p.add_argument("--out", help="folder or s3:// URI for retrain-report.json (default: "
                                 "<CONVLSTM_STORAGE>/retrain/<model>/<time>, else <home>/outputs/retrain/<model>/<time>)")
    options.tracking_uri(p)
    options.ray_address(p)
    p.add_argument("--dry-run", action="store_true", help="only report the new sources; change nothing")
    options.json_output(p, "the report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    options.apply_storage_root(args)
    must_beat = [b.strip() for b in args.must_beat.split(",") if b.strip()] if args.must_beat else None
    config = load_retrain_config(args.config, metric=args.metric, margin=args.margin, init=args.init,
                                 use_gpu=args.use_gpu, storage=args.storage, test=args.test,
                                 confidence=args.confidence, min_windows=args.min_windows, must_beat=must_beat,
                                 keep_versions=args.keep_versions)
    try:
        step = RetrainOptions(fmt=args.fmt, tracking_uri=args.tracking_uri, address=args.address, out=args.out,
                              dry_run=args.dry_run, log=(lambda _: None) if args.json else print)
        report = retrain(args.task, args.src, args.data, config, step)
    except LockHeld as exc:
        raise CommandError(f"another retrain is running: {exc}; not starting (retry later)", EXIT_TEMPFAIL) from None
    except LockLost as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"status     {report['status']}")
    print(f"new        {len(report['new_sources'])} source(s)")
    for role in ("champion", "challenger"):
        if role in report:
            value = report[role].get("score")
            score = f" {report['metric']} = {value:.6g}" if value is not None else ""
            print(f"{role:10s} {report['registered_model']} v{report[role]['version']}{score}")
    if "decision" in report:
        print(f"decision   {report['decision']['reason']}")
    return 0
