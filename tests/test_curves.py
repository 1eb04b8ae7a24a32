"""A session's training pictures: one-epoch curves are visible, drawing them frees the caller, TensorBoard columns
are named."""

import os
import subprocess
import sys

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg

from utils.curves import column_header, curves_figure, draw_curves

matplotlib.use("Agg")


def _loss_labels(fig):
    """The tick labels in view on the (log-scale) loss axis of a drawn curves figure, bottom to top."""
    losses = fig.axes[0]
    low, high = losses.get_ylim()
    ticks = losses.yaxis.get_majorticklabels() + losses.yaxis.get_minorticklabels()
    return [t.get_text() for t in sorted(ticks, key=lambda t: t.get_position()[1])
            if low <= t.get_position()[1] <= high and t.get_text()]


def test_curves_draw_a_single_epoch_with_markers_labels_and_whole_epoch_ticks(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    calls = []
    real_plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: calls.append(a) or real_plot(self, *a, **k))
    epoch = {"epoch": 1, "lr": 1e-3, "train": {"total": 2.0, "seg": 1.0, "dice": 0.4, "iou": 0.3},
             "val": {"loss": 2.1, "dice": 0.5, "iou": 0.4, "dice_shuffled": 0.3, "text_gain": 0.2}}
    fig = curves_figure([epoch])
    FigureCanvasAgg(fig).draw()
    assert calls and all(isinstance(a[-1], str) and set(a[-1]) & set("os") for a in calls)  # a lone point shows
    assert len(fig.axes) == 4 and all(axis.get_ylabel() for axis in fig.axes)
    for axis in fig.axes:
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]
        assert ticks == [1.0], axis.get_title()  # the one epoch, no 0.95, 0.975, ...
    assert _loss_labels(fig) == ["1", "2"]  # under one decade (1.0 to 2.1): plain labels, no mathtext
    over_decades = curves_figure([dict(epoch, val=dict(epoch["val"], loss=0.05)),
                                  dict(epoch, epoch=2, train=dict(epoch["train"], total=30.0))])
    FigureCanvasAgg(over_decades).draw()
    assert _loss_labels(over_decades) == ["0.1", "1", "10"]
    draw_curves(str(tmp_path / "c.png"), [epoch])
    assert (tmp_path / "c.png").stat().st_size > 0


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLER_OUTLIVES_DRAWING = """
import gc, sys, weakref
from utils.curves import draw_curves
class Trainer: pass
def run(path):
    trainer = Trainer()
    epoch = {"epoch": 1, "lr": 1e-3, "train": {"total": 2.0, "dice": 0.4, "iou": 0.3},
             "val": {"loss": 0.05, "dice": 0.5, "iou": 0.4}}
    draw_curves(path, [epoch, dict(epoch, epoch=2, val=dict(epoch["val"], loss=30.0))])
    return weakref.ref(trainer)
gc.disable()
alive = run(sys.argv[1])() is not None
print("alive" if alive else "freed")
"""


def test_drawing_the_curves_leaves_no_cycle_that_keeps_the_caller_alive(tmp_path):
    """Training draws the curves at its end, on rank 0; a reference cycle through the caller's frames (mathtext
    tick labels raise and catch exceptions while parsing) kept the DDP trainer and its process group alive until
    interpreter exit. A fresh interpreter, because mathtext caches what it parsed."""
    done = subprocess.run([sys.executable, "-c", CALLER_OUTLIVES_DRAWING, str(tmp_path / "c.png")], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "freed"


def test_tensorboard_grid_header_names_each_column():
    header = column_header(["input", "truth", "prediction"], 32)
    assert header.shape == (3, 14, 96) and 0 <= header.min() and header.max() <= 1
    for column in range(3):  # text in every column
        assert header[0, :, column * 32:(column + 1) * 32].max() > 0.5
