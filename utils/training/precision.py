"""Is bf16 autocast faster than fp32 for a training step on this CPU?

It depends on the CPU (docs/PERFORMANCE.md): a step took 0.43x the fp32 time on a 2-core AMD EPYC and 1.43x on a
2-core Intel Xeon, both with AVX-512 BF16. :func:`time_amp_step` answers it on this machine, on copies of the model
and loss, so the run it is asked for trains exactly as it would without the check: no weight, BatchNorm statistic,
gradient or random draw of the real model changes.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Tuple

import torch
from torch import nn

from utils.training.engine import autocast_context, to_device


def _step_seconds(model: nn.Module, criterion: nn.Module, inputs: tuple, device: torch.device, amp: bool) -> float:
    images, labels, tokens, mask = inputs
    start = time.perf_counter()
    with autocast_context(device, amp):
        total = criterion(model(images, tokens, mask), labels)["total"]
    total.backward()
    model.zero_grad(set_to_none=True)
    criterion.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def time_amp_step(model: nn.Module, criterion: nn.Module, batch: dict, device: torch.device,
                  repeats: int = 2) -> Tuple[float, float]:
    """Median seconds of forward, every loss and backward on ``batch``, in fp32 and in bf16 autocast.

    Each precision runs once untimed, then ``repeats`` times, alternating so that a change of machine load falls on
    both. Runs on deep copies in training mode inside :func:`torch.random.fork_rng` (no optimizer step).

    Returns:
        ``(fp32_seconds, bf16_seconds)``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    model, criterion = copy.deepcopy(model).train(), copy.deepcopy(criterion).train()
    inputs = to_device(batch, device)
    times = {False: [], True: []}
    with torch.random.fork_rng(devices=[]):
        for amp in (False, True):
            _step_seconds(model, criterion, inputs, device, amp)
        for _ in range(repeats):
            for amp in (False, True):
                times[amp].append(_step_seconds(model, criterion, inputs, device, amp))
    return statistics.median(times[False]), statistics.median(times[True])
