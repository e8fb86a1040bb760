"""Watching a run from outside: rank 0's line per epoch on stdout (job logs), and each rank's
`rank<N>.json` progress file (pid, epoch, step, validation windows) when `progress_dir` is given."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jobs.training.config import Config


def epoch_line(epoch: int, cfg: Config, metrics: dict[str, Any], elapsed: float) -> None:
    """Rank 0's line per epoch for job logs (`convlstm submit --wait`, `ray job logs`)."""
    left = (cfg.train.epochs - epoch) * elapsed
    print(f"epoch {epoch}/{cfg.train.epochs}  train_loss {metrics['train_loss_epoch']:.5g}  "
          f"{cfg.train.monitor} {metrics[cfg.train.monitor]:.5g}  {metrics['samples_per_s']:.1f} samples/s  "
          f"~{left / 60:.1f} min left", flush=True)


def write_progress(folder: str | None, rank: int, **fields: Any) -> None:
    """`<folder>/rank<N>.json` with this worker's pid and `fields` (epoch 0-based in progress, step,
    validation windows read), for watching (and fault-injecting) a run from outside; off unless
    `progress_dir` is given. Fields of earlier writes are kept."""
    if not folder:
        return
    path = Path(folder) / f"rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.is_file() else {}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**current, "pid": os.getpid(), **fields}))
    tmp.replace(path)
