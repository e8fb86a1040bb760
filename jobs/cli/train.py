"""`convlstm train`: train a ConvLSTM on prepared shards with Ray Train; track and register it in MLflow."""
from __future__ import annotations

import argparse
import json
import os

from jobs.cli import options
from jobs.training.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train on prepared shards (Ray Train DDP), log to MLflow, register the best model",
        description="Train a ConvLSTM on the shards written by `convlstm prepare`. The config (YAML, "
                    "validated) can be overridden with key.sub=value arguments, e.g. optim.lr=1e-3 "
                    "train.epochs=5. Rerunning with the same --run-name resumes its latest checkpoint "
                    "in the same MLflow run. Several datasets (--data A,B) are pooled: their windows must "
                    "have the same shape and meaning (e.g. MeteoSwiss and KNMI archives prepared with the same "
                    "--size, --in-len and --out-len); training reads them all, validation is scored per "
                    "dataset (val_<name>_<metric>) and pooled (val_<metric>, what train.monitor ranks). "
                    "Radar: model.params.motion=advection makes the encoder-forecaster motion-aware (it "
                    "corrects the optical-flow baseline's advection of the last frame and starts equal to "
                    "it); --config radar-skill is that recipe for the pooled archives (docs/models.md).")
    options.task(p)
    p.add_argument("--data", help="dataset folder or URI (with manifest.json), or several comma-separated "
                                  "(A,B,...) to train on their pooled windows (default: the config's data.paths)")
    p.add_argument("--config", help="YAML file or packaged config name (default: the task's, e.g. kth; "
                                    "kth-tiny for a one-minute run)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-3")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (0: one process, no Ray)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: fits the cluster, "
                                                         "leaving a CPU for Ray Data)")
    options.ray_address(p)
    options.tracking_uri(p)
    p.add_argument("--experiment", help="MLflow experiment (default: convlstm-<task>)")
    p.add_argument("--run-name", help="run name: MLflow run and checkpoint folder (default: <task>-<time>)")
    p.add_argument("--storage", help="checkpoint storage folder or s3:// URI (default: <CONVLSTM_STORAGE>/train, "
                                     "else <home>/outputs/train; on a multi-node cluster a URI or a shared mount)")
    options.storage_root(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run's latest checkpoint (without --run-name: the newest run of the task)")
    options.json_output(p, "the summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.task, args.overrides)
    options.apply_storage_root(args)
    # after the config check: bad configs fail without loading torch
    # deferred: jobs.training.driver loads torch ~5 s; the module's other users skip it
    from jobs.training.driver import Compute, RunOptions, train

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    summary = train(cfg, args.data,
                    compute=Compute(workers=args.workers, use_gpu=args.gpu, address=args.address,
                                    cpus_per_worker=args.cpus_per_worker),
                    run=RunOptions(tracking_uri=args.tracking_uri, experiment=args.experiment, run_name=args.run_name,
                                   resume=args.resume, storage_path=args.storage))
    if args.json:
        print(json.dumps(summary.to_dict()))
        return 0
    registered = (f"{summary.registered_name} version {summary.model_version} (@{summary.alias})"
                  if summary.registered_name else "not registered")
    print(f"run        {summary.run_name} ({summary.run_id}), {summary.status} after "
          f"{summary.epochs} epochs / {summary.steps} steps")
    print(f"best       {summary.monitor} = {summary.best_score:.6g} at epoch {summary.best_epoch}")
    print(f"model      {registered}: {summary.model_uri}")
    print(f"checkpoint {summary.best_checkpoint}")
    return 0
