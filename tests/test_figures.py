"""Pictures of predictions that show what they claim: flat interest maps look flat, padding is not drawn as
words."""


import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from utils.data.tokenizer import ReportTokenizer
from utils.inference.figures import (
    case_figure,
    draw_case,
    heat_scale,
    relative_patch_weights,
)

matplotlib.use("Agg")


def _grey(size=64):
    return np.full((size, size, 3), 100, np.uint8)


def _case(patch_weights, word_weights=(0.5, 0.2, 0.1)):
    """The drawn case figure of a 3-word report; its patches-of-interest axes and its words-of-interest axes."""
    fig = case_figure(_grey(), np.zeros((64, 64), np.float32), "No infection.", ["no", "infection", "."],
                      np.array(word_weights), patch_weights, truth=np.zeros((64, 64), bool), dice=0.0)
    FigureCanvasAgg(fig).draw()
    patches = next(axis for axis in fig.axes if axis.get_title().startswith("patches of interest"))
    bars = next(axis for axis in fig.axes if axis.get_ylabel() == "words of interest")
    return fig, patches, bars


def test_a_nearly_flat_patch_map_is_drawn_flat_with_a_colour_bar():
    rng = np.random.default_rng(0)
    weights = np.full((4, 4), 1 / 16) * (1 + 0.0006 * rng.random((4, 4)))  # max/min about 1.0006, as reported
    weights /= weights.sum()
    assert relative_patch_weights(weights).mean() == pytest.approx(1.0, abs=1e-6)
    fig, patches, _ = _case(weights)
    assert "flat" in patches.get_title()
    heat = patches.get_images()[-1]
    assert heat.get_clim() == (0, 2.0)  # a fixed scale from 0 to twice uniform, not the map's min to max
    shown = heat.to_rgba(heat.get_array())[..., :3]
    assert np.ptp(shown.reshape(-1, 3), axis=0).max() < 0.05  # one colour, give or take a step of the map
    assert any(axis.get_ylabel() == "weight / uniform" for axis in fig.axes)  # the colour bar


def test_a_peaked_patch_map_shows_its_peak_on_a_scale_to_its_maximum():
    weights = np.zeros((4, 4))
    weights[0, 3] = 1.0
    relative = relative_patch_weights(weights)
    assert relative[0, 3] == 16 and heat_scale(relative) == 16
    _, patches, _ = _case(weights)
    assert "flat" not in patches.get_title() and patches.get_images()[-1].get_clim() == (0, 16.0)


def test_word_bars_scale_to_the_weights_without_an_offset_and_sit_below_the_images():
    _, patches, bars = _case(np.full((4, 4), 1 / 16), word_weights=(1e-9, 2e-9, 1e-9))
    assert bars.get_ylim() == pytest.approx((0, 1.15 / 3))  # at least the uniform line, not autoscaled to 1e-9
    assert bars.yaxis.get_offset_text().get_text() == ""  # no "1e-8" floating over the images
    assert [label.get_text() for label in bars.get_xticklabels()] == ["no", "infection", "."]
    renderer = bars.figure.canvas.get_renderer()
    gap = patches.get_window_extent(renderer).y0 - bars.title.get_window_extent(renderer).y1
    assert gap > 40  # pixels between the bar panel's title and the image row


def test_words_of_interest_leave_out_the_authors_padding():
    tokenizer = ReportTokenizer(18, pad_short_reports=True)
    tokens = tokenizer(["No infection."]).tokens[0]
    assert "xxx" in tokenizer.token_strings(tokens)  # " EOF XXX" padding is in the tokens the model reads ...
    assert tokenizer.report_token_strings(tokens, "No infection.") == ["no", "infection", "."]  # ... not drawn


def test_draw_case_writes_the_png(tmp_path):
    path = tmp_path / "case.png"
    draw_case(str(path), _grey(), np.zeros((64, 64), np.float32), "No infection.", ["no", "infection", "."],
              np.array([1e-9, 2e-9, 1e-9]), np.full((4, 4), 1 / 16), truth=np.zeros((64, 64), bool), dice=0.0)
    assert path.stat().st_size > 0


def test_a_network_without_interest_maps_gets_the_prediction_panels_only():
    fig = case_figure(_grey(), np.zeros((64, 64), np.float32), "No infection.", ["no", "infection", "."], None, None,
                      truth=np.zeros((64, 64), bool), dice=0.0)
    FigureCanvasAgg(fig).draw()
    titles = [axis.get_title() for axis in fig.axes]
    assert titles == ["input", "ground truth", "prediction (Dice 0.000)", "probability"]
    assert not any(axis.get_ylabel() == "words of interest" for axis in fig.axes)
