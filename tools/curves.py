"""Training curves of a session, drawn from its epoch records.

    python -m tools.curves SESSION [-c Config_QaTa]      # writes <session>/training_curves.png

Training draws them when it ends; this command draws them for any session, finished or still running, from its
``epochs.jsonl`` (or, for a session written before that file existed, from its log's epoch lines).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from utils.cli import add_config_flags
from utils.config import load_config
from utils.curves import draw_session_curves
from utils.sessions import resolve_session


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Draw a session's training curves from its epoch records.")
    parser.add_argument("session", help="session id or folder")
    add_config_flags(parser, "config naming the task (for a session id)", device=False)
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
