"""Environment settings of a training run: where Ray Train places its workers (CONVLSTM_TRAIN_PLACEMENT)."""
from __future__ import annotations

import os

PLACEMENT_ENV = "CONVLSTM_TRAIN_PLACEMENT"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def placement_strategy() -> str:
    """Ray Train's placement strategy for the worker group: PACK (default: as few nodes as possible),
    or SPREAD from CONVLSTM_TRAIN_PLACEMENT (one worker per node where possible; after a node is lost
    the restarted group may pack onto the survivors, if their CPUs fit it)."""
    strategy = os.environ.get(PLACEMENT_ENV, "PACK").upper()
    if strategy not in STRATEGIES:
        raise ValueError(f"{PLACEMENT_ENV} must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD, got {strategy!r}")
    return strategy
