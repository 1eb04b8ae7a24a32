"""Metrics: the authors' test and validation protocols, the pooled protocol, empty masks; the NaN guard."""

import pytest
import torch

from tests.tiny import tiny_config
from utils.metrics import SegmentationMeter, binarize
from utils.training.engine import NonFiniteLossError, train_one_epoch
from utils.training.losses import RecLMISCriterion


def _logits(pred):
    return torch.where(torch.tensor(pred, dtype=torch.bool), 5.0, -5.0)[:, None]


def test_paper_protocol_known_values_and_empty_counts_zero():
    pred = _logits([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    truth = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    meter = SegmentationMeter(strict=True, dice="paper")
    scores = meter.update(pred, truth)
    assert scores["dice"][0].item() == pytest.approx(2 / (3 + 1e-5))
    assert scores["iou"][0].item() == pytest.approx(0.5)
    assert scores["dice"][1].item() == 0 and scores["iou"][1].item() == 0  # empty/empty counts 0
    result = meter.compute()
    assert result["dice"] == pytest.approx((2 / (3 + 1e-5)) / 2)
    assert result["dice_pooled"] == pytest.approx(2 / 3) and result["iou_pooled"] == pytest.approx(0.5)


def test_validation_protocol_counts_empty_as_one():
    meter = SegmentationMeter(strict=False, dice="validation")
    scores = meter.update(_logits([[[0, 0], [0, 0]]]), torch.zeros(1, 2, 2, dtype=torch.long))
    assert scores["dice"][0].item() == pytest.approx(1.0)


def test_thresholds_differ_only_at_exactly_one_half():
    logits = torch.tensor([0.0, 0.1, -0.1])
    assert binarize(logits, strict=True).tolist() == [False, True, False]
    assert binarize(logits, strict=False).tolist() == [True, True, False]


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="do not match"):
        SegmentationMeter().update(torch.zeros(2, 1, 2, 2), torch.zeros(2, 3, 3))


class _NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float("nan")))

    def forward(self, images, tokens, mask):
        return {"logits": images[:, :1] * self.scale}


def test_non_finite_loss_stops_with_epoch_batch_images_and_terms():
    batch = {"image": torch.rand(2, 3, 4, 4), "label": torch.zeros(2, 4, 4, dtype=torch.long),
             "text_token": torch.zeros(2, 3, dtype=torch.long), "text_mask": torch.ones(2, 3, dtype=torch.long),
             "text": ["a", "b"], "name": ["x.png", "y.png"]}
    model = _NaNModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as error:
        train_one_epoch(model, RecLMISCriterion(tiny_config()), [batch], optimizer, torch.device("cpu"), 7,
                        progress=False)
    message = str(error.value)
    assert "epoch 7, batch 0" in message and "x.png" in message and "bce=nan" in message
