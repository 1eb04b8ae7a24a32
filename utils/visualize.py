"""Pictures of predictions: overlays, the patches-of-interest heat map and the words-of-interest bars.

The words and patches of interest are the paper's interpretability claim: RecLMIS weighs each report token
(``word_weights``, a softmax over the real tokens) and each bottleneck patch (``patch_weights``, a softmax over the
``G x G`` patches); the reconstruction heads mask the heaviest ones. :func:`draw_case` shows both beside the
prediction.
"""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

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


def patch_heatmap(image_bgr: np.ndarray, patch_weights: np.ndarray) -> np.ndarray:
    """The ``G x G`` patch weights, stretched from their minimum (blue) to their maximum (red) and upsampled, as a
    colour map over the image (BGR). The stretch shows the ranking however flat the weights are: read their
    spread from the figure's title."""
    h, w = image_bgr.shape[:2]
    low, high = float(patch_weights.min()), float(patch_weights.max())
    weights = (patch_weights - low) / max(high - low, 1e-12)
    heat = cv2.resize(weights.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    coloured = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image_bgr, 0.55, coloured, 0.45, 0)


def draw_case(path: str, image_bgr: np.ndarray, probability: np.ndarray, report: str, words: Sequence[str],
              word_weights: np.ndarray, patch_weights: np.ndarray, truth: Optional[np.ndarray] = None,
              dice: Optional[float] = None) -> None:
    """One figure: the input, the prediction (against the ground truth when given), the probability map, the
    patches of interest, and a bar per report token (its words-of-interest weight) under the report.

    Args:
        image_bgr: ``[H, W, 3]`` uint8; probability, truth: ``[H, W]`` at the same size.
        words: the report's tokens (:meth:`nets.tokenizer.ReportTokenizer.token_strings`); word_weights: one per
            word. patch_weights: ``[G, G]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mask = probability > 0.5
    if truth is not None:
        panels = [("input", image_bgr), ("ground truth", overlay(image_bgr, truth, truth)),
                  (f"prediction (Dice {dice:.3f})" if dice is not None else "prediction",
                   overlay(image_bgr, truth, mask))]
    else:
        panels = [("input", image_bgr), ("prediction", mask_overlay(image_bgr, mask))]
    spread = float(patch_weights.max()) / max(float(patch_weights.min()), 1e-12)
    panels += [("probability", None),
               (f"patches of interest (max/min {spread:.4f})", patch_heatmap(image_bgr, patch_weights))]
    fig = plt.figure(figsize=(3 * len(panels), 5.4))
    grid = fig.add_gridspec(2, len(panels), height_ratios=[3, 1.3])
    for column, (title, picture) in enumerate(panels):
        axis = fig.add_subplot(grid[0, column])
        if picture is None:
            axis.imshow(probability, cmap="magma", vmin=0, vmax=1)
        else:
            axis.imshow(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB))
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    bars = fig.add_subplot(grid[1, :])
    positions = np.arange(len(words))
    top = float(word_weights.max()) if word_weights.size else 1.0  # an empty report has no word to weigh
    bars.bar(positions, word_weights, color=plt.cm.Reds(0.35 + 0.65 * word_weights / max(top, 1e-12)))
    bars.set_xticks(positions, list(words), rotation=60, fontsize=7)
    bars.set_xlim(-0.6, max(len(words), 1) - 0.4)
    bars.set_ylabel("words of interest", fontsize=8)
    bars.tick_params(axis="y", labelsize=7)
    caption = report if truth is None else f"{report}\nprediction: TP green, FP blue, FN red"
    fig.suptitle(caption, fontsize=8, wrap=True, y=0.995)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_curves(path: str, epochs: Sequence[dict]) -> None:
    """Training curves: the loss terms, Dice and IoU, the text reliance (validation Dice with shuffled reports and
    the text gain, where logged), and the learning rate per epoch (from :func:`utils.curves.read_epochs`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [e["epoch"] for e in epochs]
    fig, (losses, scores, reading, rates) = plt.subplots(1, 4, figsize=(20, 4))
    for key in ("total", "seg", "ccl", "text_rec", "img_rec"):
        if all(key in e["train"] for e in epochs):
            losses.plot(x, [e["train"][key] for e in epochs], label=f"train {key}")
    losses.plot(x, [e["val"]["loss"] for e in epochs], "k--", label="val total")
    losses.set_title("losses")
    losses.set_yscale("log")
    for split, style in (("train", "-"), ("val", "--")):
        for key, colour in (("dice", "tab:blue"), ("iou", "tab:orange")):
            scores.plot(x, [e[split][key] for e in epochs], style, color=colour, label=f"{split} {key}")
    best = max(epochs, key=lambda e: e["val"]["dice"])
    scores.axvline(best["epoch"], color="grey", lw=0.8)
    scores.set_title(f"Dice and IoU (best val Dice {best['val']['dice']:.4f} at epoch {best['epoch']})")
    scores.set_ylim(0, 1)
    checked = [e for e in epochs if "text_gain" in e["val"]]
    if checked:
        xs = [e["epoch"] for e in checked]
        reading.plot(x, [e["val"]["dice"] for e in epochs], "--", color="tab:blue", label="val dice, true reports")
        reading.plot(xs, [e["val"]["dice_shuffled"] for e in checked], "o-", ms=3, color="tab:red",
                     label="val dice, shuffled reports")
        reading.plot(xs, [e["val"]["text_gain"] for e in checked], "s-", ms=3, color="tab:green",
                     label="text gain (true - shuffled)")
        reading.axhline(0, color="grey", lw=0.8)
        reading.set_title(f"text reliance (last text gain {checked[-1]['val']['text_gain']:+.4f})")
        reading.legend(fontsize=7)
    else:
        reading.set_title("text reliance: not measured (val_text_check_every = 0)")
    rates.plot(x, [e["lr"] for e in epochs])
    rates.set_title("learning rate")
    for axis in (losses, scores, reading, rates):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    losses.legend(fontsize=7)
    scores.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
