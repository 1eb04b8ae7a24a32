"""Optimizer and learning-rate schedules of the authors' configs, from torch.optim (stepped once per epoch)."""

from __future__ import annotations

import torch


class ExpFloor:
    """``max(0.99 ** epoch, 0.1)``: the authors' MosMedData+ schedule (a class, so the scheduler state pickles)."""

    def __call__(self, epoch: int) -> float:
        return max(0.99**epoch, 0.1)


def build_optimizer(config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam over the trainable parameters. ``weight_decay`` is 0 by default: the authors configured 1e-5 but
    their Adam never received it."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def build_scheduler(config, optimizer: torch.optim.Optimizer):
    """``cosineLR``: cosine warm restarts, T0 = 10 epochs, eta_min = 1e-4; ``exp``: ``max(0.99^e, 0.1)``."""
    if config.lr == "cosineLR":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=1, eta_min=1e-4)
    if config.lr == "exp":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, ExpFloor())
    raise ValueError(f"unknown schedule lr={config.lr!r}")
