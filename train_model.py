"""Train RecLMIS.

    python train_model.py -c Config_QaTa [--set key=value ...] [--device cpu|cuda] [--resume SESSION]
    sh train.sh <gpu ids|cpu> <Config> [more args]

Each epoch trains, then validates with no gradient; the best checkpoint is kept on validation Dice (the authors'
rule: strictly greater), the latest every epoch, and training stops after ``early_stopping_patience`` epochs
without a better Dice. Everything goes to ``<output_root>/<task_name>/RecLMIS/session_MM.DD_HHhMM/``; the session's
id is printed at the end. Exit status: 0 done, 1 failed (the session's log says why), 2 a bad command, config or
session, 130 interrupted (the latest checkpoint is saved: continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from utils.cli import add_config_flags, add_progress_flag, progress_wanted
from utils.training.run import StartError, train


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train RecLMIS.")
    add_config_flags(parser, "config module or file")
    parser.add_argument("--resume", metavar="SESSION", help="continue a session (id or folder) from its latest epoch")
    add_progress_flag(parser)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        outcome = train(args.config, args.set, device=args.device, resume=args.resume,
                        progress=progress_wanted(args.no_progress))
    except StartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if outcome.code == 0 and outcome.is_main:
        print(os.path.basename(outcome.session_dir))
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
