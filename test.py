"""Score a trained RecLMIS on the test split, draw what it did, or predict new images.

    python test.py -c Config_QaTa --test_session session_09.25_00h27 [--gpu 0] [--test_vis True] [--text_ablation]
    python test.py -c Config_QaTa --checkpoint path/to/best_model-RecLMIS.pth.tar [--save_pred DIR]
    python test.py predict --checkpoint CKPT --image scan.png --text "report" --out out/scan
    python test.py predict --checkpoint CKPT --images folder/ --table reports.xlsx --out out/

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
import sys
from typing import List, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from Load_Dataset import ImageToImage2D, build_test_split
from utils.config import Config, load_config
from utils.data.demo import INFO_FILE, demo_cases
from utils.data.files import DatasetError
from utils.data.tokenizer import ReportTokenizer
from utils.inference.figures import draw_case
from utils.inference.language import every_blob_logits, interest_shares, report_cycle
from utils.inference.predictor import AUTO, PRECISIONS, TEXT_CACHE, CompileError, Predictor
from utils.logger import setup_logging
from utils.memory import tune_cpu_allocator
from utils.misc import get_device
from utils.training.checkpoint import BEST_NAME, build_model_from_checkpoint
from utils.training.engine import to_device
from utils.training.metrics import SegmentationMeter
from utils.training.sessions import resolve_session

logger = logging.getLogger("test")
SUMMARY_NAME = "test_summary.json"  # scores of the latest test run
ABLATION_NAME = "test_text_ablation.json"  # the latest --text_ablation's scores, kept by later plain runs


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


def _cache_counts(predictor: Predictor) -> Optional[dict]:
    cache = predictor.text_cache
    return None if cache is None else {"capacity": cache.capacity, "computed": cache.misses, "reused": cache.hits}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Test RecLMIS on a data set's test split.",
        epilog="To predict new images instead: python test.py predict --checkpoint CKPT (--image FILE --text REPORT"
               " | --images FOLDER --table TABLE) --out OUT; see python test.py predict --help.")
    parser.add_argument("-c", "--cfg_path", default="Config_QaTa", help="config module or file naming the data set")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    parser.add_argument("-t", "--test_session", help="session id or folder (tests its best checkpoint)")
    parser.add_argument("--checkpoint", help="any checkpoint file, ours or the authors'")
    parser.add_argument("-g", "--gpu", help="CUDA device index (default: 0 when CUDA is present, else the CPU)")
    parser.add_argument("-v", "--test_vis", type=str2bool, default=False, help="draw a figure per image (True/False)")
    parser.add_argument("--save_pred", metavar="DIR", help="write each predicted mask as a 0/255 PNG")
    parser.add_argument("--text_ablation", action="store_true",
                        help="also score with reports shuffled between images and with empty reports")
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
    args = parser.parse_args(argv)
    if bool(args.test_session) == bool(args.checkpoint):
        parser.error("give exactly one of --test_session and --checkpoint")
    return args


def choose_device(gpu: Optional[str]) -> torch.device:
    """CUDA device ``gpu`` (0 when not given) where CUDA is present, else the CPU; a ``--gpu`` given on a machine
    without CUDA is ignored with a warning."""
    if not torch.cuda.is_available():
        if gpu is not None:
            logger.warning("no CUDA device on this machine: --gpu %s is ignored, testing on the CPU", gpu)
        return torch.device("cpu")
    return get_device(f"cuda:{int(gpu or 0)}")


def output_dir_for(args, session_dir: Optional[str]) -> str:
    if session_dir:
        return session_dir
    folder = os.path.dirname(os.path.abspath(args.checkpoint))
    if os.path.basename(folder) == "models":
        return os.path.dirname(folder)
    return os.path.join(folder, os.path.splitext(os.path.basename(args.checkpoint))[0] + "_test")


def run(args, data_config: Config, checkpoint: str, out_dir: str, device: torch.device) -> dict:
    model = build_model_from_checkpoint(checkpoint, data_config)[0]
    model_cfg = model.config
    predictor = Predictor(model, device, args.precision, compile=args.compile, cache_text=args.text_cache)
    # The data come from -c/--set; the sizes that shape the inputs come from the model.
    cfg, dataset, loader = build_test_split(data_config, model_cfg, device)
    tokenizer = ReportTokenizer(cfg.token_len, cfg.pad_short_reports)
    vis_dir = os.path.join(out_dir, f"{cfg.task_name}_visualize_test")
    for folder in filter(None, [args.save_pred, vis_dir if args.test_vis else None]):
        os.makedirs(folder, exist_ok=True)
    meter = SegmentationMeter(strict=True, dice="paper")
    rows = []
    mask_of = {sample.name: sample.mask_path.name for sample in dataset.samples}
    with torch.inference_mode():
        for batch in tqdm(loader, desc="test", disable=args.no_progress, dynamic_ncols=True):
            images, labels, tokens, mask = to_device(batch, device)
            out = predictor.outputs(images, tokens, mask, return_weights=args.test_vis)
            logits = out["logits"]
            scores = meter.update(logits, labels)
            preds = (logits > 0).squeeze(1).cpu().numpy()
            for i, name in enumerate(batch["name"]):
                mask_name = mask_of[name]
                dice, jac = float(scores["dice"][i]), float(scores["iou"][i])
                rows.append({"name": name, "mask": mask_name, "report": batch["text"][i], "dice": dice, "iou": jac})
                if args.save_pred:
                    cv2.imwrite(os.path.join(args.save_pred, os.path.splitext(mask_name)[0] + ".png"),
                                preds[i].astype(np.uint8) * 255)
                if args.test_vis:
                    image = (batch["image"][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                    words = tokenizer.report_token_strings(batch["text_token"][i], batch["text"][i])
                    grid = cfg.img_size // 16
                    draw_case(os.path.join(vis_dir, f"{os.path.splitext(name)[0]}_dice{dice:.3f}.png"), image,
                              torch.sigmoid(logits[i, 0]).cpu().numpy(), batch["text"][i], words,
                              out["word_weights"][i, 1:1 + len(words)].cpu().numpy(),
                              out["patch_weights"][i].reshape(grid, grid).cpu().numpy(),
                              truth=batch["label"][i].numpy(), dice=dice)
    summary = {"checkpoint": checkpoint, "precision": predictor.precision, "compiled": args.compile,
               "text_cache": _cache_counts(predictor), "images": meter.images, **meter.compute(),
               "protocol": "dice/iou: per-image mean, threshold > 0.5, empty/empty = 0; *_pooled: pixels summed"}
    if args.text_ablation:
        summary["text_ablation"] = text_ablation(predictor, dataset, tokenizer, cfg.seed, not args.no_progress)
        demo = demo_language_measures(predictor, dataset, tokenizer, cfg.test_dataset)
        if demo is not None:
            summary["text_ablation"]["demo"] = demo
    if predictor.text_cache is not None:
        logger.info("text features: %d report(s) computed, %d reused from the cache", predictor.text_cache.misses,
                    predictor.text_cache.hits)
    with open(os.path.join(out_dir, "test_per_image.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "mask", "report", "dice", "iou"])
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out_dir, SUMMARY_NAME), "w") as handle:
        json.dump(summary, handle, indent=2)
    if "text_ablation" in summary:  # its own file too: a later plain run rewrites the summary, not this
        with open(os.path.join(out_dir, ABLATION_NAME), "w") as handle:
            json.dump({"checkpoint": checkpoint, "precision": predictor.precision, **summary["text_ablation"]}, handle,
                      indent=2)
    return summary


def ablated_reports(dataset: ImageToImage2D, tokenizer: ReportTokenizer, seed: int):
    """``{"true", "shuffled", "empty"}`` -> ``(tokens [N, L], text_mask [N, L])``: the split's own reports; each
    image given another image's report (a random cycle: no image keeps its own); an empty report (the start and
    end tokens only, without the authors' short-report padding) for every image."""
    n = len(dataset)
    donor = report_cycle(n, seed)
    empty = ReportTokenizer(tokenizer.token_len, pad_short_reports=False)([""] * n)  # start and end tokens only
    return {"true": (dataset.text_tokens, dataset.text_masks),
            "shuffled": (dataset.text_tokens[donor], dataset.text_masks[donor]),
            "empty": (empty.tokens, empty.text_mask)}


