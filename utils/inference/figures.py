"""Pictures of predictions: overlays, the patches-of-interest heat map and the words-of-interest bars.

The words and patches of interest are the paper's interpretability claim: RecLMIS weighs each report token
(``word_weights``, a softmax over the real tokens) and each bottleneck patch (``patch_weights``, a softmax over the
``G x G`` patches); the reconstruction heads mask the heaviest ones. :func:`draw_case` shows both beside the
prediction.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure  # no pyplot: drawing changes no global backend or figure state

TP, FP, FN = (0, 200, 0), (255, 80, 0), (0, 0, 255)  # BGR: green, blue, red


def overlay(image_bgr: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """TP green, FP blue, FN red over the image (BGR uint8)."""
    out = image_bgr.copy()
    colours = {(True, True): TP, (False, True): FP, (True, False): FN}
    for (t, p), colour in colours.items():
        where = (truth.astype(bool) == t) & (pred.astype(bool) == p)
        out[where] = (0.45 * out[where] + 0.55 * np.array(colour)).astype(np.uint8)
    return out


def mask_overlay(image_bgr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The predicted mask in green over the image, with its outline (BGR uint8)."""
    out = overlay(image_bgr, mask, mask)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    return out


FLAT = 1.05  # a patch map whose largest weight is within 5% of its smallest is called flat


def relative_patch_weights(patch_weights: np.ndarray) -> np.ndarray:
    """Each patch's weight over the uniform weight ``1 / (G * G)``: 1 everywhere for a flat map, 0 where the
    model looks away, ``G * G`` where all the weight sits on one patch."""
    return patch_weights.astype(np.float32) * patch_weights.size


def heat_scale(relative: np.ndarray) -> float:
    """The top of the patches-of-interest colour scale, which starts at 0: at least 2 (twice uniform), so a flat
    map (all 1) sits mid-scale in one colour instead of being stretched into a rainbow."""
    return max(2.0, float(relative.max()))


DISPLAY_SIDE = 640  # the longest side a figure panel is drawn from (a panel is about 300 pixels wide)


def _for_display(image: np.ndarray, probability: np.ndarray, truth: Optional[np.ndarray]):
    """The pictures of a case shrunk to at most ``DISPLAY_SIDE`` on the longer side (unchanged when smaller)."""
    height, width = image.shape[:2]
    scale = DISPLAY_SIDE / max(height, width)
    if scale >= 1:
        return image, probability, truth
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrink = functools.partial(cv2.resize, dsize=size, interpolation=cv2.INTER_AREA)
    small_truth = None if truth is None else cv2.resize(truth.astype(np.uint8, copy=False), size,
                                                        interpolation=cv2.INTER_NEAREST)
    return shrink(image), shrink(probability), small_truth


def draw_case(path: str, *args, **kwargs) -> None:
    """Write :func:`case_figure` ``(*args, **kwargs)`` to ``path`` (PNG)."""
    case_figure(*args, **kwargs).savefig(path, dpi=100)


def case_figure(image_bgr: np.ndarray, probability: np.ndarray, report: str, words: Sequence[str],
                word_weights: Optional[np.ndarray], patch_weights: Optional[np.ndarray],
                truth: Optional[np.ndarray] = None, dice: Optional[float] = None) -> Figure:
    """One figure: the input, the prediction (against the ground truth when given), the probability map, the
    patches of interest on a fixed scale with its colour bar, and a bar per report word (its words-of-interest
    weight) under the report.

    Args:
        image_bgr: ``[H, W, 3]`` uint8; probability, truth: ``[H, W]`` at the same size.
        words: the report's own tokens, without the " EOF XXX" padding
            (:meth:`utils.data.tokenizer.ReportTokenizer.report_token_strings`); word_weights: one per word (the rest of
            the weight, on the start, end and padding tokens, is named in the bar panel's label).
        patch_weights: ``[G, G]``, summing to 1. Both None for a network without interest maps (the peers): the
            figure then has the input, prediction and probability panels only.

    Pictures larger than ``DISPLAY_SIDE`` on a side are shrunk first: a panel is a few hundred pixels wide, and
    full-size copies of a large scan would cost memory for nothing.
    """
    image_bgr, probability, truth = _for_display(image_bgr, probability, truth)
    mask = probability > 0.5
    if truth is not None:
        panels = [("input", image_bgr), ("ground truth", overlay(image_bgr, truth, truth)),
                  (f"prediction (Dice {dice:.3f})" if dice is not None else "prediction",
                   overlay(image_bgr, truth, mask))]
    else:
        panels = [("input", image_bgr), ("prediction", mask_overlay(image_bgr, mask))]
    panels.append(("probability", None))
    interest = word_weights is not None and patch_weights is not None
    if interest:
        spread = float(patch_weights.max()) / max(float(patch_weights.min()), 1e-12)
        relative = relative_patch_weights(patch_weights)
        flat = " - flat" if spread < FLAT else ""
        panels.append((f"patches of interest{flat}\n(max/min {spread:.4f})", "patches"))
    fig = Figure(figsize=(3 * len(panels) + 0.6, 5.8 if interest else 4.2))
    grid = fig.add_gridspec(2 if interest else 1, len(panels), height_ratios=[3, 1.3] if interest else [1],
                            hspace=0.45)
    for column, (title, picture) in enumerate(panels):
        axis = fig.add_subplot(grid[0, column])
        if picture is None:
            axis.imshow(probability, cmap="magma", vmin=0, vmax=1)
        elif isinstance(picture, str):  # "patches": drawn here, on its fixed scale
            h, w = image_bgr.shape[:2]
            axis.imshow(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
            shown = axis.imshow(relative, cmap="jet", vmin=0, vmax=heat_scale(relative), alpha=0.45,
                                extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
            bar = fig.colorbar(shown, ax=axis, fraction=0.046, pad=0.03)
            bar.set_label("weight / uniform", fontsize=7)
            bar.ax.tick_params(labelsize=6)
        else:
            axis.imshow(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    caption = report if truth is None else f"{report}\nprediction: TP green, FP blue, FN red"
    fig.suptitle(caption, fontsize=8, wrap=True, y=0.995)
    if not interest:
        fig.subplots_adjust(left=0.03, right=0.97, top=0.8, bottom=0.03)
        return fig
    bars = fig.add_subplot(grid[1, :])
    positions = np.arange(len(words))
    word_weights = np.asarray(word_weights, dtype=np.float64)[:len(words)]
    uniform = 1.0 / max(len(words), 1)
    top = max(float(word_weights.max()) if word_weights.size else 0.0, uniform)
    bars.bar(positions, word_weights, color=colormaps["Reds"](0.35 + 0.65 * word_weights / top))
    bars.axhline(uniform, color="grey", lw=0.8, ls="--")
    bars.set_ylim(0, 1.15 * top)  # never autoscaled to a 1e-8 offset
    bars.set_xticks(positions, list(words), rotation=60, fontsize=7)
    bars.set_xlim(-0.6, max(len(words), 1) - 0.4)
    rest = 1.0 - float(word_weights.sum())
    bars.set_ylabel("words of interest", fontsize=8)
    bars.set_title(f"words of interest (dashed: uniform over the words; {rest:.1%} of the weight on the start, end "
                   "and padding tokens)", fontsize=8)
    bars.tick_params(axis="y", labelsize=7)
    fig.subplots_adjust(left=0.05, right=0.96, top=0.86, bottom=0.14)  # tight_layout cannot place the colour bar
    return fig
