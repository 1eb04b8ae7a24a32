"""The one inference path: a trained network (RecLMIS or a peer of nets/models.py), run as fast as the device
allows, the same masks.

    predictor = Predictor.from_checkpoint("best_model-RecLMIS.pth.tar")       # or Predictor(model, device)
    result = predictor.predict("scan.png", "Bilateral pulmonary infection, two infected areas.")
    result.mask, result.probability, result.words, result.word_weights, result.patch_weights
    result.save("out/scan")         # out/scan_mask.png (0/255), _prob.png, _overlay.png
    logits = predictor(images, tokens, text_mask)   # a prepared batch: [B, 1, H, W] fp32 logits

``test.py`` (test and predict), the Python API and ``tools.benchmark`` all run the model through this class.
What it does (each measured by ``python -m tools.benchmark``, docs/PERFORMANCE.md):

- ``torch.inference_mode`` and no auxiliary branch (the reconstruction heads and the contrastive features are
  training-only; the authors' code ran them at test time too);
- BatchNorm folded into the convolution before it (:func:`utils.inference.speed.fold_batchnorm`), ReLU in place;
- channels-last memory format for the convolutions (``channels_last=True``);
- optionally reduced precision: ``precision="bf16"`` (CPU or CUDA autocast) or ``"fp16"`` (CUDA autocast), or
  ``"auto"``, which times the precisions on the first batch and keeps the fastest (bf16 is faster than fp32 on
  some CPUs and slower on others; docs/PERFORMANCE.md);
- optionally ``torch.compile`` (``compile=True``): a one-off compilation, then faster calls;
- optionally a cache of the frozen text tower's features for reports seen before (``cache_text``): at batch 1
  the logits are bit for bit those without it.

In fp32 the logits equal those of ``model.eval()(...)`` up to float rounding (about 1e-6); the masks
(``logits > 0``) are the same. Reduced precision is opt-in: measure its mask agreement on your data with
``python -m tools.benchmark --agreement``.

:meth:`Predictor.predict` prepares one image as the data sets are (3-channel BGR, bilinear resize to the model's
``img_size``, [0, 1]) and its report as in training; the probability is resized back to the image's own size
(bilinear) before the 0.5 threshold, so the mask lines up with the input image.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import cv2
import numpy as np
import torch
from torch import nn

from utils.autocast import PRECISIONS, autocast_for
from utils.checkpoints import build_model_from_checkpoint
from utils.data.check import odd_shape_reason
from utils.data.images import MAX_IMAGE_PIXELS, read_image
from utils.data.reports import report_concerns
from utils.data.tokenizer import build_tokenizer
from utils.data.transforms import image_to_tensor, probability_to_full_size, to_model_size
from utils.inference.figures import draw_case
from utils.inference.speed import (
    AUTO,
    TEXT_CACHE,
    CompileError,
    TextFeatureCache,
    fold_batchnorm,
    pad_batch,
)
from utils.misc import get_device
from utils.timing import median_seconds
from utils.weights_io import first_line

logger = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One image's prediction.

    Attributes:
        image: the input, ``[H, W, 3]`` BGR uint8 at its own size.
        probability: ``[H, W]`` float32 in [0, 1].
        mask: ``[H, W]`` uint8, 1 where ``probability > 0.5``.
        report: the report as given.
        words: the report's tokens as the model read them (after the authors' short-report padding, cut to
            ``token_len``).
        word_weights: ``[len(words)]`` words-of-interest weights (a softmax over the tokens with the start and end
            tokens, so they sum to at most 1); None for a network without interest maps (the peers).
        patch_weights: ``[G, G]`` patches-of-interest weights (sum 1), ``G = img_size / 16``; None likewise.
    """

    image: np.ndarray
    probability: np.ndarray
    mask: np.ndarray
    report: str
    words: List[str]
    word_weights: Optional[np.ndarray]
    patch_weights: Optional[np.ndarray]

    def save(self, prefix: str) -> List[str]:
        """Write ``<prefix>_mask.png`` (0/255), ``<prefix>_prob.png`` (probability x 255) and
        ``<prefix>_overlay.png`` (input, prediction, probability, patches and words of interest); all three or,
        on an error or Ctrl-C, none (files already at those paths are then gone too: callers refuse to overwrite
        without being told to)."""
        folder = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(folder, exist_ok=True)
        paths = prediction_paths(prefix)
        try:
            _write_png(paths[0], self.mask * np.uint8(255))
            # convertScaleAbs rounds and saturates into uint8 in one pass, with no full-size float temporaries.
            _write_png(paths[1], cv2.convertScaleAbs(self.probability, alpha=255.0))
            draw_case(paths[2], self.image, self.probability, self.report, self.words, self.word_weights,
                      self.patch_weights)
        except BaseException:
            # A failure or Ctrl-C part-way leaves none of the three files: an image's outputs exist whole or not.
            for path in paths:
                if os.path.exists(path):
                    os.remove(path)
            raise
        return paths


