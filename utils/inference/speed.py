"""The inference speed-ups the predictor applies, each usable on its own.

- :func:`fold_batchnorm`: BatchNorm folded into the convolution before it, ReLU in place;
- :class:`TextFeatureCache`: the frozen text tower's features of reports seen before;
- :func:`pad_batch`: a batch padded up to a size ``torch.compile`` compiled before.

What each gains is measured by ``python -m tools.benchmark`` (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
from torch import nn

from nets.unet import ConvBatchNorm

AUTO = "auto"  # Predictor(precision="auto"): the fastest of PRECISIONS on this device, timed on the first batch
TEXT_CACHE = 1024  # reports whose text features test.py and predict keep (about 37 MB at QaTa's sizes)


class CompileError(RuntimeError):
    """``torch.compile`` failed (no C++ compiler on the CPU, no Triton on CUDA, an unsupported operation)."""


def fold_batchnorm(model: nn.Module, memory_format: torch.memory_format = torch.contiguous_format) -> int:
    """Fold every ``ConvBatchNorm``'s BatchNorm into its convolution, in place, for inference.

    The folded block computes ``relu(conv'(x))``, ``conv'`` carrying the BatchNorm's running statistics and affine
    (``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``), so it equals the eval-mode
    block up to float rounding. The model must be in eval mode and is not trainable afterwards.

    Args:
        memory_format: the layout of the folded weights (one copy, made in that layout).

    Returns:
        the number of blocks folded.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call model.eval() first)")
    folded = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ConvBatchNorm) and isinstance(module.norm, nn.BatchNorm2d):
                conv, norm = module.conv, module.norm
                scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
                weight = (conv.weight * scale[:, None, None, None]).contiguous(memory_format=memory_format)
                bias = (conv.bias - norm.running_mean) * scale + norm.bias
                conv.weight = nn.Parameter(weight, requires_grad=False)
                conv.bias = nn.Parameter(bias, requires_grad=False)
                module.norm = nn.Identity()
                module.activation = nn.ReLU(inplace=True)
                folded += 1
    return folded


class TextFeatureCache:
    """The frozen CLIP tower's hidden states (:meth:`RecLMIS.encode_text`) of up to ``capacity`` reports, the least
    recently used dropped first.

    A report's features are computed with the batch's other new reports, so with batches above 1 they may differ
    from an uncached forward by float rounding; at batch 1 they are the same bits. ``hits`` and ``misses`` count
    reports served from the cache and computed.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a text cache holds at least 1 report, got capacity {capacity}")
        self.capacity = capacity
        self.entries: "OrderedDict[bytes, torch.Tensor]" = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __call__(self, model: nn.Module, tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, D]`` features of ``tokens``; the reports not held are computed by ``model`` in one batch."""
        keys = _report_keys(tokens, text_mask)
        found = {key: self.entries[key] for key in keys if key in self.entries}
        new = list(dict.fromkeys(key for key in keys if key not in found))
        if new:
            rows = torch.tensor([keys.index(key) for key in new], device=tokens.device)
            computed = model.encode_text(tokens[rows], text_mask[rows])
            found.update({key: row.detach().clone() for key, row in zip(new, computed)})
        self.hits += len(keys) - len(new)
        self.misses += len(new)
        features = torch.stack([found[key] for key in keys])
        for key in dict.fromkeys(keys):
            self.entries[key] = found[key]
            self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return features


def _report_keys(tokens: torch.Tensor, text_mask: torch.Tensor) -> List[bytes]:
    kind = f"{tokens.dtype}{list(tokens.shape[1:])}{text_mask.dtype}|".encode()
    tokens, text_mask = tokens.cpu().numpy(), text_mask.cpu().numpy()
    return [kind + row.tobytes() + b"|" + mask.tobytes() for row, mask in zip(tokens, text_mask)]


def pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """``tensor`` with its first row repeated up to ``size`` rows, in the same memory format."""
    padding = tensor[:1].expand(size - tensor.shape[0], *tensor.shape[1:])
    padded = torch.cat([tensor, padding])
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        padded = padded.contiguous(memory_format=torch.channels_last)
    return padded
