"""Training augmentation of the authors' pipeline (docs/QUIRKS.md, A5), on uint8 arrays, with an explicit RNG.

Order, as in the authors' ``RandomGenerator`` path:

1. Gaussian blur, p = 0.5 per image. ``blur_mode="rows"`` reproduces the authors' ``BioMedicalGaussianBlur``: it
   takes the ``[H, W, 3]`` image for channel-first data, so it walks the image *rows* and blurs each row (p = 0.5)
   over its width and its 3 colour values with sigmas ~ U(0.5, 1.0) drawn anew per row. ``blur_mode="2d"`` is the
   blur that was meant: one sigma ~ U(0.5, 1.0) over height and width, colours kept apart.
2. Photometric distortion (mmseg's ``PhotoMetricDistortion`` defaults): brightness, contrast (before or after the
   colour steps, 50/50), saturation and hue, each with p = 0.5.
3. Geometry, applied to image and mask alike. ``geometry="authors"`` (the default): with p = 0.5 a ``rot90`` by
   k in {0..3} then a flip along a random axis; otherwise with p = 0.5 (0.25 overall) a rotation by an integer
   angle in [-20, 19] degrees, nearest neighbour, same size, zero fill; otherwise nothing. The report is left as
   it was, so "upper left" is wrong for about half of the turned and mirrored samples.
   ``geometry="report"``: the same branches, but the first draws only what the report's words can follow, a
   left-right mirror, an up-down mirror or both (a 180-degree turn), and the report's position words are mirrored
   with it (:func:`utils.data.reports.mirror_report`); 90-degree turns are never drawn. ``geometry="none"``: no
   geometric change.

Every random draw comes from the ``numpy.random.Generator`` passed in, never from a global RNG, so a caller that
seeds the generator repeats the augmentation exactly (see ``Load_Dataset.py`` for how the generators are seeded).
Images are ``[H, W, 3]`` uint8 (BGR), masks ``[H, W]`` uint8 in {0, 1}; every function returns new arrays.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
import torch
from scipy import ndimage

from utils.config import GEOMETRIES
from utils.data.reports import mirror_report

BLUR_MODES = ("rows", "2d")
SIGMA_RANGE = (0.5, 1.0)
GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage's default kernel radius, in sigmas, which the authors' blur uses


def gaussian_blur_rows(image: np.ndarray, rng: np.random.Generator, prob: float = 0.5, row_prob: float = 0.5,
                       sigma_range: Tuple[float, float] = SIGMA_RANGE) -> np.ndarray:
    """The authors' blur, quirk included: each image row is blurred on its own, over width and colour.

    The result is ``scipy.ndimage.gaussian_filter(row, sigma=(width sigma, colour sigma))`` of each blurred row,
    as the authors call it, bit for bit; the rows are filtered together (:func:`_blur_lines`).

    Args:
        image: ``[H, W, 3]`` uint8.
        rng: the random source.
        prob: probability that the image is blurred at all.
        row_prob: probability, per row, that the row is blurred.
        sigma_range: each blurred row draws one sigma for its width axis and one for its colour axis.

    Returns:
        ``[H, W, 3]`` uint8; rows are never mixed with each other.

    Raises:
        ValueError: a sigma range that reaches 0 or below (scipy would skip such an axis; a kernel cannot be made).
    """
    if min(sigma_range) <= 0:
        raise ValueError(f"sigma_range must be above 0, got {sigma_range}")
    out = image.copy()
    if rng.random() >= prob:
        return out
    rows, sigmas = [], []
    for row in range(out.shape[0]):  # the draws interleave: one per row, two more for a blurred row
        if rng.random() < row_prob:
            rows.append(row)
            sigmas.append(rng.uniform(sigma_range[0], sigma_range[1], size=2))
    if rows:
        sigmas = np.asarray(sigmas)
        # Width first, then colour; uint8 (truncating) in between and at the end, as scipy's uint8 output does.
        lines = _blur_lines(out[rows].transpose(0, 2, 1), sigmas[:, 0]).transpose(0, 2, 1)
        out[rows] = _blur_lines(lines, sigmas[:, 1])
    return out


def _gaussian_half_kernels(sigmas: np.ndarray) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian kernels (radius ``int(4 sigma + 0.5)``, normalised to sum 1), one per sigma,
    computed as scipy computes them: ``[N, R + 1]``, the centre weight then the weights at distance 1..R, zero beyond
    a kernel's own radius."""
    radius = (GAUSSIAN_TRUNCATE * sigmas + 0.5).astype(np.int64)
    half = np.zeros((len(sigmas), int(radius.max()) + 1))
    for r in np.unique(radius):
        rows = radius == r
        x = np.arange(-r, r + 1)
        phi = np.exp((-0.5 / (sigmas[rows] * sigmas[rows]))[:, None] * x ** 2)
        half[rows, : r + 1] = (phi / phi.sum(axis=1, keepdims=True))[:, r:]
    return half


