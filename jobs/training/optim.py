"""Optimizer and learning-rate schedule from the `optim` / `schedule` config sections."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from jobs.training.config import OptimConfig, ScheduleConfig


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam/AdamW (`betas`), RMSProp (`alpha` = decay, `momentum`) or SGD (`momentum`)."""
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps,
                                   weight_decay=cfg.weight_decay, momentum=cfg.momentum)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, num_cycles: float) -> float:
    """LR multiplier of HF `get_cosine_schedule_with_warmup`: linear 0 -> 1 over `warmup_steps`,
    then 0.5 * (1 + cos(2π · num_cycles · progress)) floored at 0, progress in [0, 1] to `total_steps`."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def build_scheduler(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; `total_steps` is epochs × steps per epoch."""
    if cfg.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def multiplier(step: int) -> float:
        return cosine_with_warmup(step, cfg.warmup_steps, total_steps, cfg.num_cycles)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
