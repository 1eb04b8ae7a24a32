"""A session's pictures of training: the training curves drawn from its epochs (``training_curves.png``, from
:func:`utils.sessions.read_epochs`), and the labelled strip above TensorBoard's validation images.

Below both training (which draws the curves at its end) and the tools (``python -m tools.curves``).
"""

from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure  # no pyplot: drawing changes no global backend or figure state
from matplotlib.ticker import LogFormatter, MaxNLocator

from utils.sessions import read_epochs


def column_header(labels: Sequence[str], column_width: int, height: int = 14) -> np.ndarray:
    """A ``[3, height, len(labels) * column_width]`` float strip in [0, 1]: white labels on black, one centred in
    each column, to stack above an image grid (TensorBoard's validation images)."""
    strip = np.zeros((height, column_width * len(labels)), np.uint8)
    scale = min(0.4, 0.9 * column_width / (10 * max(len(label) for label in labels)))
    for i, label in enumerate(labels):
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        origin = (i * column_width + max((column_width - w) // 2, 0), (height + h) // 2)
        cv2.putText(strip, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    return np.repeat(strip[None].astype(np.float32) / 255.0, 3, axis=0)


def draw_curves(path: str, epochs: Sequence[dict]) -> None:
    """Write :func:`curves_figure` of ``epochs`` to ``path`` (PNG)."""
    curves_figure(epochs).savefig(path, dpi=100)


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log-axis ticks to label, written as plain numbers (``0.2``, ``1``, ``10``).

    The default log labels are mathtext (``10^{-1}``), whose parser raises and catches exceptions; their
    tracebacks hold the caller's frames in a reference cycle. Drawn at the end of training, that cycle kept the DDP
    trainer, and its process group, alive after the group was destroyed, on rank 0 only."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def curves_figure(epochs: Sequence[dict]) -> Figure:
    """Training curves: the loss terms, Dice and IoU, the text reliance (validation Dice with shuffled reports and
    the text gain, where logged), and the learning rate per epoch (from :func:`utils.sessions.read_epochs`)."""
    x = [e["epoch"] for e in epochs]
    fig = Figure(figsize=(20, 4))
    losses, scores, reading, rates = fig.subplots(1, 4)
    for key in ("total", "seg", "ccl", "text_rec", "img_rec"):
        if all(key in e["train"] for e in epochs):
            losses.plot(x, [e["train"][key] for e in epochs], "o-", ms=3, label=f"train {key}")
    losses.plot(x, [e["val"]["loss"] for e in epochs], "ko--", ms=3, label="val total")
    losses.set_title("losses")
    losses.set_yscale("log")
    losses.yaxis.set_major_formatter(PlainLogFormatter())
    losses.yaxis.set_minor_formatter(PlainLogFormatter())
    for split, style in (("train", "-"), ("val", "--")):
        for key, colour in (("dice", "tab:blue"), ("iou", "tab:orange")):
            scores.plot(x, [e[split][key] for e in epochs], "o" + style, ms=3, color=colour, label=f"{split} {key}")
    best = max(epochs, key=lambda e: e["val"]["dice"])
    scores.axvline(best["epoch"], color="grey", lw=0.8)
    scores.set_title(f"Dice and IoU (best val Dice {best['val']['dice']:.4f} at epoch {best['epoch']})")
    scores.set_ylim(0, 1)
    checked = [e for e in epochs if "text_gain" in e["val"]]
    if checked:
        xs = [e["epoch"] for e in checked]
        reading.plot(x, [e["val"]["dice"] for e in epochs], "o--", ms=3, color="tab:blue",
                     label="val dice, true reports")
        reading.plot(xs, [e["val"]["dice_shuffled"] for e in checked], "o-", ms=3, color="tab:red",
                     label="val dice, shuffled reports")
        reading.plot(xs, [e["val"]["text_gain"] for e in checked], "s-", ms=3, color="tab:green",
                     label="text gain (true - shuffled)")
        reading.axhline(0, color="grey", lw=0.8)
        reading.set_title(f"text reliance (last text gain {checked[-1]['val']['text_gain']:+.4f})")
        reading.legend(fontsize=7)
    else:
        reading.set_title("text reliance: not measured (val_text_check_every = 0)")
    rates.plot(x, [e["lr"] for e in epochs], "o-", ms=3)
    rates.set_title("learning rate")
    for axis, label in ((losses, "loss (log scale)"), (scores, "score"), (reading, "Dice"),
                        (rates, "learning rate")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs, one epoch too
        axis.grid(alpha=0.3)
    losses.legend(fontsize=7)
    scores.legend(fontsize=7)
    fig.tight_layout()
    return fig


CURVES_NAME = "training_curves.png"


def draw_session_curves(session_dir: str) -> str:
    """Draw ``training_curves.png`` in ``session_dir`` from its epochs (:func:`utils.sessions.read_epochs`);
    returns the PNG's path."""
    path = os.path.join(session_dir, CURVES_NAME)
    draw_curves(path, read_epochs(session_dir))
    return path