def prediction_paths(prefix: str) -> List[str]:
    """The files :meth:`Prediction.save` writes for ``prefix``: the mask, the probability and the overlay."""
    return [f"{prefix}_mask.png", f"{prefix}_prob.png", f"{prefix}_overlay.png"]


def _write_png(path: str, array: np.ndarray) -> None:
    if not cv2.imwrite(path, array.astype(np.uint8, copy=False)):
        raise OSError(f"could not write {path}")


class Predictor:
    """Runs a network of the registry for inference as fast as the device allows (see the module docstring).

    Args:
        model: a network of the registry (RecLMIS by default). It is changed in place: eval mode, BatchNorm
            folded, moved to ``device`` and, with ``channels_last``, converted to that memory format. Do not train
            it afterwards.
        device: where to run.
        precision: ``"fp32"`` (default; same masks as the plain eval forward), ``"bf16"`` or ``"fp16"`` (CUDA).
        channels_last: channels-last convolutions (faster on CPU and on CUDA tensor cores).
        compile: run the model through ``torch.compile`` (Inductor; it needs a C++ compiler on the CPU, Triton on
            CUDA). The first call compiles. Compiled code is specialised to the batch size, so a smaller batch
            (the last one of a data set) is padded up to a size compiled before, if that is at most twice as
            large, instead of compiling again.
        cache_text: keep the text tower's features of up to this many reports (:class:`TextFeatureCache`,
            ``self.text_cache``); 0 = off. The tower is frozen, so a report always gives the same features.
        max_image_pixels: :meth:`predict` refuses a larger image (read from the file's header before decoding);
            the default is ``Config.max_image_pixels``.

    Attributes:
        config: the model's config; tokenizer: its reports' tokenizer (:func:`utils.data.tokenizer.build_tokenizer`).

    Calls: ``predictor(images, tokens, text_mask)`` gives logits, :meth:`outputs` the output dict (with the
    interest weights on request), :meth:`predict` one image file or array with its report, as a :class:`Prediction`.
    """

    def __init__(self, model: nn.Module, device: torch.device, precision: str = "fp32", *, channels_last: bool = True,
                 compile: bool = False, cache_text: int = 0, max_image_pixels: int = MAX_IMAGE_PIXELS):
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
        # A network without a text tower (the U-Net) has no text features to keep.
        self.text_cache = TextFeatureCache(cache_text) if cache_text and model.text_tower is not None else None
        self.config = model.config
        self.tokenizer = build_tokenizer(self.config)
        self.max_image_pixels = max_image_pixels
        self._warned_reports: set = set()

    @classmethod
    def from_checkpoint(cls, checkpoint: str, *, device: Union[str, torch.device] = "auto", precision: str = "fp32",
                        config=None, channels_last: bool = True, compile: bool = False,
                        cache_text: int = TEXT_CACHE, max_image_pixels: int = MAX_IMAGE_PIXELS) -> "Predictor":
        """The model of ``checkpoint`` (ours, or the authors' released file), rebuilt from the file alone
        (:func:`utils.checkpoints.build_model_from_checkpoint`), ready to predict.

        Args:
            checkpoint: the checkpoint file.
            device: a ``torch.device``, or "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
                (:func:`utils.misc.get_device`).
            config: the config for a checkpoint that carries none (the authors'): their QaTa sizes when None.
            precision, channels_last, compile, cache_text, max_image_pixels: as for the constructor; the text
                cache is on by default here (one image at a time gives the same bits as without it).
        """
        model = build_model_from_checkpoint(checkpoint, config)[0]
        device = device if isinstance(device, torch.device) else get_device(device)
        return cls(model, device, precision, channels_last=channels_last, compile=compile,
                   cache_text=cache_text, max_image_pixels=max_image_pixels)

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
                    images, tokens, text_mask = (pad_batch(t, size) for t in (images, tokens, text_mask))
                    text_clip = None if text_clip is None else pad_batch(text_clip, size)
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
        return median_seconds(lambda: self.outputs(images, tokens, text_mask), self.device, warmup=1,
                              repeats=repeats)

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
            first = first_line(error)
            raise CompileError(f"torch.compile failed on {self.device} ({first}). It needs a working C++ compiler "
                               "on the CPU and Triton on CUDA; run without --compile (compile=False).") from error

    def predict(self, image: Union[str, Path, np.ndarray], report: str) -> Prediction:
        """Predict the mask of ``image`` (a file, or an ``[H, W, 3]`` BGR / ``[H, W]`` grey uint8 array) for
        ``report``.

        Logs a warning, once per report, for an empty report, one cut to ``token_len``, one that looks like a file
        path or is mostly not in Latin letters; and for an image under 16 pixels on a side or more than 10:1.
        Raises ``DatasetError`` for a file over ``max_image_pixels``.
        """
        name = str(image) if isinstance(image, (str, Path)) else "the image"
        if isinstance(image, (str, Path)):
            image = read_image(Path(image), self.max_image_pixels)
        elif image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image must be [H, W, 3] (BGR) or [H, W] uint8, got {image.dtype} "
                             f"{list(image.shape)}")
        if not isinstance(report, str):
            raise TypeError(f"a report must be a str, got {type(report).__name__}")
        height, width = image.shape[:2]
        odd = odd_shape_reason(width, height)
        if odd:
            logger.warning("%s %s; it is stretched to %d x %d pixels for the model", name, odd, self.config.img_size,
                           self.config.img_size)
        self._warn_about(report)
        size = self.config.img_size
        tensor = image_to_tensor(to_model_size(image, size))[None]
        tokens = self.tokenizer([report])
        out = self.outputs(tensor, tokens.tokens, tokens.text_mask, return_weights=True)
        small = torch.sigmoid(out["logits"][0, 0]).cpu().numpy()
        # Full size: one float32 map and a uint8 mask; no further full-size copies.
        probability = probability_to_full_size(small, width, height)
        mask = np.greater(probability, 0.5).view(np.uint8)
        words = self.tokenizer.report_token_strings(tokens.tokens[0], report)
        grid = size // 16
        interest = "word_weights" in out  # only a network with interest maps returns them
        return Prediction(image=image, probability=probability, mask=mask, report=report, words=words,
                          word_weights=out["word_weights"][0, 1:1 + len(words)].cpu().numpy() if interest else None,
                          patch_weights=out["patch_weights"][0].reshape(grid, grid).cpu().numpy() if interest
                          else None)

    def _warn_about(self, report: str) -> None:
        """Log what looks wrong with ``report`` (:func:`utils.data.reports.report_concerns`, and a cut to
        ``token_len``), once per distinct report."""
        if report in self._warned_reports:
            return
        self._warned_reports.add(report)
        concerns = report_concerns(report)
        if report.strip() and build_tokenizer(self.config, pad_short_reports=False)([report]).truncated[0]:
            concerns.append(f"it is longer than token_len={self.config.token_len} tokens: the model reads only its "
                            "first words")
        for concern in concerns:
            logger.warning("report %r: %s", report[:80] + ("..." if len(report) > 80 else ""), concern)
