"""Reduced precision, one way for training and inference: a precision name maps to an autocast context.

``fp32`` runs as is; ``bf16`` is bf16 autocast (CPU or CUDA); ``fp16`` is fp16 autocast (CUDA only). Training's
``amp=True`` is :func:`amp_precision`: fp16 on CUDA (with gradient scaling, in the engine), bf16 on the CPU.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_precision(device: torch.device, amp: bool = True) -> str:
    """The precision of training's ``amp`` switch on ``device``: fp16 on CUDA, bf16 elsewhere; fp32 when off."""
    if not amp:
        return "fp32"
    return "fp16" if device.type == "cuda" else "bf16"


def autocast_for(device: torch.device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a null context for fp32).

    Raises:
        ValueError: an unknown precision, or fp16 off CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 runs on CUDA only; on the CPU use bf16")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])
