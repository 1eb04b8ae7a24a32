"""Timing a piece of work on a device: the one stopwatch of the benchmark, the amp check and ``precision="auto"``.

CUDA runs asynchronously, so each timed call is fenced by a synchronisation; on the CPU there is nothing to wait for.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn``, including the device work it queued."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def median_seconds(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median of :func:`seconds_of` over ``repeats`` calls, after ``warmup`` untimed ones."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    return statistics.median(seconds_of(fn, device) for _ in range(repeats))
