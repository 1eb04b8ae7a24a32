"""How fast a network's convolutions run, layer by layer, against a reference rate of this machine.

Used by ``python -m tools.benchmark --epoch --ops STEPS`` (:func:`tools.bench_epoch.operator_profile`):

- :func:`convolution_layers`: every convolution that a training step runs, timed alone at the input shape, layout
  and precision it gets in that step, forward and backward, with its FLOPs (2 per multiply-add) and its rate;
- :func:`reference_convolution_rate`: one plain 3x3 convolution of a shape that suits the kernels, the rate to set
  the layers against.

FLOPs count what the layer computes: the forward pass, the weight gradient, and the input gradient where the input
needs one (the first layer's input is the image, which needs none). Bias terms are left out, as torch's
FlopCounterMode leaves them out.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from utils.autocast import amp_precision, autocast_for
from utils.misc import to_device
from utils.timing import seconds_of

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
REFERENCE_CONVOLUTION = (16, 64, 56)  # batch, channels (in and out), size: a 3x3 convolution with well-fed kernels


def reference_convolution_rate(device: torch.device, amp: bool, repeats: int = 10) -> float:
    """GFLOP/s (2 per multiply-add) of one plain 3x3 convolution forward, :data:`REFERENCE_CONVOLUTION`, channels-last,
    in the training step's precision: what this machine's convolution kernels reach on a shape that suits them, to
    set a step's convolutions against. The median of ``repeats`` after two untimed runs."""
    batch, channels, size = REFERENCE_CONVOLUTION
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * channels * channels * 9 * size * size

    def run():
        with torch.no_grad(), autocast_for(device, amp_precision(device, amp)):
            F.conv2d(x, weight, padding=1)

    for _ in range(2):
        run()
    return flops / statistics.median(seconds_of(run, device) for _ in range(repeats)) / 1e9


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def convolution_layers(model: nn.Module, batch: dict, device: torch.device, amp: bool,
                       repeats: int = 5) -> List[Dict]:
    """Each convolution that ``model``'s training forward runs on ``batch``, timed alone: the layer of a copy of the
    model, a random input of the shape, layout and ``requires_grad`` it got in that forward, forward and backward (a
    gradient of ones) in the step's precision, the median of ``repeats`` after one untimed run. The model (weights,
    buffers, gradients) and the random streams are left as they were.

    Returns:
        One dict per layer, slowest first: ``name``, ``input`` (shape), ``weight`` (shape), ``channels_last``,
        ``input_grad``, ``ms``, ``gflop`` and ``gflops`` (the rate).
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # dropout, random inputs
        return _convolution_layers(model, batch, device, amp, repeats)


def _convolution_layers(model: nn.Module, batch: dict, device: torch.device, amp: bool,
                        repeats: int) -> List[Dict]:
    probe = copy.deepcopy(model).train()  # the model's weights, buffers and gradients stay as they are
    seen: Dict[str, tuple] = {}

    def record(name):
        def hook(module, inputs, output):
            x = inputs[0]
            seen.setdefault(name, (module, tuple(x.shape), _memory_format(x), x.requires_grad))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in probe.named_modules()
               if isinstance(module, CONVOLUTIONS)]
    images, _, tokens, mask = to_device(batch, device)
    with autocast_for(device, amp_precision(device, amp)):
        probe(images, tokens, mask)
    for handle in handles:  # the layers are timed without them
        handle.remove()
    rows = []
    for name, (layer, shape, layout, input_grad) in seen.items():
        x = torch.randn(shape, device=device).contiguous(memory_format=layout).requires_grad_(input_grad)
        with autocast_for(device, amp_precision(device, amp)):
            out = layer(x)
        run = functools.partial(_forward_backward, layer, x, torch.ones_like(out), device, amp)
        run()
        seconds = statistics.median(seconds_of(run, device) for _ in range(repeats))
        macs = out.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
        gflop = 2 * macs * (3 if input_grad else 2) / 1e9
        rows.append({"name": name, "input": list(shape), "weight": list(layer.weight.shape),
                     "channels_last": layout == torch.channels_last, "input_grad": input_grad,
                     "ms": 1000 * seconds, "gflop": gflop, "gflops": gflop / seconds})
    return sorted(rows, key=lambda row: -row["ms"])


def _forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, device: torch.device, amp: bool) -> None:
    with autocast_for(device, amp_precision(device, amp)):
        out = layer(x)
    out.backward(grad)


def format_convolution_layers(rows: List[Dict], top: int = 10) -> List[str]:
    """The ``top`` slowest layers as lines of a table, and the sum over all of them."""
    total_ms, total_gflop = sum(row["ms"] for row in rows), sum(row["gflop"] for row in rows)
    lines = [f"convolution layers timed alone, forward and backward ({len(rows)} layers: {total_ms:.1f} ms, "
             f"{total_gflop:.2f} GFLOP, {1000 * total_gflop / max(total_ms, 1e-9):.0f} GFLOP/s); the slowest:",
             f"  {'layer':<36}{'input':>22}{'weight':>20}{'ms':>8}{'GFLOP/s':>9}"]
    for row in rows[:top]:
        lines.append(f"  {row['name']:<36}{str(tuple(row['input'])):>22}{str(tuple(row['weight'])):>20}"
                     f"{row['ms']:>8.2f}{row['gflops']:>9.0f}")
    return lines
