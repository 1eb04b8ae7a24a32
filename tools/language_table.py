"""The experiment behind docs/LANGUAGE.md: which mechanism makes RecLMIS read its report, on the demo set.

    python -m tools.language_table --out runs/language [--rows faithful improved] [--seeds 1 2 3] [--jobs 2]

For every row (a set of config overrides on ``Config_Demo``) and seed, it trains with ``train_model.py``, then
scores the best checkpoint with ``test.py --text_ablation``: Dice with true, shuffled and empty reports, the
every-blob oracle, and the interest-map shares. Each run's numbers are appended to ``<out>/runs.jsonl`` as soon as
it ends, so an interrupted experiment continues where it stopped (runs already there are skipped); the table (mean
and spread over seeds) is printed and written to ``<out>/table.md``.

With ``--jobs 2`` two runs go side by side, each with ``--threads`` threads (default: the cores shared out) and no
loader workers, so they do not fight for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

from tools.experiments import ROOT, mean_spread, read_records, run_logged
from utils.cli import add_set_flag
from utils.config import load_config
from utils.data.demo import ensure_demo_dataset

# Each row: the overrides of Config_Demo that define it. Config_Demo itself is variant="improved".
ROWS: Dict[str, List[str]] = {
    "faithful": ["variant=faithful"],
    "faithful + report geometry": ["variant=faithful", "geometry=report"],
    "faithful + interact_residual": ["variant=faithful", "interact_residual=True"],
    "faithful + text_guide": ["variant=faithful", "text_guide=up4,up3"],
    "improved without interact_residual": ["variant=improved", "interact_residual=False"],
    "improved": ["variant=improved"],
}
_EPOCH_SECONDS = re.compile(r"^Epoch \d+/\d+ .*\| ([\d.]+)s\s*$")


def run_one(row: str, seed: int, out: str, epochs: Optional[int], threads: int, extra: Sequence[str]) -> dict:
    """Train and test one (row, seed); returns its record (also the line appended to runs.jsonl)."""
    name = re.sub(r"[^a-z0-9]+", "_", row.lower()).strip("_") + f"_seed{seed}"
    output_root = os.path.abspath(os.path.join(out, "sessions", name))
    settings = [*ROWS[row], f"seed={seed}", f"output_root={output_root}", "num_workers=0", *extra]
    if epochs is not None:
        settings.append(f"epochs={epochs}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.time()
    train_out = run_logged([sys.executable, "train_model.py", "-c", "Config_Demo", "--no_progress", "--set", *settings],
                     env, os.path.join(out, f"{name}.train.log"))
    minutes = (time.time() - started) / 60
    session = train_out.strip().splitlines()[-1]
    run_logged([sys.executable, "test.py", "-c", "Config_Demo", "-t", session, "--text_ablation", "--no_progress",
          "--set", f"output_root={output_root}"], env, os.path.join(out, f"{name}.test.log"))
    session_dir = os.path.join(output_root, "Demo", "RecLMIS", session)
    with open(os.path.join(session_dir, "test_summary.json")) as handle:
        ablation = json.load(handle)["text_ablation"]
    with open(os.path.join(session_dir, "config.json")) as handle:
        config = json.load(handle)
    with open(os.path.join(session_dir, session + ".log")) as handle:
        seconds = [float(m.group(1)) for m in map(_EPOCH_SECONDS.match, handle) if m]
    demo = ablation["demo"]
    return {"row": row, "seed": seed, "settings": settings, "session": session_dir,
            "dice_true": ablation["true"]["dice"], "dice_shuffled": ablation["shuffled"]["dice"],
            "dice_empty": ablation["empty"]["dice"], "dice_oracle": demo["oracle_every_blob"]["dice"],
            "woi_position": demo["woi_position"], "poi_in_zones": demo["poi_in_zones"],
            "poi_chance": demo["poi_chance"], "epochs": len(seconds), "epoch_seconds": sum(seconds) / len(seconds),
            "minutes": minutes, "threads": threads, "variant": config["variant"],
            "date": time.strftime("%Y-%m-%d")}


COLUMNS = [("dice_true", "Dice true", 3), ("dice_shuffled", "shuffled", 3), ("dice_empty", "empty", 3),
           ("dice_oracle", "every-blob oracle", 3), ("woi_position", "WOI on position words", 2),
           ("poi_in_zones", "POI in named zones", 3), ("epochs", "epochs", 0), ("epoch_seconds", "s/epoch", 1),
           ("minutes", "minutes", 1)]


def table(records: List[dict], rows: Sequence[str]) -> str:
    """Markdown: one line per row, mean ± sample standard deviation over its seeds."""
    lines = ["| row | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " | text gain | over oracle |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    for row in rows:
        mine = [r for r in records if r["row"] == row]
        if not mine:
            continue
        cells = [mean_spread([float(r[key]) for r in mine], digits) for key, _, digits in COLUMNS]
        gain = mean_spread([r["dice_true"] - r["dice_shuffled"] for r in mine])
        over = mean_spread([r["dice_true"] - r["dice_oracle"] for r in mine])
        seeds = ",".join(str(r["seed"]) for r in sorted(mine, key=lambda r: r["seed"]))
        lines.append(f"| {row} | {seeds} | " + " | ".join(cells) + f" | {gain} | {over} |")
    chance = sorted({round(r["poi_chance"], 3) for r in records})
    lines.append("")
    lines.append(f"POI in named zones for uniform weights (chance): {', '.join(map(str, chance))}.")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Which mechanism makes RecLMIS read its report (demo set).")
    parser.add_argument("--out", required=True, help="folder for the sessions, logs, runs.jsonl and table.md")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), metavar="ROW",
                        help=f"rows to run (default all): {', '.join(ROWS)}")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, help="epochs (default: Config_Demo's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (default 1)")
    parser.add_argument("--threads", type=int, help="threads per run (default: the cores divided by --jobs)")
    add_set_flag(parser, "more overrides for every row")
    args = parser.parse_args(argv)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    args.out = os.path.abspath(args.out)
    os.chdir(ROOT)  # Config_Demo's data paths are relative to the repository, as for train_model.py
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "runs.jsonl")
    records = read_records(results)
    done = {(r["row"], r["seed"]) for r in records}
    todo = [(row, seed) for row in args.rows for seed in args.seeds if (row, seed) not in done]
    print(f"{len(todo)} run(s) to do, {len(done)} already in {results}", flush=True)

    ensure_demo_dataset(load_config("Config_Demo"))  # written once, before runs go side by side

    def work(item):
        try:
            record = run_one(item[0], item[1], args.out, args.epochs, threads, args.set)
        except RuntimeError as failure:  # one failed run does not stop the others; run again to retry it
            print(f"{item[0]} seed {item[1]} failed: {failure}", flush=True)
            return None
        with open(results, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{item[0]} seed {item[1]}: true {record['dice_true']:.4f} shuffled {record['dice_shuffled']:.4f} "
              f"empty {record['dice_empty']:.4f} oracle {record['dice_oracle']:.4f} "
              f"({record['minutes']:.1f} min)", flush=True)
        return record

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        records += [record for record in pool.map(work, todo) if record is not None]
    text = table(records, args.rows)
    with open(os.path.join(args.out, "table.md"), "w") as handle:
        handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
