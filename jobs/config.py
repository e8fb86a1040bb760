"""Training configuration: YAML validated into dataclasses, with `key.sub=value` overrides.

A config file holds a `task` and the sections below; every key is checked against the dataclass
fields (unknown keys and ill-typed or out-of-range values raise ValueError naming the dotted key)
before any cluster work starts. `Config.to_dict()` is the resolved config that gets logged.
Packaged configs live in `jobs/configs/<name>.yaml`; `load_config("kth-tiny", ...)` finds them.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

TASKS = ("kth", "radar", "mnist")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def bounds(gt: float | None = None, ge: float | None = None, le: float | None = None) -> dict:
    """Field metadata: the value must be > gt, >= ge and <= le (None = no bound); checked on load."""
    return {"gt": gt, "ge": ge, "le": le}


@dataclass
class ModelConfig:
    """`convlstm.factory.build_model(name, **params)`; params are checked by building the model."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """Training loss (`convlstm.losses`). KTH: `cross_entropy` over classes. Forecasting: `bce`
    (per-pixel binary cross-entropy on logits: the model needs `output_activation: null`), or
    `mse`, `mae`, `balanced_mse`, `balanced_mae` (HKO-7 weights) on [0, 1] outputs."""

    name: Literal["cross_entropy", "bce", "mse", "mae", "balanced_mse", "balanced_mae"]


@dataclass
class OptimConfig:
    """Optimizer. `alpha` is RMSProp's decay (smoothing constant); `betas` are Adam's."""

    name: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    weight_decay: float = field(default=0.0, metadata=bounds(ge=0))
    alpha: float = field(default=0.99, metadata=bounds(gt=0, le=1))
    momentum: float = field(default=0.0, metadata=bounds(ge=0))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=bounds(gt=0))


@dataclass
class ScheduleConfig:
    """Learning-rate multiplier per optimizer step: constant, or linear warm-up over `warmup_steps`
    then `num_cycles` cosine waves to the last step (HF get_cosine_schedule_with_warmup)."""

    name: Literal["constant", "cosine_warmup"] = "constant"
    warmup_steps: int = field(default=0, metadata=bounds(ge=0))
    num_cycles: float = field(default=0.5, metadata=bounds(gt=0))


@dataclass
class DataConfig:
    """Batching of the shards. `batch_size` is global (split evenly over workers); `limit_*` cap
    the windows read per split (None = all); `hflip` randomly mirrors training clips (p = 0.5).
    `shuffle_buffer` > 0 shuffles the training windows each epoch (Ray Data's local shuffle buffer
    of that many rows; a full permutation without Ray). Forecasting: the first `in_len` frames of a window are the input, the rest the target
    (None = the manifest's `in_len`, else half the window)."""

    batch_size: int = field(default=32, metadata=bounds(ge=1))
    val_batch_size: int | None = field(default=None, metadata=bounds(ge=1))
    hflip: bool = False
    shuffle_buffer: int = field(default=0, metadata=bounds(ge=0))
    train_split: str = "train"
    val_split: str = "val"
    limit_train: int | None = field(default=None, metadata=bounds(ge=1))
    limit_val: int | None = field(default=None, metadata=bounds(ge=1))
    in_len: int | None = field(default=None, metadata=bounds(ge=1))
    materialize_mb: float = field(default=256.0, metadata=bounds(ge=0))


@dataclass
class TrainConfig:
    """Loop settings. `monitor` is a validation metric (e.g. `val_accuracy`), best by `mode`;
    `patience` epochs without improvement stop early (None = never); `grad_clip` is the max
    global gradient norm (None = off); `keep_checkpoints` top-k by `monitor` (the latest is
    always kept); `max_failures` worker-group restarts from the last checkpoint."""

    epochs: int = field(default=1, metadata=bounds(ge=1))
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int | None = field(default=None, metadata=bounds(ge=1))
    grad_clip: float | None = field(default=None, metadata=bounds(gt=0))
    keep_checkpoints: int = field(default=2, metadata=bounds(ge=1))
    max_failures: int = field(default=0, metadata=bounds(ge=-1))
    seed: int = 0
    log_every_steps: int = field(default=10, metadata=bounds(ge=1))
    bf16: bool = True


@dataclass
class RegistryConfig:
    """Model Registry: register the best checkpoint under `name` (default `convlstm-<task>`)."""

    register: bool = True
    name: str | None = None


@dataclass
class Config:
    task: Literal["kth", "radar", "mnist"]
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def registered_model_name(self) -> str:
        return self.registry.name or f"convlstm-{self.task}"


def config_path(name_or_path: str | Path) -> Path:
    """A YAML path as given, or the packaged `jobs/configs/<name>.yaml` for a bare name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    packaged = CONFIG_DIR / f"{name_or_path}.yaml"
    if not packaged.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no packaged config {name_or_path!r} (have: {', '.join(names)})")
    return packaged


def load_config(config: str | Path | None, task: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read `config` (path or packaged name; None = the task's packaged config), apply
    `key.sub=value` overrides (values parsed as YAML) and validate. ValueError names the key."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    path = config_path(config if config is not None else task)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"config {path}: top level must be a mapping")
    raw.setdefault("task", task)
    if raw["task"] != task:
        raise ValueError(f"task: config {path.name} is for {raw['task']!r}, not {task!r}")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return from_dict(raw)


def parse_override(item: str) -> tuple[str, Any]:
    """`"optim.lr=1e-3"` -> `("optim.lr", "1e-3" parsed as YAML)`."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} must look like key.sub=value")
    return key.strip(), yaml.safe_load(text) if text.strip() else None


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(parents[:i + 1])}: is not a section, cannot set {key}")
        node = child
    node[leaf] = value


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from plain data (a parsed YAML, or `Config.to_dict()`)."""
    return build_dataclass(Config, raw, "")


def build_dataclass(cls: type, raw: Any, prefix: str):
    """`cls` from a mapping, recursively, with typed values and bounds; ValueError names `prefix.key`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{key}: required")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build_dataclass(hint, raw[name], f"{key}.")
        else:
            values[name] = _coerce(raw[name], hint, key)
            _check_range(values[name], f.metadata, key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key}: must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        return _to_float(value, key)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"{key}: expected a non-empty string, got {value!r}")
        return value
    return value


def _to_float(value: Any, key: str) -> float:
    # PyYAML reads `3e-3` (no dot) as a string; accept it as the number it means.
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    return number


def _check_range(value: Any, meta: Any, key: str) -> None:
    if value is None or not meta:
        return
    if meta.get("gt") is not None and not value > meta["gt"]:
        raise ValueError(f"{key}: must be > {meta['gt']}, got {value!r}")
    if meta.get("ge") is not None and not value >= meta["ge"]:
        raise ValueError(f"{key}: must be >= {meta['ge']}, got {value!r}")
    if meta.get("le") is not None and not value <= meta["le"]:
        raise ValueError(f"{key}: must be <= {meta['le']}, got {value!r}")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> `{"optim.lr": 0.003, ...}` (lists stay values), for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
