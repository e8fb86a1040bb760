"""`convlstm retrain`: one scheduled retraining step with champion/challenger promotion."""
from __future__ import annotations

import argparse
import json
import os

from jobs.cli import options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain", help="scheduled step: new data -> incremental shards -> challenger -> promote if better",
        description="Detect sources under --src that the dataset at --data lacks (none: print 'nothing to "
                    "do', exit 0, no MLflow run); extend the shards incrementally; train a challenger "
                    "(alias challenger); score champion and challenger on the same held-out split of the "
                    "new dataset; move the champion alias only if the challenger wins by the margin. "
                    "Exit codes: 0 done, 75 another retrain holds the lock (retry at the next tick), "
                    "2 bad arguments, 1 failure.")
    options.task(p)
    p.add_argument("--src", required=True, help="raw inputs: KTH video folder, radar folder/archive, MNIST IDX file")
    p.add_argument("--data", required=True, help="the published dataset to extend (folder or s3:// URI)")
    p.add_argument("--config", help="retrain YAML (train_config, train_overrides, workers, init, metric, "
                                    "margin, split, prepare, lock_ttl_s); default: built-in defaults")
    p.add_argument("--format", dest="fmt", help="radar input format (default: the dataset's)")
    p.add_argument("--metric", help="metric to compare on (default: the task's primary metric)")
    p.add_argument("--margin", type=float, help="absolute improvement the challenger needs (default 0)")
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
    from jobs.errors import EXIT_TEMPFAIL, CommandError, LockHeld, LockLost
    from jobs.ops.retrain import load_retrain_config, retrain

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    options.apply_storage_root(args)
    config = load_retrain_config(args.config, metric=args.metric, margin=args.margin, init=args.init,
                                   use_gpu=args.use_gpu, storage=args.storage)
    try:
        report = retrain(args.task, args.src, args.data, config, fmt=args.fmt, tracking_uri=args.tracking_uri,
                         address=args.address, out=args.out, dry_run=args.dry_run,
                         log=(lambda _: None) if args.json else print)
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
            score = f" {report['metric']} = {report[role]['score']:.6g}" if "score" in report[role] else ""
            print(f"{role:10s} {report['registered_model']} v{report[role]['version']}{score}")
    if "decision" in report:
        print(f"decision   {report['decision']['reason']}")
    return 0
