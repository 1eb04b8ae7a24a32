"""Seeding, random-number states, device choice and the optional transformers import: the one place for each."""

from __future__ import annotations

import importlib
import random
from types import ModuleType

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (all devices); with ``deterministic``, make cuDNN choose fixed algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def get_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else MPS, else CPU. ``"cuda"`` on a machine without CUDA is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this machine has no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                         "device(s)")
    return device


def rng_state() -> dict:
    """Every RNG state as tensors and plain values, so that ``torch.load(weights_only=True)`` reads it back."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the GPU this process uses; CPU runs touch none
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):  # checkpoints that saved every visible GPU's state
        cuda = cuda[0] if cuda else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


def import_transformers(needed_by: str = "text_encoder='hf'") -> ModuleType:
    """transformers, an optional dependency that only ``text_encoder="hf"`` (its tower and tokenizer) and
    ``model="guidedecoder"`` (its ConvNeXt) need; ``needed_by`` names the one asking.

    Raises:
        ImportError: it is not installed; the message names the requirements file that installs it.
    """
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise ImportError(f"{needed_by} needs transformers: pip install -r requirements-hf.txt") from None


def to_device(batch: dict, device: torch.device):
    """A loader batch's ``(image, label, text_token, text_mask)`` on ``device`` (non-blocking copies on CUDA)."""
    non_blocking = device.type == "cuda"
    return (batch["image"].to(device, non_blocking=non_blocking),
            batch["label"].to(device, non_blocking=non_blocking),
            batch["text_token"].to(device, non_blocking=non_blocking),
            batch["text_mask"].to(device, non_blocking=non_blocking))