def text_ablation(predictor: Predictor, dataset: ImageToImage2D, tokenizer: ReportTokenizer, seed: int,
                  progress: bool = True) -> dict:
    """The test split scored (paper protocol and pooled) with true, shuffled and empty reports."""
    results = {}
    for kind, (tokens, masks) in ablated_reports(dataset, tokenizer, seed).items():
        meter = SegmentationMeter(strict=True, dice="paper")
        with torch.inference_mode():
            for i in tqdm(range(len(dataset)), desc=f"text ablation: {kind}", disable=not progress,
                          dynamic_ncols=True):
                sample = dataset[i]
                logits = predictor(sample["image"][None], tokens[i:i + 1], masks[i:i + 1])
                meter.update(logits, sample["label"][None].to(logits.device))
        results[kind] = {**meter.compute(), "images": meter.images}
    return results


def demo_language_measures(predictor: Predictor, dataset: ImageToImage2D, tokenizer: ReportTokenizer,
                           test_folder: str) -> Optional[dict]:
    """On the demo set (a ``demo.json`` beside the test folder), the every-blob oracle's Dice and the mean
    interest-map shares of :func:`utils.inference.language.interest_shares`; None on any other data set."""
    root = os.path.dirname(os.path.normpath(test_folder))
    if not os.path.isfile(os.path.join(root, INFO_FILE)):
        return None
    cases = demo_cases(root, "test")
    oracle = SegmentationMeter(strict=True, dice="paper")
    shares = []
    with torch.inference_mode():
        for i in range(len(dataset)):
            sample = dataset[i]
            case = cases[sample["name"]]
            label = sample["label"][None]
            oracle.update(every_blob_logits(case.blobs, dataset.img_size), label)
            out = predictor.outputs(sample["image"][None], sample["text_token"][None], sample["text_mask"][None],
                                    return_weights=True)
            shares.append(interest_shares(tokenizer.token_strings(sample["text_token"]), out["word_weights"][0],
                                          out["patch_weights"][0], case.zones, dataset.img_size))
    means = {key: float(np.mean([row[key] for row in shares])) for key in shares[0]}
    return {"oracle_every_blob": {**oracle.compute(), "images": oracle.images}, **means}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict"]:
        return predict_main(argv[1:])
    args = parse_args(argv)
    setup_logging()
    tune_cpu_allocator()
    try:
        config = load_config(args.cfg_path, args.set)
        session_dir = None
        if args.test_session:
            session_dir = resolve_session(args.test_session, config.output_root, config.task_name)
            checkpoint = os.path.join(session_dir, "models", BEST_NAME)
        else:
            checkpoint = args.checkpoint
        device = choose_device(args.gpu)
        out_dir = output_dir_for(args, session_dir)
        os.makedirs(out_dir, exist_ok=True)
        summary = run(args, config, checkpoint, out_dir, device)
    except (FileNotFoundError, KeyError, TypeError, ValueError, DatasetError, CompileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"dice_pred {summary['dice']:.4f}  iou_pred {summary['iou']:.4f}  (per image, {summary['images']} images)")
    print(f"dice_pooled {summary['dice_pooled']:.4f}  iou_pooled {summary['iou_pooled']:.4f}  (pixels pooled)")
    if "text_ablation" in summary:
        ablation = summary["text_ablation"]
        print("text ablation, Dice per image (pooled):  " + "  ".join(
            f"{kind} {ablation[kind]['dice']:.4f} ({ablation[kind]['dice_pooled']:.4f})"
            for kind in ("true", "shuffled", "empty")))
        if "demo" in ablation:
            demo = ablation["demo"]
            oracle = demo["oracle_every_blob"]
            print(f"every-blob oracle (segments every blob, reads nothing): Dice {oracle['dice']:.4f} "
                  f"({oracle['dice_pooled']:.4f})")
            print(f"words-of-interest weight on position words {demo['woi_position']:.3f}; patches-of-interest "
                  f"weight in the named zones {demo['poi_in_zones']:.3f} (uniform: {demo['poi_chance']:.3f})")
    print(f"results: {out_dir}")
    return 0


