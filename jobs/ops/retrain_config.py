"""What a retraining step is told: the retrain YAML (`RetrainConfig`, validated, one-line errors naming
the key) and how the step runs (`RetrainOptions`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, field_validator

from jobs.ops.promotion import TestName
from jobs.training.config import Section, read_yaml, validate


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
    MLflow `tracking_uri`, the Ray `address`, the report folder `out` (default: see
    `jobs.ops.retrain_report.report_target`), `dry_run` (say what would be done, do nothing) and `log`
    (one progress line per call)."""

    fmt: str | None = None
    tracking_uri: str | None = None
    address: str | None = None
    out: str | None = None
    dry_run: bool = False
    log: Callable[[str], None] = print
