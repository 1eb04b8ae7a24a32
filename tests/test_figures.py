"""Pictures that show what they claim: flat interest maps look flat, padding is not drawn as words, one-epoch
curves are visible, TensorBoard columns are named."""

import matplotlib
import numpy as np
import pytest

from utils.data.tokenizer import ReportTokenizer
from utils.inference.figures import (
    column_header,
    draw_case,
    draw_curves,
    heat_scale,
    patch_heatmap,
    relative_patch_weights,
)

matplotlib.use("Agg")


def _grey(size=64):
    return np.full((size, size, 3), 100, np.uint8)


def test_a_nearly_flat_patch_map_is_drawn_flat():
    rng = np.random.default_rng(0)
    weights = np.full((4, 4), 1 / 16) * (1 + 0.0006 * rng.random((4, 4)))  # max/min about 1.0006, as reported
    weights /= weights.sum()
    picture = patch_heatmap(_grey(), weights).astype(int)
    assert np.ptp(picture.reshape(-1, 3), axis=0).max() <= 2  # one even colour, not a min-max rainbow
    assert relative_patch_weights(weights).mean() == pytest.approx(1.0, abs=1e-6)
    assert heat_scale(relative_patch_weights(weights)) == 2.0  # uniform sits mid-scale


def test_a_peaked_patch_map_shows_its_peak_and_gaps():
    weights = np.zeros((4, 4))
    weights[0, 3] = 1.0
    relative = relative_patch_weights(weights)
    assert relative[0, 3] == 16 and heat_scale(relative) == 16
    picture = patch_heatmap(_grey(), weights)
    assert not np.array_equal(picture[0, 63], picture[63, 0])


def test_words_of_interest_leave_out_the_authors_padding():
    tokenizer = ReportTokenizer(18, pad_short_reports=True)
    tokens = tokenizer(["No infection."]).tokens[0]
    assert "xxx" in tokenizer.token_strings(tokens)  # " EOF XXX" padding is in the tokens the model reads ...
    assert tokenizer.report_token_strings(tokens, "No infection.") == ["no", "infection", "."]  # ... not drawn


def test_case_figure_with_tiny_word_weights_and_a_flat_map(tmp_path):
    path = tmp_path / "case.png"
    draw_case(str(path), _grey(), np.zeros((64, 64), np.float32), "No infection.", ["no", "infection", "."],
              np.array([1e-9, 2e-9, 1e-9]), np.full((4, 4), 1 / 16), truth=np.zeros((64, 64), bool), dice=0.0)
    assert path.stat().st_size > 0


def test_curves_draw_a_single_epoch_with_markers_labels_and_whole_epoch_ticks(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    calls, labels = [], []
    real_plot, real_ylabel = Axes.plot, Axes.set_ylabel
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: calls.append(a) or real_plot(self, *a, **k))
    monkeypatch.setattr(Axes, "set_ylabel", lambda self, text, **k: labels.append(text) or real_ylabel(self, text, **k))
    epoch = {"epoch": 1, "lr": 1e-3, "train": {"total": 2.0, "seg": 1.0, "dice": 0.4, "iou": 0.3},
             "val": {"loss": 2.1, "dice": 0.5, "iou": 0.4, "dice_shuffled": 0.3, "text_gain": 0.2}}
    draw_curves(str(tmp_path / "c.png"), [epoch])
    assert calls and all(isinstance(a[-1], str) and set(a[-1]) & set("os") for a in calls)  # a lone point shows
    assert len(labels) == 4 and all(labels)


def test_tensorboard_grid_header_names_each_column():
    header = column_header(["input", "truth", "prediction"], 32)
    assert header.shape == (3, 14, 96) and 0 <= header.min() and header.max() <= 1
    for column in range(3):  # text in every column
        assert header[0, :, column * 32:(column + 1) * 32].max() > 0.5