def _blur_lines(lines: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d`` of uint8 lines along the last axis, one sigma per first index, with
    scipy's arithmetic: float64, mode ``reflect``, centre term first, then the symmetric pairs from the outermost in,
    truncated to uint8. A zero weight beyond a kernel's radius adds exactly 0.

    Args:
        lines: ``[N, ..., L]`` uint8.
        sigmas: ``[N]``.
    """
    half = _gaussian_half_kernels(sigmas)
    pad, length = half.shape[1] - 1, lines.shape[-1]
    index = np.mod(np.arange(-pad, length + pad), 2 * length)  # reflect: d c b a | a b c d | d c b a, repeated
    extended = lines.astype(np.float64)[..., np.where(index >= length, 2 * length - 1 - index, index)]
    weights = half.reshape(half.shape[:1] + (1,) * (lines.ndim - 2) + half.shape[1:])
    out = extended[..., pad : pad + length] * weights[..., :1]
    for j in range(pad, 0, -1):
        pair = extended[..., pad - j : pad - j + length] + extended[..., pad + j : pad + j + length]
        out += pair * weights[..., j : j + 1]
    return out.astype(np.uint8)


def gaussian_blur_2d(image: np.ndarray, rng: np.random.Generator, prob: float = 0.5,
                     sigma_range: Tuple[float, float] = SIGMA_RANGE) -> np.ndarray:
    """A true 2-D Gaussian blur: one sigma over height and width, each colour channel blurred on its own.

    Args:
        image: ``[H, W, 3]`` uint8.
        rng: the random source.
        prob: probability that the image is blurred.
        sigma_range: range of the sigma, in pixels.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    if rng.random() >= prob:
        return image.copy()
    sigma = rng.uniform(sigma_range[0], sigma_range[1])
    # In float and rounded: scipy's uint8 output truncates, darkening flat areas by up to one level.
    blurred = ndimage.gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0.0), order=0)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def _affine(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``image * alpha + beta``, clipped to [0, 255] and truncated back to uint8 (mmseg's ``convert``)."""
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range: Tuple[float, float] = (0.5, 1.5),
                           saturation_range: Tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """Random brightness, contrast, saturation and hue (mmseg's ``PhotoMetricDistortion`` with its defaults).

    Args:
        image: ``[H, W, 3]`` uint8, BGR.
        rng: the random source.
        brightness_delta: ``beta ~ U(-delta, delta)`` is added.
        contrast_range: ``alpha ~ U(range)`` multiplies.
        saturation_range: the HSV saturation is multiplied by ``U(range)``.
        hue_delta: the HSV hue (0..179) is shifted by an integer in ``[-delta, delta - 1]``, modulo 180.

    Returns:
        ``[H, W, 3]`` uint8. On grey images the saturation and hue steps change (almost) nothing.
    """
    out = image
    if rng.integers(2):
        out = _affine(out, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = rng.integers(2) == 1
    if contrast_first and rng.integers(2):
        out = _affine(out, alpha=rng.uniform(*contrast_range))
    if rng.integers(2):
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = _affine(hsv[:, :, 1], alpha=rng.uniform(*saturation_range))
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        shift = int(rng.integers(-hue_delta, hue_delta))
        hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not contrast_first and rng.integers(2):
        out = _affine(out, alpha=rng.uniform(*contrast_range))
    return out.copy() if out is image else out


def random_rot_flip(image: np.ndarray, mask: np.ndarray,
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate image and mask by ``k * 90`` degrees (k in {0..3}), then flip both along axis 0 or 1.

    Returns:
        The image ``[H', W', 3]`` and mask ``[H', W']`` (H and W swap for odd k), contiguous.
    """
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    image = np.flip(np.rot90(image, k, axes=(0, 1)), axis=axis)
    mask = np.flip(np.rot90(mask, k, axes=(0, 1)), axis=axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def random_rotate(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  max_angle: int = 20) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate image and mask by the same integer angle in ``[-max_angle, max_angle - 1]`` degrees.

    Nearest-neighbour, same size, zero fill outside (``scipy.ndimage.rotate(order=0, reshape=False)``), so the
    mask stays binary and aligned with the image.
    """
    angle = int(rng.integers(-max_angle, max_angle))
    image = ndimage.rotate(image, angle, axes=(1, 0), order=0, reshape=False, mode="constant", cval=0)
    mask = ndimage.rotate(mask, angle, axes=(1, 0), order=0, reshape=False, mode="constant", cval=0)
    return image, mask


def random_geometry(image: np.ndarray, mask: np.ndarray,
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """The authors' branch: rot90 + flip with p = 0.5, else a small rotation with p = 0.5, else nothing."""
    if rng.random() > 0.5:
        return random_rot_flip(image, mask, rng)
    if rng.random() < 0.5:
        return random_rotate(image, mask, rng)
    return image.copy(), mask.copy()


def report_geometry(image: np.ndarray, mask: np.ndarray, report: str,
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    """The authors' branches with only the changes a report can follow, applied to image, mask and report.

    With p = 0.5 one of three mirrors, each with p = 1/3: left-right, up-down, or both (a 180-degree turn); the
    report's position words are mirrored alike. Otherwise with p = 0.5 a small rotation (the report stays true);
    otherwise nothing.

    Returns:
        The image ``[S, S, 3]``, the mask ``[S, S]`` (contiguous) and the report as it reads for them.
    """
    if rng.random() > 0.5:
        kind = int(rng.integers(0, 3))  # 0: left-right, 1: up-down, 2: both
        left_right, up_down = kind in (0, 2), kind in (1, 2)
        axes = tuple(axis for axis, flip in ((1, left_right), (0, up_down)) if flip)
        image = np.ascontiguousarray(np.flip(image, axis=axes))
        mask = np.ascontiguousarray(np.flip(mask, axis=axes))
        return image, mask, mirror_report(report, left_right, up_down)
    if rng.random() < 0.5:
        image, mask = random_rotate(image, mask, rng)
        return image, mask, report
    return image.copy(), mask.copy(), report


def train_augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, blur_mode: str = "rows",
                  geometry: str = "authors", report: str = "") -> Tuple[np.ndarray, np.ndarray, str]:
    """The whole training augmentation: blur, photometric distortion, then the joint geometry.

    Args:
        image: ``[S, S, 3]`` uint8 BGR, already resized.
        mask: ``[S, S]`` uint8 in {0, 1}, already resized and binarised.
        rng: the random source.
        blur_mode: ``"rows"`` (the authors' quirk) or ``"2d"``.
        geometry: ``"authors"``, ``"report"`` or ``"none"`` (see the module's docstring).
        report: the sample's report; only ``geometry="report"`` changes it.

    Returns:
        The augmented image ``[S, S, 3]`` uint8, mask ``[S, S]`` uint8 in {0, 1} (square inputs stay square) and
        the report that describes them. With ``geometry="authors"`` the random draws, and so the image and mask,
        are exactly those of the authors' pipeline.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    if blur_mode == "rows":
        image = gaussian_blur_rows(image, rng)
    elif blur_mode == "2d":
        image = gaussian_blur_2d(image, rng)
    else:
        raise ValueError(f"blur_mode must be one of {BLUR_MODES}, got {blur_mode!r}")
    image = photometric_distortion(image, rng)
    if geometry == "report":
        return report_geometry(image, mask, report, rng)
    if geometry == "none":
        return image, mask.copy(), report
    image, mask = random_geometry(image, mask, rng)
    return image, mask, report


def to_model_size(image: np.ndarray, size: int) -> np.ndarray:
    """An image ``[H, W, 3]`` resized bilinearly to ``[size, size, 3]``: how training, testing and predicting all
    bring an image to the model."""
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def mask_to_model_size(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask ``[H, W]`` (0/255 as the PNGs hold, or any values with 0 as background) resized bilinearly to
    ``[size, size]``, then ``> 0``: ``uint8`` in {0, 1}, as the authors. A downsampled mask grows by up to a pixel
    at its edges (a blended edge pixel counts as foreground)."""
    return (cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR) > 0).astype(np.uint8)


def probability_to_full_size(probability: np.ndarray, width: int, height: int) -> np.ndarray:
    """A model-size probability map ``[S, S]`` resized bilinearly to ``[height, width]`` and clipped to [0, 1], in
    one float32 array (no further full-size copies): how ``predict`` and ``test --save_pred`` return to the
    image's own size; ``> 0.5`` of it is the mask."""
    full = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
    np.clip(full, 0, 1, out=full)
    return full


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 (BGR, as the data sets are read) to the network's ``[3, H, W]`` float32 in [0, 1]."""
    # A new float32 array (the input may be a read-only cached one): the same values as converting the uint8 tensor.
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)).div_(255.0)
