"""Logging to the console and the session's log file, set up once by the entry points."""

from __future__ import annotations

import logging
import sys


def setup_logging(log_file: str = None, level: int = logging.INFO) -> None:
    """Messages as they are (the authors' ``%(message)s``) to stderr and, when given, appended to ``log_file``."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level, handlers=handlers, force=True)
