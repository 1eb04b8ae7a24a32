"""Training curves of a session, drawn from its own log file.

    python -m tools.curves SESSION [-c Config_QaTa]      # writes <session>/training_curves.png

Training draws them when it ends; this command draws them for any session, finished or still running. The log's
epoch lines (``Epoch 3/100  train: total=... | val: loss=... dice=... | lr=... | 12.3s``) are the source; after a
``--resume`` the last line of each epoch counts.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Dict, List, Optional

from utils.config import load_config
from utils.inference.figures import draw_curves
from utils.training.sessions import resolve_session

CURVES_NAME = "training_curves.png"
_EPOCH = re.compile(r"^Epoch (\d+)/\d+\s+train: (.*?) \| val: (.*?) \| lr=(\S+) \| [\d.]+s\s*$")


def _pairs(text: str) -> Dict[str, float]:
    return {key: float(value) for key, value in (item.split("=", 1) for item in text.split() if "=" in item)}


def read_epochs(log_path: str) -> List[dict]:
    """Every epoch line of a session log as ``{"epoch", "train": {...}, "val": {...}, "lr"}``, by epoch.

    Raises:
        FileNotFoundError: no such log.
        ValueError: the log holds no epoch line yet.
    """
    if not os.path.isfile(log_path):
        raise FileNotFoundError(f"no session log at {log_path}")
    epochs: Dict[int, dict] = {}
    with open(log_path, encoding="utf-8") as handle:
        for line in handle:
            match = _EPOCH.match(line.strip())
            if match:
                epoch = int(match.group(1))
                epochs[epoch] = {"epoch": epoch, "train": _pairs(match.group(2)), "val": _pairs(match.group(3)),
                                 "lr": float(match.group(4))}
    if not epochs:
        raise ValueError(f"{log_path} has no finished epoch yet: nothing to draw")
    return [epochs[e] for e in sorted(epochs)]


def session_log(session_dir: str) -> str:
    return os.path.join(session_dir, os.path.basename(os.path.normpath(session_dir)) + ".log")


def draw_session_curves(session_dir: str) -> str:
    """Draw ``training_curves.png`` in ``session_dir`` from its log; returns the PNG's path."""
    path = os.path.join(session_dir, CURVES_NAME)
    draw_curves(path, read_epochs(session_log(session_dir)))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Draw a session's training curves from its log.")
    parser.add_argument("session", help="session id or folder")
    parser.add_argument("-c", "--config", default="Config_QaTa", help="config naming the task (for a session id)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        path = draw_session_curves(resolve_session(args.session, config.output_root, config.task_name))
    except (FileNotFoundError, KeyError, TypeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
