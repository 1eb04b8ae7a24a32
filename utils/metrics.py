"""Segmentation metrics from logits, under the authors' protocols.

- **Paper protocol** (the authors' ``test_model.py``): threshold ``sigmoid > 0.5`` (logits > 0), per-image Dice
  ``2|A∩B| / (|A| + |B| + 1e-5)`` and per-image IoU ``|A∩B| / |A∪B|``, averaged over images. An image whose mask
  and prediction are both empty counts 0 for both (their Dice has no smoothing in the numerator; sklearn's
  ``jaccard_score`` gives 0).
- **Validation protocol** (the authors' training loop, which selects the best checkpoint): threshold ``>= 0.5``,
  per-image Dice with smoothing, ``(2|A∩B| + 4e-5) / (|A| + |B| + 4e-5)`` (their soft Dice on binary maps scaled by
  0.5), so empty/empty counts 1. IoU as above.
- **Pooled protocol** (newer papers): pixels summed over the whole split, then ``2 ΣI / (ΣA + ΣB)`` and ``ΣI / ΣU``.
"""

from __future__ import annotations

from typing import Dict

import torch


def binarize(logits: torch.Tensor, strict: bool = True) -> torch.Tensor:
    """Hard mask from logits: ``sigmoid > 0.5`` (``strict``, test) or ``>= 0.5`` (validation)."""
    return logits > 0 if strict else logits >= 0


def overlap_counts(pred: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-image pixel counts ``[B]``: ``inter``, ``pred``, ``target``, ``union``, from boolean or 0/1 maps."""
    if pred.shape[0] != target.shape[0] or pred[0].numel() != target[0].numel():
        raise ValueError(f"prediction {list(pred.shape)} and target {list(target.shape)} do not match")
    b = pred.shape[0]
    p = pred.reshape(b, -1).bool()
    t = target.reshape(b, -1).bool()
    inter = (p & t).sum(1)
    return {"inter": inter, "pred": p.sum(1), "target": t.sum(1), "union": (p | t).sum(1)}


def paper_dice(counts: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image Dice of the authors' test: ``2I / (|A| + |B| + 1e-5)``; empty/empty gives 0."""
    return 2 * counts["inter"].double() / (counts["pred"] + counts["target"] + 1e-5)


def validation_dice(counts: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image Dice of the authors' validation: their soft Dice on binary maps; empty/empty gives 1."""
    smooth = 1e-5
    return (0.5 * counts["inter"].double() + smooth) / (0.25 * (counts["pred"] + counts["target"]) + smooth)


def iou(counts: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-image IoU ``I / U``; empty/empty gives 0 (as sklearn's ``jaccard_score``)."""
    union = counts["union"].double()
    return torch.where(union > 0, counts["inter"].double() / union.clamp_min(1), torch.zeros_like(union))


class SegmentationMeter:
    """Accumulates per-image scores and pooled pixel counts over a split.

    Args:
        strict: threshold ``> 0.5`` (test protocol) or ``>= 0.5`` (validation protocol).
        dice: ``"paper"`` (empty/empty = 0) or ``"validation"`` (smoothed, empty/empty = 1) per-image Dice.
    """

    def __init__(self, strict: bool = True, dice: str = "paper"):
        if dice not in ("paper", "validation"):
            raise ValueError(f"dice must be 'paper' or 'validation', got {dice!r}")
        self.strict = strict
        self.dice_fn = paper_dice if dice == "paper" else validation_dice
        self.dice_sum = 0.0
        self.iou_sum = 0.0
        self.images = 0
        self.pooled = {"inter": 0, "pred": 0, "target": 0, "union": 0}

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Add a batch; returns its per-image ``dice`` and ``iou`` (``[B]``, CPU float64)."""
        counts = {k: v.cpu() for k, v in overlap_counts(binarize(logits.detach(), self.strict), target).items()}
        dice, jac = self.dice_fn(counts), iou(counts)
        self.dice_sum += float(dice.sum())
        self.iou_sum += float(jac.sum())
        self.images += dice.numel()
        for key in self.pooled:
            self.pooled[key] += int(counts[key].sum())
        return {"dice": dice, "iou": jac}

    def state_dict(self) -> Dict[str, object]:
        """The running sums (plain numbers), to continue the meter elsewhere with :meth:`load_state_dict`."""
        return {"dice_sum": self.dice_sum, "iou_sum": self.iou_sum, "images": self.images, "pooled": dict(self.pooled)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.dice_sum, self.iou_sum = float(state["dice_sum"]), float(state["iou_sum"])
        self.images = int(state["images"])
        self.pooled = {key: int(state["pooled"][key]) for key in self.pooled}

    def compute(self) -> Dict[str, float]:
        """Mean per-image ``dice`` and ``iou``, and ``dice_pooled`` / ``iou_pooled`` over all pixels."""
        n = max(self.images, 1)
        p = self.pooled
        denom = p["pred"] + p["target"]
        return {"dice": self.dice_sum / n, "iou": self.iou_sum / n,
                "dice_pooled": 2 * p["inter"] / denom if denom else 0.0,
                "iou_pooled": p["inter"] / p["union"] if p["union"] else 0.0}
