"""Losses on tiny tensors with known answers, the quirk switches, and bad shapes."""

import math

import pytest
import torch

from tests.tiny import tiny_config
from utils.training.losses import (
    RecLMISCriterion,
    SegmentationCriterion,
    balanced_bce,
    build_criterion,
    conditioned_contrastive_loss,
    cross_entropy_diagonal,
    soft_dice_loss,
)


def test_soft_dice_known_value():
    # sigmoid(0) = 0.5, so p = 0.25 everywhere; t = 0.5 on two of four pixels.
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    expected = 1 - (2 * 0.25 + 1e-5) / (0.25 + 0.5 + 1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_is_per_image_then_averaged():
    logits = torch.full((2, 1, 2, 2), 30.0)  # sigmoid = 1: p = 0.5
    target = torch.stack([torch.ones(1, 2, 2), torch.zeros(1, 2, 2)])
    # image 1: perfect -> ~0; image 2: empty target, full prediction -> 1 - 1e-5 / (1 + 1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx((0 + 1 - 1e-5 / (1 + 1e-5)) / 2, abs=1e-6)


def test_cross_entropy_diagonal_known_value():
    assert cross_entropy_diagonal(torch.eye(2)).item() == pytest.approx(math.log(1 + math.exp(-1)))


def _aligned(batch=3, length=4, patches=5, dim=8):
    directions = torch.eye(dim)[:batch]
    text = directions[:, None, :].expand(batch, length, dim).clone()
    image = directions[:, None, :].expand(batch, patches, dim).clone()
    return text, image, torch.ones(batch, length), torch.full((batch, length), 1 / length), \
        torch.full((batch, patches), 1 / patches)


def test_ccl_known_value_for_orthogonal_pairs():
    text, image, mask, ww, pw = _aligned(batch=2)
    # Matched similarity 1, unmatched 0, at scale 1: each direction gives log(1 + e^-1).
    loss = conditioned_contrastive_loss(text, image, mask, ww, pw, torch.tensor(1.0), double_softmax=False)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_ccl_lower_for_matched_pairs_than_shuffled():
    torch.manual_seed(0)
    text, image, mask, ww, pw = _aligned()
    text = text + 0.1 * torch.randn_like(text)
    matched = conditioned_contrastive_loss(text, image, mask, ww, pw, torch.tensor(100.0))
    shuffled = conditioned_contrastive_loss(text, image[[1, 2, 0]], mask, ww, pw, torch.tensor(100.0))
    assert matched < shuffled


def test_ccl_ignores_padded_tokens_similarity():
    text, image, mask, ww, pw = _aligned(batch=2)
    mask[:, -1] = 0
    poisoned = text.clone()
    poisoned[0, -1] = image[1, 0]  # a padded token that matches the other image perfectly
    a = conditioned_contrastive_loss(text, image, mask, ww, pw, torch.tensor(10.0))
    b = conditioned_contrastive_loss(poisoned, image, mask, ww, pw, torch.tensor(10.0))
    assert a.item() == pytest.approx(b.item())


def test_double_softmax_switch_changes_the_weights():
    torch.manual_seed(0)
    text, image = torch.randn(2, 4, 8), torch.randn(2, 5, 8)
    mask = torch.ones(2, 4)
    ww = torch.softmax(torch.randn(2, 4) * 3, -1)
    pw = torch.softmax(torch.randn(2, 5) * 3, -1)
    faithful = conditioned_contrastive_loss(text, image, mask, ww, pw, torch.tensor(100.0), double_softmax=True)
    explicit = conditioned_contrastive_loss(text, image, mask, torch.softmax(ww, -1), torch.softmax(pw, -1),
                                            torch.tensor(100.0), double_softmax=False)
    fixed = conditioned_contrastive_loss(text, image, mask, ww, pw, torch.tensor(100.0), double_softmax=False)
    assert faithful.item() == pytest.approx(explicit.item())
    assert fixed.item() != pytest.approx(faithful.item())


def _outputs(batch=2, length=4, patches=5, dim=8, size=4):
    torch.manual_seed(0)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[:, -1] = 0
    return {"logits": torch.randn(batch, 1, size, size, requires_grad=True),
            "text_feat": torch.randn(batch, length, dim), "img_feat": torch.randn(batch, patches, dim),
            "text_mask": mask, "word_weights": torch.softmax(torch.randn(batch, length), -1),
            "patch_weights": torch.softmax(torch.randn(batch, patches), -1), "logit_scale": torch.tensor(100.0),
            "text_rec": torch.zeros(batch, length, dim), "text_target": torch.ones(batch, length, dim),
            "img_rec": torch.zeros(batch, patches, dim, requires_grad=True),
            "img_target": torch.full((batch, patches, dim), 2.0, requires_grad=True)}


def test_criterion_terms_and_weighted_total():
    config = tiny_config()
    outputs = _outputs()
    outputs["text_target"][:, -1] = 3.0  # padded position: counted by the faithful loss only
    masks = (torch.rand(2, 4, 4) > 0.5).long()
    terms = RecLMISCriterion(config)(outputs, masks)
    assert set(terms) == {"dice", "bce", "seg", "ccl", "text_rec", "img_rec", "total"}
    assert terms["seg"].item() == pytest.approx(0.5 * terms["dice"].item() + 0.5 * terms["bce"].item())
    assert terms["text_rec"].item() == pytest.approx((3 * 1 + 9) / 4)
    assert terms["img_rec"].item() == pytest.approx(4.0)
    expected = 5 * terms["seg"] + 0.2 * terms["ccl"] + terms["text_rec"] + terms["img_rec"]
    assert terms["total"].item() == pytest.approx(expected.item())
    bce = torch.nn.functional.binary_cross_entropy(torch.sigmoid(outputs["logits"]), masks[:, None].float())
    assert terms["bce"].item() == pytest.approx(bce.item(), rel=1e-5)


def test_criterion_without_auxiliary_outputs_is_segmentation_only():
    outputs = {"logits": torch.zeros(2, 1, 4, 4)}
    terms = RecLMISCriterion(tiny_config())(outputs, torch.zeros(2, 4, 4))
    assert set(terms) == {"dice", "bce", "seg", "total"}
    assert terms["total"].item() == pytest.approx(5 * terms["seg"].item())


def test_text_padding_switch_excludes_padded_tokens():
    outputs = _outputs()
    outputs["text_target"][:, -1] = 3.0
    terms = RecLMISCriterion(tiny_config(fix_text_rec_padding=True))(outputs, torch.zeros(2, 4, 4))
    assert terms["text_rec"].item() == pytest.approx(1.0)


def test_detach_switch_stops_gradient_into_the_image_target():
    for fix, expect_grad in ((False, True), (True, False)):
        outputs = _outputs()
        RecLMISCriterion(tiny_config(fix_detach_img_target=fix))(outputs, torch.zeros(2, 4, 4))["img_rec"].backward()
        assert (outputs["img_target"].grad is not None) == expect_grad


def test_bad_shapes_raise_value_error_with_the_shapes():
    with pytest.raises(ValueError, match=r"\[2, 1, 4, 4\] and \[2, 1, 5, 5\]"):
        RecLMISCriterion(tiny_config())({"logits": torch.zeros(2, 1, 4, 4)}, torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match="share B and D"):
        conditioned_contrastive_loss(torch.zeros(2, 4, 8), torch.zeros(2, 5, 6), torch.ones(2, 4),
                                     torch.ones(2, 4), torch.ones(2, 5), torch.tensor(1.0))


def test_balanced_bce_weighs_foreground_and_background_halves_alike():
    # logits 0: BCE = ln 2 on every pixel, whatever the split; a confident right background changes only its half.
    target = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]])
    assert balanced_bce(torch.zeros(1, 1, 1, 4), target).item() == pytest.approx(math.log(2), rel=1e-6)
    logits = torch.tensor([[[[0.0, -30.0, -30.0, -30.0]]]])
    assert balanced_bce(logits, target).item() == pytest.approx(0.5 * math.log(2), rel=1e-5)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item()
    assert plain == pytest.approx(math.log(2) / 4, rel=1e-5)  # the plain mean lets the background dominate


def test_segmentation_criterion_sums_the_named_terms():
    logits, target = torch.zeros(2, 1, 2, 2), torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]])
    terms = SegmentationCriterion({"dice": 0.5, "balanced_bce": 0.5})({"logits": logits}, target)
    expected = 0.5 * soft_dice_loss(logits, target[:, None]) + 0.5 * math.log(2)
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"dice", "balanced_bce", "seg", "total"}
    with pytest.raises(ValueError, match="unknown loss terms \\['focal'\\]"):
        SegmentationCriterion({"focal": 1.0})


def test_each_model_trains_with_the_losses_its_kind_names():
    assert isinstance(build_criterion(tiny_config()), RecLMISCriterion)
    for name in ("unet", "lvit"):
        criterion = build_criterion(tiny_config(model=name, base_channel=8))
        assert isinstance(criterion, SegmentationCriterion)
        assert criterion.weights == {"dice": 0.5, "balanced_bce": 0.5}
