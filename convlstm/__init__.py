"""ConvLSTM model library (Shi et al. 2015; SA-ConvLSTM, Lin et al. 2020): cells, stacks, networks,
tutorial interop, losses, factory.

`convlstm.metrics`, `convlstm.baselines` and `convlstm.units` are imported by their module paths.
The names below load on first use, so `import convlstm.units` (numpy only) does not import torch:
the CLI starts without paying for it.
"""
from importlib import import_module

_EXPORTS = {
    "convlstm.cell": ("ConvLSTMCell", "LSTMPointwise"),
    "convlstm.factory": ("MODELS", "build_model", "model_spec"),
    "convlstm.interop": ("classifier_from_tutorial", "stack_from_tutorial", "to_tutorial_state_dict"),
    "convlstm.losses": ("balanced_mae", "balanced_mse", "bce_loss", "hko_balance_weights", "mae_loss", "mse_loss"),
    "convlstm.networks": ("ConvLSTMClassifier", "EncoderForecaster", "FCLSTM", "depth_to_space", "space_to_depth"),
    "convlstm.sa_cell": ("SAConvLSTMCell", "SelfAttentionMemory"),
    "convlstm.stack": ("ConvLSTM",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'convlstm' has no attribute {name!r}")
    return getattr(import_module(_MODULE_OF[name]), name)


def __dir__():
    return __all__
