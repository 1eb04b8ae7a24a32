"""Score several trained sessions on the same test split with one evaluator, and print one table.

    python -m tools.compare SESSION [SESSION ...] -c Config_QaTa_CPU [--set ...] [--text_ablation] [--out DIR]

Each session's best checkpoint is rebuilt and scored on the test split that ``-c``/``--set`` name, as ``test.py``
scores it: Dice and IoU per image (the paper's protocol) and pooled over the split's pixels, and with
``--text_ablation`` also with shuffled and with empty reports. Beside them: the parameters held in memory and
trained, the inference path's GFLOPs per image, and the seconds per image of the scoring run (reading included).
Sessions trained on other data than the first (another training or validation folder or subset, another data set
hash, another image size) are refused, with the difference. ``--out DIR`` also writes ``compare.csv`` and
``compare.md`` there (never over earlier files without ``--overwrite``). Nothing is written into the sessions.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from typing import Dict, List, Optional

from Load_Dataset import build_test_split
from tools.summary import summarize
from utils.checkpoints import build_model_from_checkpoint, session_best
from utils.cli import add_config_flags, add_progress_flag, progress_wanted
from utils.config import Config, load_config
from utils.data.importer import manifest_hash
from utils.data.records import DatasetError
from utils.inference.evaluate import score_split, text_ablation
from utils.inference.predictor import Predictor
from utils.logger import setup_logging
from utils.misc import get_device
from utils.outputs import check_writable, refuse_overwrite
from utils.sessions import resolve_session

COLUMNS = ["session", "model", "dice", "iou", "dice_pooled", "iou_pooled", "dice_shuffled", "dice_empty", "params",
           "trainable", "gflops", "s_per_image"]


def trained_on(config: Config) -> Dict[str, object]:
    """What a session was trained on: its training and validation data and the image size."""
    return {"train_dataset": os.path.abspath(config.train_dataset), "val_dataset": os.path.abspath(config.val_dataset),
            "train_subset": config.train_subset, "val_subset": config.val_subset,
            "data_sha256": manifest_hash(config.train_dataset), "img_size": config.img_size}


def check_comparable(names: List[str], configs: List[Config]) -> None:
    """Raise ``ValueError`` naming each session trained on other data or at another size than the first."""
    first = trained_on(configs[0])
    problems = []
    for name, config in zip(names[1:], configs[1:]):
        differences = [f"{key} {value!r} vs {first[key]!r}" for key, value in trained_on(config).items()
                       if value != first[key]]
        if differences:
            problems.append(f"{name} was trained otherwise than {names[0]}: {'; '.join(differences)}")
    if problems:
        raise ValueError("sessions trained on other data or sizes are not compared: " + " | ".join(problems))


def model_of(checkpoint: str, data_config: Config):
    """``(config, size)`` of the model ``checkpoint`` rebuilds: what it was trained with, and its
    :func:`tools.summary.summarize` counts."""
    model, _ = build_model_from_checkpoint(checkpoint, data_config)
    return model.config, summarize(model)


def score_session(checkpoint: str, size: Dict, data_config: Config, device, ablation: bool, progress: bool) -> Dict:
    """One row of the table for the model of ``checkpoint`` (of :func:`model_of`'s ``size``) on ``data_config``'s
    test split."""
    predictor = Predictor.from_checkpoint(checkpoint, device=device, config=data_config)
    cfg, dataset, loader = build_test_split(data_config, predictor.config, device)
    started = time.perf_counter()
    scores, _ = score_split(predictor, dataset, loader, progress=progress)
    seconds = time.perf_counter() - started
    row = {"dice": scores["dice"], "iou": scores["iou"], "dice_pooled": scores["dice_pooled"],
           "iou_pooled": scores["iou_pooled"], "dice_shuffled": None, "dice_empty": None,
           "params": size["total"], "trainable": size["trainable"], "gflops": size["flops_inference"] / 1e9,
           "s_per_image": seconds / max(len(dataset), 1), "images": len(dataset)}
    if ablation:
        measured = text_ablation(predictor, dataset, cfg.seed, progress=progress)
        row.update(dice_shuffled=measured["shuffled"]["dice"], dice_empty=measured["empty"]["dice"])
    return row


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row[column]) for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sessions", nargs="+", metavar="SESSION", help="session ids or folders")
    add_config_flags(parser, "config module or file naming the test data (and the sessions' task)")
    parser.add_argument("--text_ablation", action="store_true", help="also score with shuffled and empty reports")
    parser.add_argument("--out", metavar="DIR", help="also write compare.csv and compare.md to DIR")
    parser.add_argument("--overwrite", action="store_true", help="let --out replace an earlier comparison")
    add_progress_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        data_config = load_config(args.config, args.set)
        device = get_device(args.device or "auto")
        folders = [resolve_session(s, data_config.output_root, data_config.task_name) for s in args.sessions]
        checkpoints = [session_best(folder) for folder in folders]
        names = [os.path.basename(os.path.normpath(folder)) for folder in folders]
        models = [model_of(path, data_config) for path in checkpoints]
        check_comparable(names, [config for config, _ in models])
        if args.out:
            check_writable(args.out)
            refuse_overwrite([os.path.join(args.out, name) for name in ("compare.csv", "compare.md")],
                             args.overwrite)
        progress = progress_wanted(args.no_progress)
        rows = [{"session": name, "model": config.model,
                 **score_session(path, size, data_config, device, args.text_ablation, progress)}
                for name, path, (config, size) in zip(names, checkpoints, models)]
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    except (FileNotFoundError, KeyError, TypeError, ValueError, OSError, DatasetError) as error:  # OutputRefused too
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = markdown_table(rows)
    print(f"{rows[0]['images']} test images of {os.path.abspath(data_config.test_dataset)}; Dice and IoU at "
          "threshold 0.5, per image (the paper's protocol) and pooled over the split's pixels")
    print(table)
    if args.out:
        with open(os.path.join(args.out, "compare.csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        with open(os.path.join(args.out, "compare.md"), "w", encoding="utf-8") as handle:
            handle.write(table + "\n")
        print(f"written: {os.path.join(args.out, 'compare.csv')}, {os.path.join(args.out, 'compare.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
