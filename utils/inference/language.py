"""Does the model read its report? Measures for ``test.py --text_ablation`` and docs/LANGUAGE.md (the shuffled-report
derangement is :func:`utils.data.reports.report_cycle`).

- :func:`every_blob_logits`: on the demo set, the "every blob" oracle, a model that segments every lesion-like blob
  whether the report names it or not: what a model that does not read can reach at best.
- :func:`interest_shares`: how much of the words-of-interest weight falls on position words, and how much of the
  patches-of-interest weight falls inside the zones the report names (the demo generator knows the zones, and
  in its varied layout each case carries its own, :attr:`utils.data.demo.DemoCase.layout`).
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np
import torch

from utils.data.demo_layout import FIXED_LAYOUT, DemoLayout, Zone
from utils.data.reports import POSITION_WORDS
from utils.data.transforms import mask_to_model_size

ORACLE_LOGIT = 20.0  # the oracle's logits: +20 on its blobs, -20 elsewhere (probability 1 - 2e-9)


def every_blob_logits(blobs: np.ndarray, img_size: int) -> torch.Tensor:
    """The oracle's ``[1, 1, S, S]`` logits for one demo case's ``blobs`` (``[H, W]`` bool), resized to the model's
    ``img_size`` exactly as the data loader resizes a true mask (``Load_Dataset.ImageToImage2D.load_arrays``: the
    0/255 PNG resized bilinearly, then > 0), so that where every blob is named the oracle is the true mask."""
    if blobs.dtype != bool:
        raise TypeError(f"blobs must be a bool array (DemoCase.blobs), got {blobs.dtype}")
    # 0/255 as the mask PNGs hold, not 0/1: a bilinear resize of 0/1 uint8 rounds the edge pixels a downsampling
    # blends (a weight below 1/2) to 0, and the oracle's blobs would come out thinner than the true masks.
    as_png = np.where(blobs, 255, 0).astype(np.uint8)
    resized = mask_to_model_size(as_png, img_size).astype(bool)
    logits = torch.full((1, 1, img_size, img_size), -ORACLE_LOGIT)
    logits[0, 0][torch.from_numpy(resized)] = ORACLE_LOGIT
    return logits


def zone_coverage(zones: Iterable[Zone], img_size: int, layout: DemoLayout = FIXED_LAYOUT) -> torch.Tensor:
    """``[G, G]``: the share of each ``16 x 16`` patch (``G = img_size // 16``) inside ``zones``, as ``layout`` (the
    case's :attr:`utils.data.demo.DemoCase.layout`; the fixed layout's boxes by default) places them at
    ``img_size``."""
    inside = torch.zeros(img_size, img_size)
    regions = layout.zone_regions(img_size)
    for zone in zones:
        inside[torch.from_numpy(regions[zone])] = 1.0
    return torch.nn.functional.avg_pool2d(inside[None, None], 16)[0, 0]


def interest_shares(words: Sequence[str], word_weights: torch.Tensor, patch_weights: torch.Tensor,
                    zones: Iterable[Zone], img_size: int, layout: DemoLayout = FIXED_LAYOUT) -> Dict[str, float]:
    """One image's interest-map measures.

    Args:
        words: the report's tokens at positions ``1..k`` (:meth:`utils.data.tokenizer.ReportTokenizer.token_strings`).
        word_weights: ``[L]`` words-of-interest weights (softmax over the valid tokens, start and end included).
        patch_weights: ``[G*G]`` patches-of-interest weights (softmax over the patches).
        zones: the zones the report names.
        img_size: the model's input side ``S``.
        layout: where the image's zones lie (:attr:`utils.data.demo.DemoCase.layout`); a varied-layout case must
            pass its own, the default is the fixed layout's.

    Returns:
        ``woi_position``: the share of the word weight on position words (left, right, upper, middle, lower, ...);
        ``poi_in_zones``: the share of the patch weight inside the named zones (each patch counted by the part of
        it inside); ``poi_chance``: that share for uniform weights (the zones' area on the patch grid).
    """
    on_position = [1.0 if word.lower() in POSITION_WORDS else 0.0 for word in words]
    woi = float((word_weights[1:1 + len(words)].float().cpu() * torch.tensor(on_position)).sum())
    coverage = zone_coverage(zones, img_size, layout).flatten()
    return {"woi_position": woi, "poi_in_zones": float((patch_weights.float().cpu() * coverage).sum()),
            "poi_chance": float(coverage.mean())}
