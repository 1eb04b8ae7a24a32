"""The experiment behind docs/QATA.md: does the report help RecLMIS on real QaTa-COV19, and does ``improved`` help more?

    python -m tools.qata_table --out runs/qata [--rows faithful improved "faithful, no report"] [--seeds 1 2]
                               [-c Config_QaTa_CPU] [--set KEY=VALUE ...]

For every row (config overrides) and seed it trains with ``train_model.py`` and scores the best checkpoint on the
whole test split with ``test.py --text_ablation``: per-image and pooled Dice and IoU, Dice with true, shuffled (a
derangement over different texts) and empty reports, and, from the training log, validation Dice and
``val/text_gain`` at the best epoch and the time per epoch. Each run's record is appended to ``<out>/runs.jsonl`` as
soon as it ends (runs already there are skipped; a finished training whose test did not run is tested, not trained
again), and the table of means and spreads over seeds goes to ``<out>/table.md``.

The row "faithful, no report" is the same network trained and tested with one constant, empty report for every
image (``use_report=False``): the control that answers "does the report help" against the same network.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

from tools.experiments import ROOT, mean_spread, read_records, run_logged
from utils.cli import add_config_flags
from utils.config import load_config
from utils.sessions import read_epochs

ROWS: Dict[str, List[str]] = {
    "faithful": ["variant=faithful"],
    "improved": ["variant=improved"],
    "faithful, no report": ["variant=faithful", "use_report=False"],
    "improved, no report": ["variant=improved", "use_report=False"],
    "improved, token_len 18": ["variant=improved", "fit_token_len=False"],  # what reading the whole report changes
    # The peers (nets/models.py), with the faithful data pipeline and the same recipe: docs/PEERS.md.
    "U-Net": ["variant=faithful", "model=unet"],
    "LViT": ["variant=faithful", "model=lvit"],
    "GuideDecoder": ["variant=faithful", "model=guidedecoder"],
}
# The token_len line of the training log (utils/training/run.py).
_TOKEN_LEN = re.compile(r"^token_len (\d+)")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def epoch_scores(session: str) -> List[dict]:
    """Every finished epoch of a session as ``{"epoch", "dice", "text_gain", "seconds"}`` (validation Dice; a resumed
    epoch's last record wins), from :func:`utils.sessions.read_epochs`."""
    return [{"epoch": e["epoch"], "dice": e["val"]["dice"], "text_gain": e["val"].get("text_gain"),
             "seconds": e["seconds"]} for e in read_epochs(session)]


def finished_session(output_root: str, task: str) -> Optional[str]:
    """The session under ``output_root`` (any network's) whose training ended (its log says ``done:``), if any."""
    for session in sorted(glob.glob(os.path.join(output_root, task, "*", "session_*"))):
        log = os.path.join(session, os.path.basename(session) + ".log")
        if os.path.isfile(log) and any(line.startswith("done:") for line in open(log)):
            return session
    return None


def run_one(config: str, row: str, seed: int, out: str, extra: Sequence[str]) -> dict:
    """Train (unless a finished session is there) and test one (row, seed); returns its record."""
    name = re.sub(r"[^a-z0-9]+", "_", row.lower()).strip("_") + f"_seed{seed}"
    output_root = os.path.join(out, "sessions", name)
    settings = [*ROWS[row], f"seed={seed}", f"output_root={output_root}", *extra]
    task = load_config(config, settings).task_name
    session = finished_session(output_root, task)
    started = time.time()
    if session is None:
        run_logged([sys.executable, "train_model.py", "-c", config, "--no_progress", "--set", *settings],
                   dict(os.environ), os.path.join(out, f"{name}.train.log"))
        session = finished_session(output_root, task)
    started_test = time.time()
    run_logged([sys.executable, "test.py", "-c", config, "-t", os.path.basename(session), "--text_ablation",
                "--no_progress", "--set", f"output_root={output_root}", *extra], dict(os.environ),
               os.path.join(out, f"{name}.test.log"))
    test_minutes = (time.time() - started_test) / 60
    with open(os.path.join(session, "test_summary.json")) as handle:
        summary = json.load(handle)
    log = os.path.join(session, os.path.basename(session) + ".log")
    epochs = epoch_scores(session)
    best = max(epochs, key=lambda e: e["dice"])  # the first epoch with the highest validation Dice, as training
    token_len = next((int(m.group(1)) for m in map(_TOKEN_LEN.match, open(log)) if m), None)
    ablation = summary["text_ablation"]
    return {
        "row": row, "seed": seed, "config": config, "settings": settings, "session": os.path.relpath(session, ROOT),
        "dice": summary["dice"], "iou": summary["iou"], "dice_pooled": summary["dice_pooled"],
        "iou_pooled": summary["iou_pooled"], "images": summary["images"],
        "dice_true": ablation["true"]["dice"], "dice_shuffled": ablation["shuffled"]["dice"],
        "dice_empty": ablation["empty"]["dice"], "dice_pooled_shuffled": ablation["shuffled"]["dice_pooled"],
        "dice_pooled_empty": ablation["empty"]["dice_pooled"],
        "shuffled_unchanged": ablation["shuffled"]["unchanged"],
        "best_epoch": best["epoch"], "val_dice_best": best["dice"], "val_text_gain_best": best["text_gain"],
        "epochs": len(epochs), "epoch_seconds": sum(e["seconds"] for e in epochs) / len(epochs),
        "train_minutes": sum(e["seconds"] for e in epochs) / 60, "test_minutes": test_minutes,
        "wall_minutes": (time.time() - started) / 60, "token_len": token_len,
        "machine": f"{cpu_name()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
    }


COLUMNS = [("dice", "Dice", 3), ("iou", "IoU", 3), ("dice_pooled", "Dice pooled", 3), ("iou_pooled", "IoU pooled", 3),
           ("dice_shuffled", "Dice shuffled", 3), ("dice_empty", "Dice empty", 3),
           ("val_text_gain_best", "val text gain (best epoch)", 3), ("best_epoch", "best epoch", 1),
           ("epoch_seconds", "s/epoch", 1), ("train_minutes", "train min", 1)]


def table(records: List[dict], rows: Sequence[str]) -> str:
    """Markdown: one line per row, mean ± sample standard deviation over its seeds; text gain = true - shuffled."""
    lines = ["| row | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " | test text gain |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for row in rows:
        mine = sorted((r for r in records if r["row"] == row), key=lambda r: r["seed"])
        if not mine:
            continue
        cells = [mean_spread([float(r[key]) for r in mine if r[key] is not None], digits)
                 if any(r[key] is not None for r in mine) else "-" for key, _, digits in COLUMNS]
        gain = mean_spread([r["dice_true"] - r["dice_shuffled"] for r in mine])
        seeds = ",".join(str(r["seed"]) for r in mine)
        lines.append(f"| {row} | {seeds} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Does the report help RecLMIS on QaTa-COV19 (docs/QATA.md)?")
    parser.add_argument("--out", required=True, help="folder for the sessions, logs, runs.jsonl and table.md")
    parser.add_argument("--rows", nargs="*", default=list(ROWS)[:3], choices=list(ROWS), metavar="ROW",
                        help=f"rows to run (default the first three): {', '.join(repr(r) for r in ROWS)}")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2])
    add_config_flags(parser, "the recipe", default="Config_QaTa_CPU", device=False)
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    os.chdir(ROOT)  # the recipes' data paths are relative to the repository, as for train_model.py
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "runs.jsonl")
    records = read_records(results)
    done = {(r["row"], r["seed"]) for r in records}
    # Seed-major order: every row gets its first seed before any gets its second.
    todo = [(row, seed) for seed in args.seeds for row in args.rows if (row, seed) not in done]
    print(f"{len(todo)} run(s) to do, {len(done)} already in {results}", flush=True)
    for row, seed in todo:
        try:
            record = run_one(args.config, row, seed, args.out, args.set)
        except RuntimeError as failure:  # one failed run does not stop the others; run again to retry it
            print(f"{row} seed {seed} failed: {failure}", flush=True)
            continue
        with open(results, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        records.append(record)
        print(f"{row} seed {seed}: Dice {record['dice']:.4f} (pooled {record['dice_pooled']:.4f}) shuffled "
              f"{record['dice_shuffled']:.4f} empty {record['dice_empty']:.4f} ({record['wall_minutes']:.1f} min)",
              flush=True)
    text = table(records, args.rows)
    with open(os.path.join(args.out, "table.md"), "w") as handle:
        handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
