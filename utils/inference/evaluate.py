"""Scoring a trained model on a test split: per-image scores and figures, the text ablation, the demo's measures.

``test.py`` chooses the files and folders; this module computes. Scores use threshold 0.5 and two protocols: the
paper's (per-image Dice and IoU averaged over images, empty/empty counting 0) and the pooled one (pixels summed over
the split), both from :class:`utils.metrics.SegmentationMeter`.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from Load_Dataset import ImageToImage2D, ReportsSwapped
from utils.data.demo import INFO_FILE, DemoCase, demo_cases
from utils.data.images import image_size
from utils.data.reports import text_derangement
from utils.data.tokenizer import build_tokenizer
from utils.data.transforms import probability_to_full_size
from utils.inference.figures import draw_case
from utils.inference.language import every_blob_logits, interest_shares
from utils.inference.predictor import Predictor
from utils.metrics import SegmentationMeter
from utils.misc import to_device

PROTOCOL = "dice/iou: per-image mean, threshold > 0.5, empty/empty = 0; *_pooled: pixels summed"
ABLATIONS = ("true", "shuffled", "empty")


def score_split(predictor: Predictor, dataset: ImageToImage2D, loader, *, save_pred: Optional[str] = None,
                vis_dir: Optional[str] = None, progress: bool = True) -> Tuple[dict, List[dict]]:
    """Score every batch of ``loader`` (the split ``dataset``).

    Args:
        save_pred: a folder for each predicted mask as a 0/255 PNG named after its mask file, at that file's own
            size (the probability resized bilinear, then > 0.5, as ``predict`` does; the scores are computed at
            the model's size, the paper's protocol); None = none.
        vis_dir: a folder for one figure per image (:func:`utils.inference.figures.draw_case`); None = none.

    Returns:
        ``(scores, rows)``: the split's scores (both protocols, and ``images``) and one row per image
        (``name``, ``mask``, ``report``, ``dice``, ``iou``).
    """
    meter = SegmentationMeter(strict=True, dice="paper")
    rows = []
    mask_of = {sample.name: sample.mask_path for sample in dataset.samples}
    grid = dataset.img_size // 16
    with torch.inference_mode():
        for batch in tqdm(loader, desc="test", disable=not progress, dynamic_ncols=True):
            images, labels, tokens, mask = to_device(batch, predictor.device)
            out = predictor.outputs(images, tokens, mask, return_weights=vis_dir is not None)
            logits = out["logits"]
            scores = meter.update(logits, labels)
            for i, name in enumerate(batch["name"]):
                mask_name = mask_of[name].name
                dice, iou = float(scores["dice"][i]), float(scores["iou"][i])
                rows.append({"name": name, "mask": mask_name, "report": batch["text"][i], "dice": dice, "iou": iou})
                if save_pred is not None:
                    full = probability_to_full_size(torch.sigmoid(logits[i, 0]).float().cpu().numpy(),
                                                    *image_size(mask_of[name]))
                    cv2.imwrite(os.path.join(save_pred, os.path.splitext(mask_name)[0] + ".png"),
                                np.greater(full, 0.5).view(np.uint8) * np.uint8(255))
                if vis_dir is not None:
                    image = (batch["image"][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                    words = predictor.tokenizer.report_token_strings(batch["text_token"][i], batch["text"][i])
                    interest = "word_weights" in out  # only a network with interest maps returns them
                    draw_case(os.path.join(vis_dir, f"{os.path.splitext(name)[0]}_dice{dice:.3f}.png"), image,
                              torch.sigmoid(logits[i, 0]).cpu().numpy(), batch["text"][i], words,
                              out["word_weights"][i, 1:1 + len(words)].cpu().numpy() if interest else None,
                              out["patch_weights"][i].reshape(grid, grid).cpu().numpy() if interest else None,
                              truth=batch["label"][i].numpy(), dice=dice)
    return {"images": meter.images, **meter.compute()}, rows


def demo_cases_of(test_folder: str) -> Optional[Dict[str, DemoCase]]:
    """The demo generator's record of each test image (blobs, named zones) when ``test_folder`` is the demo set's
    (a ``demo.json`` beside it); None for any other data set."""
    root = os.path.dirname(os.path.normpath(test_folder))
    return demo_cases(root, "test") if os.path.isfile(os.path.join(root, INFO_FILE)) else None


def text_ablation(predictor: Predictor, dataset: ImageToImage2D, seed: int, *, progress: bool = True,
                  cases: Optional[Dict[str, DemoCase]] = None) -> dict:
    """The split scored (both protocols) with its true reports, with the reports shuffled between images
    (:class:`Load_Dataset.ReportsSwapped` over :func:`utils.data.reports.text_derangement`: no image keeps its own
    report text where another text exists; ``"shuffled"`` holds ``unchanged``, the images that could not) and
    with an empty report (start and end tokens only, without the authors' short-report padding) for every image.

    With ``cases`` (:func:`demo_cases_of`), the true-report pass also gives the demo's measures under ``"demo"``:
    the every-blob oracle's scores and, for a network with interest maps, the mean interest-map shares of
    :func:`utils.inference.language.interest_shares`.
    """
    donor, unchanged = text_derangement(dataset.reports, seed)
    sources = {"true": dataset, "shuffled": ReportsSwapped(dataset, donor), "empty": dataset}
    empty = build_tokenizer(predictor.config, pad_short_reports=False)([""])
    oracle = SegmentationMeter(strict=True, dice="paper")
    shares = []
    results = {}
    with torch.inference_mode():
        for kind in ABLATIONS:
            meter = SegmentationMeter(strict=True, dice="paper")
            weigh = cases is not None and kind == "true"
            for i in tqdm(range(len(dataset)), desc=f"text ablation: {kind}", disable=not progress,
                          dynamic_ncols=True):
                sample = sources[kind][i]
                tokens, text_mask = ((empty.tokens, empty.text_mask) if kind == "empty"
                                     else (sample["text_token"][None], sample["text_mask"][None]))
                out = predictor.outputs(sample["image"][None], tokens, text_mask, return_weights=weigh)
                label = sample["label"][None]
                meter.update(out["logits"], label.to(out["logits"].device))
                if weigh:
                    case = cases[sample["name"]]
                    oracle.update(every_blob_logits(case.blobs, dataset.img_size), label)
                if weigh and "word_weights" in out:  # a network with interest maps
                    shares.append(interest_shares(predictor.tokenizer.token_strings(sample["text_token"]),
                                                  out["word_weights"][0], out["patch_weights"][0], case.zones,
                                                  dataset.img_size, layout=case.layout))
            results[kind] = {**meter.compute(), "images": meter.images}
    results["shuffled"]["unchanged"] = unchanged
    if cases is not None:
        means = {key: float(np.mean([row[key] for row in shares])) for key in (shares[0] if shares else {})}
        results["demo"] = {"oracle_every_blob": {**oracle.compute(), "images": oracle.images}, **means}
    return results
