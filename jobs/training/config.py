"""Training configuration as validated data: pydantic v2 models read from YAML, `key.sub=value` overrides.

A config file holds a `task` and the sections below; every key is checked (unknown keys, ill-typed or
out-of-range values raise ValueError naming the dotted key, e.g. `optim.lr: must be > 0, got -1`)
before any cluster work starts. Models are frozen; `Config.to_dict()` is the resolved config that
gets logged. Packaged configs live in `jobs/configs/<name>.yaml`; `load_config("kth-tiny", ...)`
finds them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from jobs.tasks.plugins import check_name

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
Name = Annotated[str, Field(min_length=1)]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are validated (floats finite) and the result is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class ModelConfig(Section):
    """`convlstm.factory.build_model(name, **params)`; params are checked by building the model."""

    name: Name
    params: dict[str, Any] = {}


class LossConfig(Section):
    """Training loss (`convlstm.losses`). KTH: `cross_entropy` over classes. Forecasting: `bce`
    (per-pixel binary cross-entropy on logits: the model needs `output_activation: null`), or
    `mse`, `mae`, `balanced_mse`, `balanced_mae` (HKO-7 weights) on [0, 1] outputs; radar also
    `rainfall_mse` (squared error of rain rates in mm/h, the primary metric)."""

    name: Literal["cross_entropy", "bce", "mse", "mae", "balanced_mse", "balanced_mae", "rainfall_mse"]


class OptimConfig(Section):
    """Optimizer. `alpha` is RMSProp's decay (smoothing constant); `betas` are Adam's."""

    name: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    alpha: float = Field(0.99, gt=0, le=1)
    momentum: float = Field(0.0, ge=0)
    betas: list[float] = [0.9, 0.999]
    eps: float = Field(1e-8, gt=0)


class ScheduleConfig(Section):
    """Learning-rate multiplier per optimizer step: constant, or linear warm-up over `warmup_steps`
    then `num_cycles` cosine waves to the last step (HF get_cosine_schedule_with_warmup)."""

    name: Literal["constant", "cosine_warmup"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    num_cycles: float = Field(0.5, gt=0)


class DataConfig(Section):
    """Batching of the shards. `batch_size` is global (split evenly over workers); `limit_*` cap
    the windows read per split (None = all); `hflip` randomly mirrors training clips (p = 0.5;
    classification); `augment: dihedral` gives each training window of a forecast task one of the
    eight symmetries of the square (quarter turns and mirrors, the same for all its frames; square
    frames only; convlstm.augment). `crop: N` trains a forecast task on one random N x N crop per
    window (the same place in all its frames and its mask; N divisible by the model's patch_size);
    validation and evaluation see whole frames.
    `shuffle_buffer` > 0 shuffles the training windows each epoch (Ray Data's local shuffle buffer
    of that many rows; a full permutation without Ray). Forecasting: the first `in_len` frames of a
    window are the input, the rest the target (None = the manifest's `in_len`, else half the window);
    `in_len >= 2` so every encoder weight gets a gradient (DDP needs that). `materialize_mb`: splits
    up to that size are read once into Ray's object store. `paths`: the datasets to train on when
    `convlstm train` gets no `--data` (which wins); several are pooled (`jobs.training.datasets`):
    `limit_*` then cap each dataset's split, and with a shuffle Ray Data first puts the pooled blocks
    in a seeded random order (the buffer then mixes the datasets). A string is a comma-separated list;
    the resolved config of a run holds the absolute paths it trained on."""

    paths: list[Name] | None = Field(None, min_length=1)
    batch_size: int = Field(32, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    hflip: bool = False
    augment: Literal["dihedral"] | None = None
    crop: int | None = Field(None, ge=2)
    shuffle_buffer: int = Field(0, ge=0)
    train_split: Name = "train"
    val_split: Name = "val"
    limit_train: int | None = Field(None, ge=1)
    limit_val: int | None = Field(None, ge=1)
    in_len: int | None = Field(None, ge=2)
    materialize_mb: float = Field(256.0, ge=0)

    @field_validator("paths", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


class TrainConfig(Section):
    """Loop settings. `monitor` is a validation metric (e.g. `val_accuracy`); whether it is best high or
    low is the task's to say (`Task.metric_higher_is_better`), and `mode` is filled in from it (`max` or
    `min`; set by hand, a contradiction is an error naming both keys);
    `patience` epochs without improvement stop early (None = never); `grad_clip` is the max
    global gradient norm (None = off); `keep_checkpoints` top-k by `monitor` (the latest is
    always kept); `max_failures` worker-group restarts from the last checkpoint; `bf16`
    autocasts the training step on GPUs (validation and scores stay float32)."""

    epochs: int = Field(1, ge=1)
    monitor: Name = "val_loss"
    mode: Literal["min", "max"] | None = None
    patience: int | None = Field(None, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1)
    seed: int = 0
    log_every_steps: int = Field(10, ge=1)
    bf16: bool = True


class RegistryConfig(Section):
    """Model Registry: register the best checkpoint under `name` (default `convlstm-<task>`)."""

    # `register` is also an attribute of every pydantic model class: keep the YAML key as an alias.
    model_config = ConfigDict(populate_by_name=True)

    register_model: bool = Field(True, alias="register")
    name: Name | None = None


class Config(Section):
    """A whole training config: the task (a registered `jobs.tasks` name) and its sections."""

    task: Name
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    registry: RegistryConfig = RegistryConfig()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        try:
            return check_name(value)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("task ")) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

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
    check_name(task)
    path = config_path(config if config is not None else task)
    raw = read_yaml(path, "config")
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
    try:
        return key.strip(), yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{key.strip()}: the value {text!r} is not valid YAML ({problem})") from None


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML mapping from `path` (empty file = {}); ValueError `<what> <path>:<line>: ...` for syntax
    errors and non-mappings, so a typo is one line naming the file and line."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{what} {where}: YAML syntax error: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path}: cannot read it ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{what} {path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


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
    return validate(Config, raw)


def validate(model: type[BaseModel], raw: Any, prefix: str = ""):
    """`model` from plain data; ValueError naming the first bad key as `prefix.key.sub: reason`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_first_error(model, exc, prefix)) from None


def _first_error(model: type[BaseModel], exc: ValidationError, prefix: str) -> str:
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    key = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "config"
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return f"{key}: unknown key (known: {', '.join(_section(model, loc[:-1]).model_fields)})"
    if kind == "missing":
        return f"{key}: required"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        return f"{key}: must be {_OPS[kind]} {error['ctx'][_LIMIT[kind]]}, got {value!r}"
    if kind == "literal_error":
        return f"{key}: must be one of {error['ctx']['expected'].replace(chr(39), '')}, got {value!r}"
    if kind in ("model_type", "dict_type"):
        return f"{key}: expected a mapping, got {value!r}"
    if kind == "value_error":
        return f"{key}: {error['ctx']['error']}"
    return f"{key}: {error['msg'].lower()}, got {value!r}"


_OPS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_LIMIT = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _section(model: type[BaseModel], loc: list[str]) -> type[BaseModel]:
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return model


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
