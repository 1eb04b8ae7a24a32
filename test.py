"""Score a trained RecLMIS on the test split, draw what it did, or predict new images.

    python test.py -c Config_QaTa -t session_09.25_00h27 [--device cuda:0] [--test_vis] [--text_ablation]
    python test.py -c Config_QaTa --checkpoint path/to/best_model-RecLMIS.pth.tar [--save_pred DIR]
    python test.py predict --checkpoint CKPT --image scan.png --text "report" --out out/scan
    python test.py predict --checkpoint CKPT --images folder/ --table reports.xlsx --out out/

``test`` is the default subcommand (``python test.py -t ...`` is ``python test.py test -t ...``), and the authors'
spellings still work: ``--cfg_path``, ``-g/--gpu N`` and ``--test_vis True``.

The model is rebuilt from the checkpoint alone (its saved config, or for the authors' files the config named
by ``-c``); ``-c`` and ``--set`` choose the data. Scores, threshold 0.5: the paper's protocol (per-image Dice and
IoU averaged over images, empty/empty counting 0) and the pooled protocol (pixels summed over the split).
``--text_ablation`` also scores the split with the reports shuffled between images and with empty reports.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
from typing import List, Optional

import torch

from Load_Dataset import build_test_split
from utils.checkpoints import BEST_NAME
from utils.config import Config, add_set_flag, load_config
from utils.data.files import split_paths
from utils.data.importer import manifest_hash
from utils.data.records import DatasetError
from utils.inference.evaluate import ABLATIONS, PROTOCOL, demo_cases_of, score_split, text_ablation
from utils.inference.folder import PredictionInterrupted, predict_folder
from utils.inference.predictor import Predictor, prediction_paths
from utils.inference.speed import AUTO, PRECISIONS, TEXT_CACHE, CompileError
from utils.logger import setup_logging
from utils.memory import tune_cpu_allocator
from utils.misc import get_device
from utils.outputs import OutputRefused, check_writable, csv_cell, keep_previous, refuse_inside, refuse_overwrite
from utils.sessions import resolve_session

logger = logging.getLogger("test")
SUMMARY_NAME = "test_summary.json"  # scores of the latest test run
ABLATION_NAME = "test_text_ablation.json"  # the latest --text_ablation's scores
PER_IMAGE_NAME = "test_per_image.csv"


def str2bool(value: str) -> bool:
    """A real boolean: the authors' ``type=bool`` took any non-empty string, "False" included, as True."""
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def non_negative_int(value: str) -> int:
    """argparse type: an integer of 0 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {number}")
    return number


def _add_common(parser: argparse.ArgumentParser, config_help: str) -> None:
    """The flags that ``train_model.py``, ``test.py`` and the tools spell the same way."""
    parser.add_argument("-c", "--config", "--cfg_path", dest="config", default="Config_QaTa",
                        help=f"{config_help} (default Config_QaTa; --cfg_path is the authors' spelling)")
    add_set_flag(parser)
    parser.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=PRECISIONS + (AUTO,), default="fp32",
                        help="fp32 (default), or opt-in bf16 (CPU/CUDA) / fp16 (CUDA) autocast: masks may differ in a "
                             "few pixels, and bf16 is slower than fp32 on some CPUs; auto times them on the first "
                             "batch and keeps the fastest")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model: a one-off compilation (tens of seconds), then faster batches")
    parser.add_argument("--text_cache", type=non_negative_int, default=TEXT_CACHE, metavar="N",
                        help=f"reuse the text tower's features of up to N reports seen before (default {TEXT_CACHE}; "
                             "0 = off). At batch 1, as here, the results are the same bits")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Test RecLMIS on a data set's test split (python test.py [test] ...), or predict new images "
                    "(python test.py predict ...).",
        epilog="Without a subcommand, test is meant: python test.py -t SESSION is python test.py test -t SESSION.")
    commands = parser.add_subparsers(dest="command", metavar="{test,predict}")
    test = commands.add_parser("test", help="score a checkpoint on the test split (the default)",
                               description="Score a checkpoint on a data set's test split.")
    _add_common(test, "config module or file naming the data set")
    which = test.add_mutually_exclusive_group(required=True)
    which.add_argument("-t", "--test_session", help="session id or folder (tests its best checkpoint)")
    which.add_argument("--checkpoint", help="any checkpoint file, ours or the authors'")
    test.add_argument("-g", "--gpu", help="the authors' spelling: CUDA device index N, as --device cuda:N (the CPU, "
                                          "with a warning, on a machine without CUDA)")
    test.add_argument("-v", "--test_vis", nargs="?", const=True, default=False, type=str2bool, metavar="BOOL",
                      help="draw a figure per image (a flag; the authors' --test_vis True/False also works)")
    test.add_argument("--save_pred", metavar="DIR", help="write each predicted mask as a 0/255 PNG")
    test.add_argument("--out", metavar="DIR", help="the folder for the results (default: the session, or a folder "
                                                   "beside --checkpoint); earlier results there move to "
                                                   "previous_tests/")
    test.add_argument("--overwrite", action="store_true", help="let --save_pred replace masks already there")
    test.add_argument("--text_ablation", action="store_true",
                      help="also score with reports shuffled between images and with empty reports")
    predict = commands.add_parser("predict", help="predict masks for new images and reports",
                                  description="Predict masks for new images and reports.")
    _add_common(predict, "the sizes for an authors' checkpoint, which carries no config")
    predict.add_argument("--checkpoint", required=True, help="a checkpoint of ours or the authors'")
    predict.add_argument("--image", help="one image file")
    predict.add_argument("--text", help="its report")
    predict.add_argument("--images", help="a folder of images ...")
    predict.add_argument("--table", help="... with a .xlsx/.csv of Image (file name) and Description (report)")
    predict.add_argument("--out", required=True, help="output prefix (one image: PREFIX_mask.png, ...), or a folder "
                                                      "(--images; or with one image, an existing folder or one "
                                                      "ending in /, where the files take the image's name)")
    predict.add_argument("--overwrite", action="store_true", help="replace output files already there")
    return parser


def parse_args(argv: List[str]) -> argparse.Namespace:
    if not argv or argv[0] not in ("test", "predict", "-h", "--help"):
        argv = ["test", *argv]  # the authors' command line: python test.py -c ... -t ...
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "test" and args.gpu is not None and args.device is not None:
        parser.error("give --device or the authors' --gpu, not both")
    if args.command == "predict":
        if not args.out.strip():
            parser.error("--out is empty: give an output prefix or folder")
        if bool(args.image) == bool(args.images):
            parser.error("give --image (with --text) or --images (with --table)")
        if args.image and args.text is None:
            parser.error("--image needs --text (the report; an empty string is allowed)")
        if args.images and not args.table:
            parser.error("--images needs --table")
    return args


def choose_device(args) -> torch.device:
    """``--device`` as given (auto: CUDA when present), or the authors' ``--gpu N`` as ``cuda:N``; a ``--gpu``
    given on a machine without CUDA is ignored with a warning."""
    gpu = getattr(args, "gpu", None)
    if gpu is None:
        return get_device(args.device or "auto")
    if not torch.cuda.is_available():
        logger.warning("no CUDA device on this machine: --gpu %s is ignored, testing on the CPU", gpu)
        return torch.device("cpu")
    return get_device(f"cuda:{int(gpu)}")


def output_dir_for(args, session_dir: Optional[str]) -> str:
    if session_dir:
        return session_dir
    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    if os.path.basename(folder) == "models":
        return os.path.dirname(folder)
    return os.path.join(folder, os.path.splitext(os.path.basename(args.checkpoint))[0] + "_test")


def _cache_counts(predictor: Predictor) -> Optional[dict]:
    cache = predictor.text_cache
    return None if cache is None else {"capacity": cache.capacity, "computed": cache.misses, "reused": cache.hits}


def run_test(args, data_config: Config, checkpoint: str, out_dir: str, device: torch.device) -> dict:
    """Score ``checkpoint`` on ``data_config``'s test split; writes the per-image table, the summary (and the
    ablation) to ``out_dir``, the figures and masks where asked."""
    predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=args.precision, config=data_config,
                                          compile=args.compile, cache_text=args.text_cache)
    # The data come from -c/--set; the sizes that shape the inputs come from the model.
    cfg, dataset, loader = build_test_split(data_config, predictor.config, device)
    vis_name = f"{cfg.task_name}_visualize_test"
    # Figures are drawn into a hidden folder and moved into place once the split is scored, so an interrupted run
    # never mixes its figures with earlier ones.
    vis_dir = os.path.join(out_dir, f".{vis_name}.partial") if args.test_vis else None
    split = split_paths(cfg, "test")
    inputs = {"the test split's images": split.img_dir, "the test split's masks": split.mask_dir}
    refuse_inside(out_dir, inputs, "--out")
    if args.save_pred:
        refuse_inside(args.save_pred, inputs, "--save_pred")
        refuse_overwrite([os.path.join(args.save_pred, os.path.splitext(s.mask_path.name)[0] + ".png")
                          for s in dataset.samples], args.overwrite)
    if vis_dir and os.path.isdir(vis_dir):
        shutil.rmtree(vis_dir)  # left by a run that was killed outright: this command wrote it
    for folder in filter(None, [args.save_pred, vis_dir]):
        os.makedirs(folder, exist_ok=True)
    try:
        scores, rows = score_split(predictor, dataset, loader, save_pred=args.save_pred, vis_dir=vis_dir,
                                   progress=not args.no_progress)
        ablation = None
        if args.text_ablation:
            ablation = text_ablation(predictor, dataset, cfg.seed, progress=not args.no_progress,
                                     cases=demo_cases_of(cfg.test_dataset))
    except KeyboardInterrupt:
        if vis_dir:
            shutil.rmtree(vis_dir, ignore_errors=True)
        raise TestInterrupted(out_dir, args.save_pred) from None
    data = {"test_dataset": os.path.abspath(cfg.test_dataset), "images": len(dataset),
            "data_sha256": manifest_hash(cfg.test_dataset)}
    summary = {"checkpoint": checkpoint, "data": data, "precision": predictor.precision, "compiled": args.compile,
               "text_cache": _cache_counts(predictor), **scores, "protocol": PROTOCOL}
    if ablation is not None:
        summary["text_ablation"] = ablation
    if predictor.text_cache is not None:
        logger.info("text features: %d report(s) computed, %d reused from the cache", predictor.text_cache.misses,
                    predictor.text_cache.hits)
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
            json.dump({"checkpoint": checkpoint, "data": data, "precision": predictor.precision,
                       **summary["text_ablation"]}, handle, indent=2)
    return summary


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


def print_summary(summary: dict, out_dir: str) -> None:
    print(f"dice_pred {summary['dice']:.4f}  iou_pred {summary['iou']:.4f}  (per image, {summary['images']} images)")
    print(f"dice_pooled {summary['dice_pooled']:.4f}  iou_pooled {summary['iou_pooled']:.4f}  (pixels pooled)")
    if "text_ablation" in summary:
        ablation = summary["text_ablation"]
        print("text ablation, Dice per image (pooled):  " + "  ".join(
            f"{kind} {ablation[kind]['dice']:.4f} ({ablation[kind]['dice_pooled']:.4f})" for kind in ABLATIONS))
        shuffled = ablation["shuffled"]
        print(f"shuffled: reports deranged over different texts; {shuffled['unchanged']} of {shuffled['images']} "
              "images kept their own text (no other text could be given)")
        if "demo" in ablation:
            demo = ablation["demo"]
            oracle = demo["oracle_every_blob"]
            print(f"every-blob oracle (segments every blob, reads nothing): Dice {oracle['dice']:.4f} "
                  f"({oracle['dice_pooled']:.4f})")
            print(f"words-of-interest weight on position words {demo['woi_position']:.3f}; patches-of-interest "
                  f"weight in the named zones {demo['poi_in_zones']:.3f} (uniform: {demo['poi_chance']:.3f})")
    print(f"results: {out_dir}")


def test_main(args) -> int:
    try:
        config = load_config(args.config, args.set)
        session_dir = None
        if args.test_session:
            session_dir = resolve_session(args.test_session, config.output_root, config.task_name)
            checkpoint = os.path.join(session_dir, "models", BEST_NAME)
        else:
            checkpoint = args.checkpoint
        device = choose_device(args)
        out_dir = args.out or output_dir_for(args, session_dir)
        check_writable(out_dir)
        summary = run_test(args, config, checkpoint, out_dir, device)
    except TestInterrupted as stopped:
        print(stopped.message(), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before the test split was scored: nothing was written", file=sys.stderr)
        return 130
    except (FileNotFoundError, KeyError, TypeError, ValueError, DatasetError, CompileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary, out_dir)
    return 0


def single_prefix(out: str, image: str) -> str:
    """The output prefix of a one-image ``predict``: ``out`` itself, or inside ``out`` under the image's name when
    ``out`` is an existing folder or ends with a path separator."""
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return os.path.join(out, os.path.splitext(os.path.basename(image))[0])
    return out


def predict_main(args) -> int:
    try:
        config = load_config(args.config, args.set)
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device or "auto",
                                              precision=args.precision, config=config, compile=args.compile,
                                              cache_text=args.text_cache, max_image_pixels=config.max_image_pixels)
        if args.image:
            prefix = single_prefix(args.out, args.image)
            outputs = prediction_paths(prefix)
            if any(os.path.realpath(path) == os.path.realpath(args.image) for path in outputs):
                raise OutputRefused(f"--out {args.out} would write over the input image {args.image}; choose another "
                                    "prefix")
            refuse_overwrite(outputs, args.overwrite)
            written = predictor.predict(args.image, args.text).save(prefix)
            print("\n".join(written))
        else:
            refuse_inside(args.out, {"the --images folder": args.images}, "--out")
            done = predict_folder(predictor, args.images, args.table, args.out, not args.no_progress,
                                  overwrite=args.overwrite, max_rows=config.max_table_rows,
                                  max_mib=config.max_table_mib)
            print(f"{len(done)} image(s) predicted: {args.out}")
    except PredictionInterrupted as stopped:
        print(f"interrupted: {len(stopped.done)} of {stopped.total} image(s) predicted, their files are in "
              f"{args.out}; the image being predicted left no file. Run again with --overwrite to redo them all, "
              "or predict the rest with a table of the others", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: no prediction was written", file=sys.stderr)
        return 130
    except (FileNotFoundError, KeyError, TypeError, ValueError, OSError, DatasetError, CompileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    setup_logging()
    tune_cpu_allocator()
    return predict_main(args) if args.command == "predict" else test_main(args)


if __name__ == "__main__":
    sys.exit(main())
