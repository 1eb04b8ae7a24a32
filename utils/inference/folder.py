"""Run a trained RecLMIS on your own images and reports.

    from utils.inference.folder import RecLMISPredictor
    predictor = RecLMISPredictor("Covid19/RecLMIS/<session>/models/best_model-RecLMIS.pth.tar")
    result = predictor.predict("scan.png", "Bilateral pulmonary infection, two infected areas.")
    result.mask              # [H, W] uint8 0/1 at the image's own size
    result.probability       # [H, W] float32
    result.words, result.word_weights, result.patch_weights   # what the model weighed (words/patches of interest)
    result.save("out/scan")  # out/scan_mask.png (0/255), _prob.png, _overlay.png (the figure of draw_case)

The image is prepared as the data sets are (3-channel BGR, bilinear resize to the model's ``img_size``, [0, 1]),
the report is tokenised as in training, and the model runs through :class:`utils.inference.predictor.Predictor` (fp32 by
default). The probability is resized back to the image's own size (bilinear) before the 0.5 threshold, so the
mask lines up with the input image. The command line is ``python test.py predict`` (see ``test.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import cv2
import numpy as np
import torch

from utils.data.files import read_image
from utils.data.tokenizer import ReportTokenizer
from utils.data.transforms import image_to_tensor
from utils.inference.figures import draw_case
from utils.inference.predictor import TEXT_CACHE, Predictor
from utils.misc import get_device
from utils.training.checkpoint import build_model_from_checkpoint


@dataclass
class Prediction:
    """One image's prediction.

    Attributes:
        image: the input, ``[H, W, 3]`` BGR uint8 at its own size.
        probability: ``[H, W]`` float32 in [0, 1].
        mask: ``[H, W]`` uint8, 1 where ``probability > 0.5``.
        report: the report as given.
        words: the report's tokens as the model read them (after the authors' short-report padding, cut to
            ``token_len``).
        word_weights: ``[len(words)]`` words-of-interest weights (a softmax over the tokens with the start and end
            tokens, so they sum to at most 1).
        patch_weights: ``[G, G]`` patches-of-interest weights (sum 1), ``G = img_size / 16``.
    """

    image: np.ndarray
    probability: np.ndarray
    mask: np.ndarray
    report: str
    words: List[str]
    word_weights: np.ndarray
    patch_weights: np.ndarray

    def save(self, prefix: str) -> List[str]:
        """Write ``<prefix>_mask.png`` (0/255), ``<prefix>_prob.png`` (probability x 255) and
        ``<prefix>_overlay.png`` (input, prediction, probability, patches and words of interest)."""
        folder = os.path.dirname(os.path.abspath(prefix))
        os.makedirs(folder, exist_ok=True)
        paths = [f"{prefix}_mask.png", f"{prefix}_prob.png", f"{prefix}_overlay.png"]
        _write_png(paths[0], self.mask * 255)
        _write_png(paths[1], np.round(self.probability * 255).astype(np.uint8))
        draw_case(paths[2], self.image, self.probability, self.report, self.words, self.word_weights,
                  self.patch_weights)
        return paths


def _write_png(path: str, array: np.ndarray) -> None:
    if not cv2.imwrite(path, array.astype(np.uint8)):
        raise OSError(f"could not write {path}")


class RecLMISPredictor:
    """A trained model, rebuilt from its checkpoint alone, ready to predict.

    Args:
        checkpoint: a checkpoint of ours, or the authors' released file (then give ``config`` for its sizes).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
        precision: "fp32" (default), "bf16", "fp16" (CUDA) or "auto" (the fastest on this machine, timed on the
            first image); see :class:`utils.inference.predictor.Predictor`.
        config: the config for a checkpoint that carries none (the authors').
        compile: ``torch.compile`` the model (see :class:`utils.inference.predictor.Predictor`).
        cache_text: reuse the text tower's features of up to this many reports (0 = off). One image at a time,
            as here, gives the same bits as without it.
    """

    def __init__(self, checkpoint: str, device: str = "auto", precision: str = "fp32", config=None,
                 compile: bool = False, cache_text: int = TEXT_CACHE):
        model = build_model_from_checkpoint(checkpoint, config)[0]
        self.config = model.config
        self.device = get_device(device)
        self.tokenizer = ReportTokenizer(self.config.token_len, self.config.pad_short_reports)
        self.predictor = Predictor(model, self.device, precision, compile=compile, cache_text=cache_text)

    def predict(self, image: Union[str, Path, np.ndarray], report: str) -> Prediction:
        """Predict the mask of ``image`` (a file, or an ``[H, W, 3]`` BGR / ``[H, W]`` grey uint8 array) for
        ``report``."""
        if isinstance(image, (str, Path)):
            image = read_image(Path(image))
        elif image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image must be [H, W, 3] (BGR) or [H, W] uint8, got {image.dtype} "
                             f"{list(image.shape)}")
        if not isinstance(report, str):
            raise TypeError(f"a report must be a str, got {type(report).__name__}")
        size = self.config.img_size
        resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        tensor = image_to_tensor(resized)[None]
        tokens = self.tokenizer([report])
        out = self.predictor.outputs(tensor, tokens.tokens, tokens.text_mask, return_weights=True)
        probability = torch.sigmoid(out["logits"][0, 0]).cpu().numpy()
        height, width = image.shape[:2]
        probability = np.clip(cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
        words = self.tokenizer.report_token_strings(tokens.tokens[0], report)
        grid = size // 16
        return Prediction(image=image, probability=probability.astype(np.float32),
                          mask=(probability > 0.5).astype(np.uint8), report=report, words=words,
                          word_weights=out["word_weights"][0, 1:1 + len(words)].cpu().numpy(),
                          patch_weights=out["patch_weights"][0].reshape(grid, grid).cpu().numpy())


def predict_folder(predictor: RecLMISPredictor, images: str, table: str, out_dir: str,
                   progress: bool = True) -> List[str]:
    """Predict every image named in ``table`` (``.xlsx``/``.csv`` with ``Image`` and ``Description`` columns) from
    the folder ``images``; writes each image's three files to ``out_dir``. Returns the image names done.

    Raises:
        FileNotFoundError: no such folder or table.
        ValueError: the table cannot be read, names an unsafe path, or names an image that is not there.
    """
    from tqdm import tqdm

    from utils.data.files import ERROR, read_report_table

    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder {folder}")
    parsed = read_report_table(Path(table), "predict", names="the image's file name")
    errors = [p.message for p in parsed.problems if p.severity == ERROR]
    if errors:
        raise ValueError(f"cannot use the report table {table}: " + "; ".join(errors[:5]))
    missing = sorted(name for name in parsed.reports if not (folder / name).is_file())
    if missing:
        raise ValueError(f"{len(missing)} image(s) named in {table} are not in {folder}: {missing[:5]}")
    stems = {}
    for name in parsed.reports:
        stems.setdefault(Path(name).stem, []).append(name)
    clashes = sorted(names for names in stems.values() if len(names) > 1)
    if clashes:
        raise ValueError(f"images whose outputs would overwrite each other (same name before the extension): "
                         f"{clashes[:5]}; rename them")
    done = []
    for name, report in tqdm(sorted(parsed.reports.items()), desc="predict", disable=not progress):
        result = predictor.predict(folder / name, report)
        result.save(os.path.join(out_dir, Path(name).stem))
        done.append(name)
    return done

