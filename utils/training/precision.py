"""Is bf16 autocast faster than fp32 for training on this CPU?

It depends on the CPU: some CPUs run a bf16 training step in under half the fp32 time, others in more than the fp32
time, both showing the ``avx512_bf16`` flag (docs/PERFORMANCE.md has the measurements). :func:`check_cpu_amp`
answers it on this machine before a run with ``amp=True`` starts, on copies of the model and loss, so the run trains
exactly as it would without the check: no weight, BatchNorm statistic, gradient or random draw of the real model
changes.
"""

from __future__ import annotations

import copy
import logging
import statistics
from typing import Tuple

import torch
from torch import nn

from utils.autocast import amp_precision, autocast_for
from utils.misc import to_device
from utils.timing import seconds_of

logger = logging.getLogger(__name__)

SLOWER = 1.05  # bf16 is called slower from 5% over the fp32 time: closer than that is within timing noise


def _step_seconds(model: nn.Module, criterion: nn.Module, inputs: tuple, device: torch.device, amp: bool) -> float:
    images, labels, tokens, mask = inputs

    def step():
        with autocast_for(device, amp_precision(device, amp)):
            total = criterion(model(images, tokens, mask), labels)["total"]
        total.backward()
        model.zero_grad(set_to_none=True)
        criterion.zero_grad(set_to_none=True)

    return seconds_of(step, device)


def time_amp_step(model: nn.Module, criterion: nn.Module, batch: dict, device: torch.device,
                  repeats: int = 2) -> Tuple[float, float]:
    """Median seconds of forward, every loss and backward (no optimizer step) on ``batch``, in fp32 and in bf16
    autocast, on the CPU.

    Each precision runs once untimed, then ``repeats`` times, alternating so that a change of machine load falls on
    both. Runs on deep copies in training mode inside :func:`torch.random.fork_rng`.

    Returns:
        ``(fp32_seconds, bf16_seconds)``.

    Raises:
        ValueError: ``repeats`` under 1, or a device other than the CPU (CUDA autocast is fp16, and its random
            state is not kept here).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if device.type != "cpu":
        raise ValueError(f"time_amp_step times bf16 on the CPU, not on {device}")
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


def check_cpu_amp(model: nn.Module, criterion: nn.Module, batch: dict, device: torch.device) -> float:
    """Time :func:`time_amp_step` on ``batch`` and log both times; a warning when bf16 is :data:`SLOWER`.

    Returns:
        bf16 seconds over fp32 seconds.
    """
    fp32, bf16 = time_amp_step(model, criterion, batch, device)
    ratio = bf16 / fp32
    timed = (f"forward, losses and backward on a validation batch of {len(batch['name'])} took {fp32:.3g} s in fp32 "
             f"and {bf16:.3g} s in bf16 autocast ({ratio:.2f}x; median of 2, on copies of the model)")
    if ratio > SLOWER:
        logger.warning("amp=True is slower on this CPU: %s. Set amp=False to train faster here.", timed)
    else:
        logger.info("amp=True: %s.", timed)
    return ratio
