"""ConvLSTM model library (Shi et al. 2015): cells, stacks, networks, tutorial interop, losses, factory.

`convlstm.metrics`, `convlstm.baselines` and `convlstm.units` are imported by their module paths.
"""
from convlstm.cell import ConvLSTMCell, LSTMPointwise
from convlstm.factory import MODELS, build_model, model_spec
from convlstm.interop import classifier_from_tutorial, stack_from_tutorial, to_tutorial_state_dict
from convlstm.losses import (balanced_mae, balanced_mse, bce_loss, hko_balance_weights, mae_loss, mse_loss)
from convlstm.networks import ConvLSTMClassifier, EncoderForecaster, FCLSTM, depth_to_space, space_to_depth
from convlstm.stack import ConvLSTM

__all__ = [
    "ConvLSTMCell", "LSTMPointwise", "ConvLSTM",
    "EncoderForecaster", "FCLSTM", "ConvLSTMClassifier", "space_to_depth", "depth_to_space",
    "stack_from_tutorial", "classifier_from_tutorial", "to_tutorial_state_dict",
    "bce_loss", "mse_loss", "mae_loss", "balanced_mse", "balanced_mae", "hko_balance_weights",
    "MODELS", "build_model", "model_spec",
]
