"""Fast inference with a trained RecLMIS: the eval forward, the same masks, less work.

    predictor = Predictor(model, device, precision="fp32")   # changes model in place: eval, fused, on device
    logits = predictor(images, tokens, text_mask)            # [B, 1, H, W] fp32 logits

What :class:`Predictor` does, each measured by ``python -m tools.benchmark`` (docs/PERFORMANCE.md):

- ``torch.inference_mode`` and no auxiliary branch (the reconstruction heads and the contrastive features are
  training-only; the authors' code ran them at test time too);
- BatchNorm folded into the convolution before it (:func:`fold_batchnorm`), ReLU in place;
- channels-last memory format for the convolutions (``channels_last=True``);
- optionally reduced precision: ``precision="bf16"`` (CPU or CUDA autocast) or ``"fp16"`` (CUDA autocast), or
  ``"auto"``, which times the precisions on the first batch and keeps the fastest (bf16 is faster than fp32 on
  some CPUs and slower on others: an AMD EPYC gained, a 2-core Xeon lost; docs/PERFORMANCE.md);
- optionally ``torch.compile`` (``compile=True``): a one-off compilation of tens of seconds, then faster calls;
- optionally a cache of the frozen text tower's features for reports seen before (``cache_text``): at batch 1
  the logits are bit for bit those without it.

In fp32 the logits equal those of ``model.eval()(...)`` up to float rounding (about 1e-6); the masks
(``logits > 0``) are the same. Reduced precision is opt-in: measure its mask agreement on your data with
``python -m tools.benchmark --agreement``.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections import OrderedDict
from typing import Dict, List

import torch
from torch import nn

from nets.unet import ConvBatchNorm

PRECISIONS = ("fp32", "bf16", "fp16")
AUTO = "auto"  # Predictor(precision="auto"): the fastest of PRECISIONS on this device, timed on the first batch
logger = logging.getLogger(__name__)
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TEXT_CACHE = 1024  # reports whose text features test.py and predict keep (about 37 MB at QaTa's sizes)


class CompileError(RuntimeError):
    """``torch.compile`` failed (no C++ compiler on the CPU, no Triton on CUDA, an unsupported operation)."""


def autocast_for(device: torch.device, precision: str):
    """The autocast context for ``precision`` on ``device`` (a null context for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 runs on CUDA only; on the CPU use bf16")
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


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


class Predictor:
    """Runs a RecLMIS model for inference as fast as the device allows (see the module docstring).

    Args:
        model: a RecLMIS model. It is changed in place: eval mode, BatchNorm folded, moved to ``device`` and,
            with ``channels_last``, converted to that memory format. Do not train it afterwards.
        device: where to run.
        precision: ``"fp32"`` (default; same masks as the plain eval forward), ``"bf16"`` or ``"fp16"`` (CUDA).
        channels_last: channels-last convolutions (faster on CPU and on CUDA tensor cores).
        compile: run the model through ``torch.compile`` (Inductor; it needs a C++ compiler on the CPU, Triton on
            CUDA). The first call compiles. Compiled code is specialised to the batch size, so a smaller batch
            (the last one of a data set) is padded up to a size compiled before, if that is at most twice as
            large, instead of compiling again.
        cache_text: keep the text tower's features of up to this many reports (:class:`TextFeatureCache`,
            ``self.text_cache``); 0 = off. The tower is frozen, so a report always gives the same features.
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "fp32", channels_last: bool = True,
                 compile: bool = False, cache_text: int = 0):
        if precision == AUTO:
            if compile:
                raise ValueError("precision 'auto' times the precisions without compiling: with compile, name one of "
                                 f"{', '.join(PRECISIONS)}")
        else:
            autocast_for(device, precision)  # validates the pair
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.eval()
        fold_batchnorm(model, memory_format)
        model.to(device, memory_format=memory_format)
        self.model = model
        self.compiled = torch.compile(model, dynamic=False) if compile else None
        self._compiled_sizes: List[int] = []
        self.text_cache = TextFeatureCache(cache_text) if cache_text else None

    def outputs(self, images: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor,
                return_weights: bool = False) -> Dict[str, torch.Tensor]:
        """The model's output dict (``logits``, and with ``return_weights`` the word and patch weights), fp32."""
        self.model.check_inputs(images, tokens, text_mask)
        if self.precision == AUTO:
            self.precision = self._fastest_precision(images, tokens, text_mask)
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        tokens = tokens.to(self.device, non_blocking=True)
        text_mask = text_mask.to(self.device, non_blocking=True)
        batch = images.shape[0]
        with torch.inference_mode(), autocast_for(self.device, self.precision):
            text_clip = None if self.text_cache is None else self.text_cache(self.model, tokens, text_mask)
            forward = self.model
            if self.compiled is not None:
                forward = self._call_compiled
                size = self._compiled_size(batch)
                if size > batch:  # samples are independent in eval mode: pad, then drop the padding
                    images, tokens, text_mask = (_pad_batch(t, size) for t in (images, tokens, text_mask))
                    text_clip = None if text_clip is None else _pad_batch(text_clip, size)
            out = forward(images, tokens, text_mask, return_aux=False, return_weights=return_weights,
                          text_clip=text_clip)
        return {key: value[:batch].float().contiguous() for key, value in out.items()}

    def candidate_precisions(self) -> List[str]:
        """What ``"auto"`` chooses from: fp32 and bf16, and fp16 on CUDA (bf16 only where the GPU supports it)."""
        if self.device.type != "cuda":
            return ["fp32", "bf16"]
        return ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])

    def time_precision(self, precision: str, images: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor,
                       repeats: int = 3) -> float:
        """Median seconds of the forward for this batch in ``precision``, after one untimed run."""
        self.precision = precision
        times = []
        for _ in range(repeats + 1):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            self.outputs(images, tokens, text_mask)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    def _fastest_precision(self, images: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor) -> str:
        """Time each candidate on this batch and return the fastest; logs the timings and the choice."""
        timings = {p: self.time_precision(p, images, tokens, text_mask) for p in self.candidate_precisions()}
        best = min(timings, key=timings.get)
        logger.info("precision auto on %s: %s per batch of %d; using %s", self.device.type,
                    ", ".join(f"{p} {t:.3f} s" for p, t in timings.items()), images.shape[0], best)
        return best

    def __call__(self, images: torch.Tensor, tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` fp32 logits; ``logits > 0`` is the mask (probability > 0.5)."""
        return self.outputs(images, tokens, text_mask)["logits"]

    def _compiled_size(self, batch: int) -> int:
        """The batch size to run ``batch`` images at: the smallest size compiled so far that is at least ``batch``
        and at most twice it (padding costs time), else ``batch`` itself (compiled on this call)."""
        fitting = [size for size in self._compiled_sizes if batch <= size <= 2 * batch]
        if fitting:
            return min(fitting)
        self._compiled_sizes.append(batch)
        return batch

    def _call_compiled(self, *args, **kwargs):
        try:
            return self.compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CompileError(f"torch.compile failed on {self.device} ({first}). It needs a working C++ compiler "
                               "on the CPU and Triton on CUDA; run without --compile (compile=False).") from error


def _pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """``tensor`` with its first row repeated up to ``size`` rows, in the same memory format."""
    padding = tensor[:1].expand(size - tensor.shape[0], *tensor.shape[1:])
    padded = torch.cat([tensor, padding])
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        padded = padded.contiguous(memory_format=torch.channels_last)
    return padded
