"""Where the training loop runs: the thin adapter between `jobs.training.loop.train_loop` and its host.

`RaySession` wires the loop into Ray Train (dataset shards, DDP, `ray.train.report` with a
checkpoint, restored checkpoints after a worker failure). `LocalSession` runs the same loop in one
process without Ray: shards read with pyarrow, checkpoints written to `<storage>/<run>/epoch_NNNN`
and pruned to the top-k by the monitored metric plus the latest. Both yield batches as dicts of
uint8/int64 tensors already on the session's device; scaling to [0, 1] is the task's job. With
several datasets, training reads their windows together and validation one dataset at a time
(`val_batches(index)`, in the spec's dataset order).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from jobs import checkpoints
from pipelines.shards import concatenate
from pipelines.shards import read_windows


def val_dataset_key(index: int, rank: int) -> str:
    """The Ray Train dataset holding the validation windows of dataset `index` that rank `rank` scores."""
    return f"val_{index}_{rank}"


class LocalSession:
    """Single process, no Ray, on the GPU when the spec asks for one. Batches of the config's sizes;
    `data.shuffle_buffer > 0` permutes the training windows every epoch (seeded by `train.seed` + epoch)."""

    world_rank = 0
    world_size = 1

    def __init__(self, spec):  # jobs.training.loop.WorkerSpec

        cfg = spec.config
        if spec.use_gpu and not torch.cuda.is_available():
            raise ValueError("--gpu: no CUDA device is visible to this process")
        self.device = torch.device("cuda" if spec.use_gpu else "cpu")
        columns, uris = list(spec.columns), [data.uri for data in spec.datasets]
        # lazy: a runs-layout split is held as its frames, windows cut per batch (memory ~ frames, not windows)
        self._train = _concatenated([_limited(read_windows(uri, cfg.data.train_split, columns, lazy=True),
                                              cfg.data.limit_train) for uri in uris])
        self._val = [_limited(read_windows(uri, cfg.data.val_split, columns), cfg.data.limit_val) for uri in uris]
        self._batch, self._val_batch = cfg.data.batch_size, cfg.data.val_batch_size or cfg.data.batch_size
        self._run_dir = Path(checkpoints.run_dir(spec.storage_path, spec.run_name))
        self._keep, self._monitor, self._mode = cfg.train.keep_checkpoints, cfg.train.monitor, cfg.train.mode
        self._shuffle, self._seed = cfg.data.shuffle_buffer > 0, cfg.train.seed
        self._resume_from = spec.resume_from

    def restore(self) -> dict[str, Any] | None:
        return checkpoints.load(self._resume_from) if self._resume_from else None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        rows = len(next(iter(self._train.values())))
        order = np.random.default_rng(self._seed + epoch).permutation(rows) if self._shuffle else np.arange(rows)
        for start in range(0, rows, self._batch):
            yield self._to_device(self._train, order[start:start + self._batch])

    def val_batches(self, index: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        val = self._val[index]
        rows = len(next(iter(val.values())))
        for start in range(0, rows, self._val_batch):
            yield self._to_device(val, np.arange(start, min(start + self._val_batch, rows)))

    def _to_device(self, columns: dict[str, np.ndarray], index: np.ndarray) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v[index])).to(self.device) for k, v in columns.items()}

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, epoch: int) -> None:
        if state is None:
            return
        checkpoints.save(state, metrics, self._run_dir / checkpoints.epoch_dir_name(epoch))
        self._prune(latest=epoch)

    def _prune(self, latest: int) -> None:
        """Keep the `keep` best checkpoints by the monitor (NaN last, earlier first among equals)
        and always the latest, as Ray Train's CheckpointConfig does."""
        folders = [self._run_dir / checkpoints.epoch_dir_name(e)
                   for e in checkpoints.list_epochs(str(self._run_dir.parent), self._run_dir.name)]
        metrics = [json.loads((f / checkpoints.METRICS_FILE).read_text()) for f in folders]
        ranked = sorted(range(len(folders)), key=lambda i: (checkpoints.rank(metrics[i], self._monitor, self._mode), i))
        for i in ranked[self._keep:]:
            if folders[i].name != checkpoints.epoch_dir_name(latest):
                shutil.rmtree(folders[i])


def _limited(columns: dict[str, np.ndarray], limit: int | None) -> dict[str, np.ndarray]:
    return columns if limit is None else {k: v[:limit] for k, v in columns.items()}


def _concatenated(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The windows of several datasets, one after the other."""
    return parts[0] if len(parts) == 1 else {k: concatenate([part[k] for part in parts]) for k in parts[0]}


class RaySession:
    """Inside a Ray Train worker: `train` is split across workers (equal row counts, so every rank
    runs the same number of steps); the driver splits each dataset's validation windows into disjoint
    parts, one per rank (`val_dataset_key`: every window once, none dropped), so each window is read
    once per epoch and the SUM-merged scores equal a single-process evaluation."""

    def __init__(self, batch_size: int, val_batch_size: int, shuffle_buffer: int, resume_from: str | None):
        import ray.train  # deferred: Ray ~2-10 s to import; the module's other users skip it
        import ray.train.torch  # deferred: Ray ~2-10 s to import; the module's other users skip it

        ctx = ray.train.get_context()
        self.world_rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._batch, self._val_batch = batch_size, val_batch_size
        self._shuffle = shuffle_buffer or None
        self._resume_from = resume_from

    def restore(self) -> dict[str, Any] | None:
        """The checkpoint Ray Train restored (worker-group restart, rerun with the same name), else
        the driver's `resume_from`, else None."""
        import ray.train  # deferred: Ray ~2-10 s to import; the module's other users skip it

        restored = ray.train.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as folder:
                return checkpoints.load(folder)
        return checkpoints.load(self._resume_from) if self._resume_from else None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch  # deferred: Ray ~2-10 s to import; the module's other users skip it

        return ray.train.torch.prepare_model(model)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        import ray.train  # deferred: Ray ~2-10 s to import; the module's other users skip it

        shard = ray.train.get_dataset_shard("train")
        yield from shard.iter_torch_batches(batch_size=self._batch, device=self.device,
                                            local_shuffle_buffer_size=self._shuffle,
                                            local_shuffle_seed=epoch if self._shuffle else None)

    def val_batches(self, index: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        import ray.train  # deferred: Ray ~2-10 s to import; the module's other users skip it

        shard = ray.train.get_dataset_shard(val_dataset_key(index, self.world_rank))
        yield from shard.iter_torch_batches(batch_size=self._val_batch, device=self.device)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, epoch: int) -> None:
        """Every rank calls this once per epoch (it is a barrier); only rank 0 passes a state."""
        import ray.train  # deferred: Ray ~2-10 s to import; the module's other users skip it

        if state is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            checkpoints.save(state, metrics, Path(folder))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=checkpoints.epoch_dir_name(epoch))