def parse_predict_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="test.py predict", description="Predict masks for new images and reports.")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of ours or the authors'")
    parser.add_argument("-c", "--cfg_path", default="Config_QaTa", help="the sizes for an authors' checkpoint")
    parser.add_argument("--image", help="one image file")
    parser.add_argument("--text", help="its report")
    parser.add_argument("--images", help="a folder of images ...")
    parser.add_argument("--table", help="... with a .xlsx/.csv of Image (file name) and Description (report)")
    parser.add_argument("--out", required=True, help="output prefix (one image) or folder (--images)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=PRECISIONS + (AUTO,), default="fp32",
                        help="fp32 (default), bf16, fp16 (CUDA) or auto (the fastest here, timed on the first image)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on a folder)")
    parser.add_argument("--text_cache", type=non_negative_int, default=TEXT_CACHE, metavar="N",
                        help=f"reuse the text features of up to N reports (default {TEXT_CACHE}; 0 = off)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if bool(args.image) == bool(args.images):
        parser.error("give --image (with --text) or --images (with --table)")
    if args.image and args.text is None:
        parser.error("--image needs --text (the report; an empty string is allowed)")
    if args.images and not args.table:
        parser.error("--images needs --table")
    return args


def predict_main(argv: List[str]) -> int:
    from utils.inference.folder import RecLMISPredictor, predict_folder

    args = parse_predict_args(argv)
    setup_logging()
    tune_cpu_allocator()
    try:
        predictor = RecLMISPredictor(args.checkpoint, args.device, args.precision, load_config(args.cfg_path),
                                     compile=args.compile, cache_text=args.text_cache)
        if args.image:
            written = predictor.predict(args.image, args.text).save(args.out)
            print("\n".join(written))
        else:
            done = predict_folder(predictor, args.images, args.table, args.out, not args.no_progress)
            print(f"{len(done)} image(s) predicted: {args.out}")
    except (FileNotFoundError, KeyError, TypeError, ValueError, OSError, DatasetError, CompileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
