"""What ``test.py``'s two subcommands do, without their command line.

- :func:`run_test` scores a checkpoint on a data set's test split (both protocols, optionally the text ablation,
  the figures and the predicted masks) and writes the results to a folder, keeping earlier ones;
- :func:`run_predict` predicts one image from its report, or a folder of images from a report table.

Both take a plain request (:class:`TestRequest`, :class:`PredictRequest`), so they run the same from
``test.py``, a notebook or a test. Nothing is ever written into an input folder, and nothing the command did
not create is overwritten without ``overwrite`` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import List, Optional

import torch

from Load_Dataset import build_test_split
from utils.checkpoints import session_best
from utils.config import Config, load_config
from utils.data.files import split_paths
from utils.data.importer import manifest_hash
from utils.inference.evaluate import PROTOCOL, demo_cases_of, score_split, text_ablation
from utils.inference.folder import predict_folder
from utils.inference.predictor import Predictor, prediction_paths
from utils.inference.speed import TEXT_CACHE
from utils.misc import get_device
from utils.outputs import OutputRefused, check_writable, csv_cell, keep_previous, refuse_inside, refuse_overwrite
from utils.sessions import resolve_session

logger = logging.getLogger("test")
SUMMARY_NAME = "test_summary.json"  # scores of the latest test run
ABLATION_NAME = "test_text_ablation.json"  # the latest --text_ablation's scores
PER_IMAGE_NAME = "test_per_image.csv"


@dataclass
class TestRequest:
    """A test run: the data (``config`` and ``overrides``), the checkpoint (a ``session``'s best, or a
    ``checkpoint`` file), where results go (``out``; default: the session, or a folder beside the checkpoint),
    and what to compute and draw."""

    config: str = "Config_QaTa"
    overrides: tuple = ()
    session: Optional[str] = None
    checkpoint: Optional[str] = None
    device: Optional[str] = None
    gpu: Optional[str] = None  # the authors' -g N: cuda:N, or the CPU with a warning where there is no CUDA
    out: Optional[str] = None
    precision: str = "fp32"
    compile: bool = False
    text_cache: int = TEXT_CACHE
    test_vis: bool = False
    save_pred: Optional[str] = None
    overwrite: bool = False
    text_ablation: bool = False
    progress: bool = True


@dataclass
class PredictRequest:
    """A prediction: one ``image`` with its ``text``, or a folder of ``images`` with a report ``table``; ``out``
    is a prefix (one image) or a folder."""

    checkpoint: str
    out: str
    image: Optional[str] = None
    text: Optional[str] = None
    images: Optional[str] = None
    table: Optional[str] = None
    config: str = "Config_QaTa"
    overrides: tuple = ()
    device: Optional[str] = None
    precision: str = "fp32"
    compile: bool = False
    text_cache: int = TEXT_CACHE
    overwrite: bool = False
    progress: bool = True


class TestInterrupted(KeyboardInterrupt):
    """Ctrl-C while the split was scored: nothing was written to the results folder."""

    def __init__(self, out_dir: str, save_pred: Optional[str]):
        super().__init__(out_dir)
        self.out_dir = out_dir
        self.save_pred = save_pred

    def message(self) -> str:
        masks = (f"; the masks written so far stay in {self.save_pred} (a later --save_pred there needs --overwrite)"
                 if self.save_pred else "")
        return (f"interrupted: no result was written to {self.out_dir} and its earlier results are as they were"
                f"{masks}")


def test_device(device: Optional[str], gpu: Optional[str]) -> torch.device:
    """``device`` as given (auto: CUDA when present), or the authors' ``gpu`` N as ``cuda:N``; a ``gpu`` given on a
    machine without CUDA is ignored with a warning."""
    if gpu is None:
        return get_device(device or "auto")
    if not torch.cuda.is_available():
        logger.warning("no CUDA device on this machine: --gpu %s is ignored, testing on the CPU", gpu)
        return torch.device("cpu")
    return get_device(f"cuda:{int(gpu)}")


def results_dir(checkpoint: str, session_dir: Optional[str]) -> str:
    """Where a test's results go by default: the session, or the session of a checkpoint in a ``models/`` folder,
    or ``<checkpoint name>_test/`` beside it."""
    if session_dir:
        return session_dir
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.basename(folder) == "models":
        return os.path.dirname(folder)
    return os.path.join(folder, os.path.splitext(os.path.basename(checkpoint))[0] + "_test")


def run_test(request: TestRequest) -> tuple:
    """Score the request's checkpoint on its data's test split; returns ``(summary, out_dir)``. The results
    folder is checked writable before any work."""
    config = load_config(request.config, request.overrides)
    session_dir = None
    checkpoint = request.checkpoint
    if request.session:
        session_dir = resolve_session(request.session, config.output_root, config.task_name)
        checkpoint = session_best(session_dir)
    device = test_device(request.device, request.gpu)
    out_dir = request.out or results_dir(checkpoint, session_dir)
    check_writable(out_dir)
    return score_checkpoint(request, config, checkpoint, out_dir, device), out_dir


def score_checkpoint(request: TestRequest, data_config: Config, checkpoint: str, out_dir: str,
                     device: torch.device) -> dict:
    """Score ``checkpoint`` on ``data_config``'s test split; writes the per-image table, the summary (and the
    ablation) to ``out_dir``, the figures and masks where asked."""
    predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=request.precision,
                                          config=data_config, compile=request.compile,
                                          cache_text=request.text_cache)
    # The data come from the request's config; the sizes that shape the inputs come from the model.
    cfg, dataset, loader = build_test_split(data_config, predictor.config, device)
    vis_name = f"{cfg.task_name}_visualize_test"
    # Figures are drawn into a hidden folder and moved into place once the split is scored, so an interrupted run
    # never mixes its figures with earlier ones.
    vis_dir = os.path.join(out_dir, f".{vis_name}.partial") if request.test_vis else None
    save_pred = request.save_pred
    split = split_paths(cfg, "test")
    inputs = {"the test split's images": split.img_dir, "the test split's masks": split.mask_dir}
    refuse_inside(out_dir, inputs, "--out")
    if save_pred:
        refuse_inside(save_pred, inputs, "--save_pred")
        refuse_overwrite([os.path.join(save_pred, os.path.splitext(s.mask_path.name)[0] + ".png")
                          for s in dataset.samples], request.overwrite)
    if vis_dir and os.path.isdir(vis_dir):
        shutil.rmtree(vis_dir)  # left by a run that was killed outright: this command wrote it
    for folder in filter(None, [save_pred, vis_dir]):
        os.makedirs(folder, exist_ok=True)
    try:
        scores, rows = score_split(predictor, dataset, loader, save_pred=save_pred, vis_dir=vis_dir,
                                   progress=request.progress)
        ablation = None
        if request.text_ablation:
            ablation = text_ablation(predictor, dataset, cfg.seed, progress=request.progress,
                                     cases=demo_cases_of(cfg.test_dataset))
    except KeyboardInterrupt:
        if vis_dir:
            shutil.rmtree(vis_dir, ignore_errors=True)
        raise TestInterrupted(out_dir, save_pred) from None
    data = {"test_dataset": os.path.abspath(cfg.test_dataset), "images": len(dataset),
            "data_sha256": manifest_hash(cfg.test_dataset)}
    cache = predictor.text_cache
    summary = {"checkpoint": checkpoint, "data": data, "precision": predictor.precision, "compiled": request.compile,
               "text_cache": None if cache is None else {"capacity": cache.capacity, "computed": cache.misses,
                                                         "reused": cache.hits},
               **scores, "protocol": PROTOCOL}
    if ablation is not None:
        summary["text_ablation"] = ablation
    if cache is not None:
        logger.info("text features: %d report(s) computed, %d reused from the cache", cache.misses, cache.hits)
    _write_results(out_dir, vis_dir, vis_name, rows, summary)
    return summary


def _write_results(out_dir: str, vis_dir: Optional[str], vis_name: str, rows: List[dict], summary: dict) -> None:
    # Earlier results in the folder (and their figures) move aside together: nothing is replaced or mixed.
    for path in keep_previous(out_dir, [SUMMARY_NAME, ABLATION_NAME, PER_IMAGE_NAME, vis_name]):
        logger.info("kept the earlier result %s", path)
    if vis_dir:
        os.replace(vis_dir, os.path.join(out_dir, vis_name))
    with open(os.path.join(out_dir, PER_IMAGE_NAME), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "mask", "report", "dice", "iou"])
        writer.writeheader()
        writer.writerows({key: csv_cell(value) if isinstance(value, str) else value for key, value in row.items()}
                         for row in rows)
    with open(os.path.join(out_dir, SUMMARY_NAME), "w") as handle:
        json.dump(summary, handle, indent=2)
    if "text_ablation" in summary:  # its own file too: a later plain run rewrites the summary, not this
        with open(os.path.join(out_dir, ABLATION_NAME), "w") as handle:
            json.dump({key: summary[key] for key in ("checkpoint", "data", "precision")}
                      | summary["text_ablation"], handle, indent=2)


def single_prefix(out: str, image: str) -> str:
    """The output prefix of a one-image prediction: ``out`` itself, or inside ``out`` under the image's name when
    ``out`` is an existing folder or ends with a path separator."""
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return os.path.join(out, os.path.splitext(os.path.basename(image))[0])
    return out


def run_predict(request: PredictRequest) -> List[str]:
    """Predict the request's image or folder; returns the files written (one image) or the image names done (a
    folder). Raises :class:`utils.inference.folder.PredictionInterrupted` on Ctrl-C during a folder."""
    config = load_config(request.config, request.overrides)
    predictor = Predictor.from_checkpoint(request.checkpoint, device=request.device or "auto",
                                          precision=request.precision, config=config, compile=request.compile,
                                          cache_text=request.text_cache, max_image_pixels=config.max_image_pixels)
    if request.image:
        prefix = single_prefix(request.out, request.image)
        outputs = prediction_paths(prefix)
        if any(os.path.realpath(path) == os.path.realpath(request.image) for path in outputs):
            raise OutputRefused(f"--out {request.out} would write over the input image {request.image}; choose "
                                "another prefix")
        refuse_overwrite(outputs, request.overwrite)
        return predictor.predict(request.image, request.text).save(prefix)
    refuse_inside(request.out, {"the --images folder": request.images}, "--out")
    return predict_folder(predictor, request.images, request.table, request.out, request.progress,
                          overwrite=request.overwrite, max_rows=config.max_table_rows, max_mib=config.max_table_mib)
