"""The losses, on the model's output dict. All take logits, never probabilities. :func:`build_criterion` gives the
one a network trains with: RecLMIS's (:class:`RecLMISCriterion`), or the weighted terms its model kind names
(:class:`SegmentationCriterion`; LViT and its U-Net: ``0.5 * Dice + 0.5 * balanced BCE``).

RecLMIS's
Total, with the config's weights (the authors' 5, 0.2, 1, 1):

    5 * (0.5 * Dice + 0.5 * BCE) + 0.2 * CCL + text reconstruction MSE + image reconstruction MSE

- Dice is the authors' soft Dice with squared denominator on ``0.5 * sigmoid(logits)`` and ``0.5 * mask`` (their
  ``WeightedDiceLoss`` with weights [0.5, 0.5]), smoothing 1e-5, one value per image, averaged.
- BCE is the pixel mean of binary cross-entropy, computed from logits (stable; equal to the authors' BCE on
  their sigmoid output).
- CCL is the conditioned contrastive loss (docs/QUIRKS.md, A7): token-wise max similarity text->image and image->text,
  weighted by the words/patches of interest, scaled by CLIP's ``logit_scale``, symmetric in-batch cross-entropy.
- The reconstruction terms are MSEs to the frozen CLIP text states and to the interaction's patch tokens.

The authors' quirks that change these numbers are reproduced unless a ``fix_*`` switch is set (docs/QUIRKS.md).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nets.models import model_kind


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes {list(a.shape)} and {list(b.shape)} differ")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """The authors' soft Dice loss: ``1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s)`` per image, averaged, with
    ``p = 0.5 sigmoid(logits)`` and ``t = 0.5 target``.

    Args:
        logits: ``[B, ...]``; target: same shape, values in {0, 1}.
    """
    _check_pair("soft_dice_loss", logits, target)
    b = logits.shape[0]
    p = 0.5 * torch.sigmoid(logits.float()).reshape(b, -1)
    t = 0.5 * target.float().reshape(b, -1)
    dice = (2 * (p * t).sum(-1) + smooth) / ((p * p).sum(-1) + (t * t).sum(-1) + smooth)
    return (1 - dice).mean()


def plain_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """MONAI's default Dice loss (GuideDecoder's): ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` per image with
    ``p = sigmoid(logits)``, averaged.

    Args:
        logits: ``[B, ...]``; target: same shape, values in {0, 1}.
    """
    _check_pair("plain_dice_loss", logits, target)
    b = logits.shape[0]
    p = torch.sigmoid(logits.float()).reshape(b, -1)
    t = target.float().reshape(b, -1)
    return (1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)).mean()


def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LViT's class-balanced BCE (its ``WeightedBCE([0.5, 0.5])``): half the mean BCE over the batch's foreground
    pixels plus half the mean over its background pixels, so that a small lesion weighs as much as the rest.

    Args:
        logits: ``[B, ...]``; target: same shape, values in {0, 1}.
    """
    _check_pair("balanced_bce", logits, target)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    positive = (target > 0.5).float()
    negative = 1 - positive
    return (0.5 * (positive * loss).sum() / (positive.sum() + 1e-12)
            + 0.5 * (negative * loss).sum() / (negative.sum() + 1e-12))


def cross_entropy_diagonal(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log_softmax(row)[diagonal]``: matched pairs sit on the diagonal (the authors' CrossEn)."""
    return -torch.diagonal(F.log_softmax(logits, dim=-1)).mean()


def conditioned_contrastive_loss(
    text_feat: torch.Tensor,
    img_feat: torch.Tensor,
    text_mask: torch.Tensor,
    word_weights: torch.Tensor,
    patch_weights: torch.Tensor,
    logit_scale: torch.Tensor,
    double_softmax: bool = True,
) -> torch.Tensor:
    """Conditioned contrastive loss between the reports and the images of a batch.

    Args:
        text_feat: ``[B, L, D]`` token features (``text_module4`` output).
        img_feat: ``[B, N, D]`` patch features (the bottleneck before interaction).
        text_mask: ``[B, L]``, nonzero on real tokens.
        word_weights: ``[B, L]`` words of interest; patch_weights: ``[B, N]`` patches of interest.
        logit_scale: scalar multiplier (CLIP's ``logit_scale.exp()``, 100 with the released weights).
        double_softmax: softmax the (already softmaxed) weights again, as the authors do (docs/QUIRKS.md, A7).

    Returns:
        scalar loss.
    """
    if text_feat.dim() != 3 or img_feat.dim() != 3 or text_feat.shape[0] != img_feat.shape[0] \
            or text_feat.shape[2] != img_feat.shape[2]:
        raise ValueError(f"text_feat [B, L, D] and img_feat [B, N, D] must share B and D, got "
                         f"{list(text_feat.shape)} and {list(img_feat.shape)}")
    _check_pair("text_mask vs word_weights", text_mask, word_weights)
    if text_mask.shape != text_feat.shape[:2] or patch_weights.shape != img_feat.shape[:2]:
        raise ValueError(f"weights must be [B, L] and [B, N]: text_mask {list(text_mask.shape)}, patch_weights "
                         f"{list(patch_weights.shape)} for text {list(text_feat.shape)}, image {list(img_feat.shape)}")
    if double_softmax:
        word_weights = torch.softmax(word_weights, dim=-1)
        patch_weights = torch.softmax(patch_weights, dim=-1)
    t = F.normalize(text_feat.float(), dim=-1)
    v = F.normalize(img_feat.float(), dim=-1)
    sim = torch.einsum("atd,bvd->abtv", t, v) * text_mask.float()[:, None, :, None]  # (B, B, L, N)
    t2v = torch.einsum("abt,at->ab", sim.amax(dim=-1), word_weights.float())
    v2t = torch.einsum("abv,bv->ab", sim.amax(dim=-2), patch_weights.float())
    logits = (t2v + v2t) / 2 * logit_scale
    return (cross_entropy_diagonal(logits) + cross_entropy_diagonal(logits.T)) / 2


# The loss terms the criteria return, and their names in logs, epochs.jsonl and TensorBoard: the Dice loss term
# is logged as "dice_loss", because "dice" there is the metric.
TERMS = ("dice", "dice_plain", "bce", "balanced_bce", "seg", "ccl", "text_rec", "img_rec", "total")
LOGGED_TERMS = ("total", "seg", "dice_loss", "dice_plain", "bce", "balanced_bce", "ccl", "text_rec", "img_rec")


def logged_name(term: str) -> str:
    """The name of the loss term ``term`` in logs (``dice`` -> ``dice_loss``)."""
    return "dice_loss" if term == "dice" else term


class RecLMISCriterion(nn.Module):
    """All RecLMIS losses, returned by name.

    Args:
        config: reads ``loss_weight_*``, ``dice_weight``, ``bce_weight`` and the ``fix_*`` loss switches.
        gather: applied to the contrastive loss's inputs (``[B, ...]`` -> ``[world * B, ...]``) so that its
            in-batch negatives span all processes (``utils.training.distributed.gather_with_grad``); None: this
            batch only.

    Call with the model's output dict and the masks ``[B, H, W]`` or ``[B, 1, H, W]`` (values 0/1). Returns
    ``dice``, ``bce``, ``seg`` (= dice_weight * dice + bce_weight * bce) and, when the outputs carry the auxiliary
    tensors, ``ccl``, ``text_rec`` and ``img_rec``; plus ``total``, the weighted sum of ``seg`` and the auxiliary
    terms.
    """

    def __init__(self, config, gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        super().__init__()
        self.config = config
        self.gather = gather
        self.weights = {"seg": config.loss_weight_seg, "ccl": config.loss_weight_ccl,
                        "text_rec": config.loss_weight_text_rec, "img_rec": config.loss_weight_img_rec}

    def forward(self, outputs: Dict[str, torch.Tensor], masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        cfg = self.config
        logits = outputs["logits"]
        if masks.dim() == logits.dim() - 1:
            masks = masks.unsqueeze(1)
        _check_pair("logits vs masks", logits, masks)
        masks = masks.to(logits.dtype)
        terms = {"dice": soft_dice_loss(logits, masks),
                 "bce": F.binary_cross_entropy_with_logits(logits.float(), masks.float())}
        terms["seg"] = cfg.dice_weight * terms["dice"] + cfg.bce_weight * terms["bce"]
        if "text_rec" in outputs:
            terms.update(self.auxiliary_terms(outputs))
        terms["total"] = sum(self.weights[name] * terms[name] for name in self.weights if name in terms)
        return terms

    def auxiliary_terms(self, outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg = self.config
        ccl_inputs = [outputs[k] for k in ("text_feat", "img_feat", "text_mask", "word_weights", "patch_weights")]
        if self.gather is not None:  # negatives from every process of a distributed run
            ccl_inputs = [self.gather(t) for t in ccl_inputs]
        terms = {"ccl": conditioned_contrastive_loss(*ccl_inputs, outputs["logit_scale"],
                                                     double_softmax=not cfg.fix_ccl_double_softmax)}
        text_err = (outputs["text_rec"].float() - outputs["text_target"].float()).pow(2)
        if cfg.fix_text_rec_padding:
            valid = outputs["text_mask"].float()[..., None].expand_as(text_err)
            terms["text_rec"] = (text_err * valid).sum() / valid.sum().clamp_min(1)
        else:
            terms["text_rec"] = text_err.mean()
        img_target = outputs["img_target"]
        if cfg.fix_detach_img_target:
            img_target = img_target.detach()
        terms["img_rec"] = (outputs["img_rec"].float() - img_target.float()).pow(2).mean()
        return terms


# The terms a model kind may name in its ``losses`` (nets/models.py), each ``term(logits, masks)``.
SEGMENTATION_TERMS = {
    "dice": soft_dice_loss,
    "dice_plain": plain_dice_loss,
    "bce": lambda logits, masks: F.binary_cross_entropy_with_logits(logits.float(), masks.float()),
    "balanced_bce": balanced_bce,
}


class SegmentationCriterion(nn.Module):
    """The weighted sum of segmentation terms (:data:`SEGMENTATION_TERMS`) that a model kind names.

    Call with the model's output dict and the masks ``[B, H, W]`` or ``[B, 1, H, W]``; returns each term, ``seg``
    and ``total`` (both the weighted sum).
    """

    def __init__(self, weights: Dict[str, float]):
        super().__init__()
        unknown = sorted(set(weights) - set(SEGMENTATION_TERMS))
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; known: {sorted(SEGMENTATION_TERMS)}")
        self.weights = dict(weights)

    def forward(self, outputs: Dict[str, torch.Tensor], masks: torch.Tensor) -> Dict[str, torch.Tensor]:
        logits = outputs["logits"]
        if masks.dim() == logits.dim() - 1:
            masks = masks.unsqueeze(1)
        _check_pair("logits vs masks", logits, masks)
        terms = {name: SEGMENTATION_TERMS[name](logits, masks.to(logits.dtype)) for name in self.weights}
        terms["seg"] = sum(weight * terms[name] for name, weight in self.weights.items())
        terms["total"] = terms["seg"]
        return terms


def build_criterion(config, gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> nn.Module:
    """The criterion the network ``config.model`` names trains with (``gather``: RecLMIS's contrastive negatives
    across processes, :class:`RecLMISCriterion`)."""
    weights = model_kind(config.model).losses
    return RecLMISCriterion(config, gather=gather) if weights is None else SegmentationCriterion(weights)
