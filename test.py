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
Exit status: 0 done, 2 an error (one line on stderr), 130 interrupted. What runs: :mod:`utils.inference.commands`.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from utils.autocast import PRECISIONS
from utils.cli import add_config_flags, add_progress_flag, non_negative_int, progress_wanted, str2bool
from utils.data.records import DatasetError
from utils.inference.commands import PredictRequest, TestInterrupted, TestRequest, run_predict, run_test
from utils.inference.evaluate import ABLATIONS
from utils.inference.folder import PredictionInterrupted
from utils.inference.speed import AUTO, TEXT_CACHE, CompileError
from utils.logger import setup_logging
from utils.memory import tune_cpu_allocator

ERRORS = (FileNotFoundError, KeyError, TypeError, ValueError, OSError, DatasetError, CompileError)


def _add_common(parser: argparse.ArgumentParser, config_help: str) -> None:
    add_config_flags(parser, config_help)
    parser.add_argument("--precision", choices=PRECISIONS + (AUTO,), default="fp32",
                        help="fp32 (default), or opt-in bf16 (CPU/CUDA) / fp16 (CUDA) autocast: masks may differ in a "
                             "few pixels, and bf16 is slower than fp32 on some CPUs; auto times them on the first "
                             "batch and keeps the fastest")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model: a one-off compilation (tens of seconds), then faster batches")
    parser.add_argument("--text_cache", type=non_negative_int, default=TEXT_CACHE, metavar="N",
                        help=f"reuse the text tower's features of up to N reports seen before (default {TEXT_CACHE}; "
                             "0 = off). At batch 1, as here, the results are the same bits")
    add_progress_flag(parser)


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
            if "woi_position" in demo:  # a network with interest maps
                print(f"words-of-interest weight on position words {demo['woi_position']:.3f}; patches-of-interest "
                      f"weight in the named zones {demo['poi_in_zones']:.3f} (uniform: {demo['poi_chance']:.3f})")
    print(f"results: {out_dir}")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    setup_logging()
    tune_cpu_allocator()
    common = dict(config=args.config, overrides=tuple(args.set), device=args.device, precision=args.precision,
                  compile=args.compile, text_cache=args.text_cache, overwrite=args.overwrite,
                  progress=progress_wanted(args.no_progress))
    try:
        if args.command == "predict":
            done = run_predict(PredictRequest(checkpoint=args.checkpoint, out=args.out, image=args.image,
                                              text=args.text, images=args.images, table=args.table, **common))
            print("\n".join(done) if args.image else f"{len(done)} image(s) predicted: {args.out}")
            return 0
        summary, out_dir = run_test(TestRequest(session=args.test_session, checkpoint=args.checkpoint, gpu=args.gpu,
                                                out=args.out, test_vis=args.test_vis, save_pred=args.save_pred,
                                                text_ablation=args.text_ablation, **common))
    except (TestInterrupted, PredictionInterrupted) as stopped:
        print(stopped.message(), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before the test split was scored: nothing was written" if args.command == "test" else
              "interrupted: no prediction was written", file=sys.stderr)
        return 130
    except ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
