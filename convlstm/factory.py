"""Build models by name, and describe a model so a checkpoint can rebuild it.

`model_spec(model)` returns `{"name": ..., "kwargs": {...}}` (JSON-friendly); `build_model(**spec)`
rebuilds the same architecture (weights are loaded separately).
"""
from __future__ import annotations

import inspect

import torch.nn as nn

from convlstm.networks import ConvLSTMClassifier, EncoderForecaster, FCLSTM

MODELS: dict[str, type[nn.Module]] = {
    "classifier": ConvLSTMClassifier,
    "encoder_forecaster": EncoderForecaster,
    "fc_lstm": FCLSTM,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """A new model of kind `name` ("classifier", "encoder_forecaster", "fc_lstm") built with `kwargs`."""
    if name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")
    cls = MODELS[name]
    unknown = sorted(set(kwargs) - set(inspect.signature(cls).parameters))
    if unknown:
        raise ValueError(f"{name} does not take argument(s) {unknown}")
    return cls(**kwargs)


def model_spec(model: nn.Module) -> dict:
    """`{"name": ..., "kwargs": {...}}` such that `build_model(**spec)` rebuilds `model`'s architecture."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return {"name": name, "kwargs": dict(model.config)}
    raise ValueError(f"model of type {type(model).__name__} is not one of {sorted(MODELS)}")
