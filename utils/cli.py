"""The command-line pieces every command spells the same way: the config flags and argparse value types."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, TextIO

DEFAULT_CONFIG = "Config_QaTa"


def add_set_flag(parser: argparse.ArgumentParser, help: str = "override config fields") -> None:
    """``--set KEY=VALUE ...`` on an argparse parser; repeated ``--set`` add up."""
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help=help)


def add_config_flags(parser: argparse.ArgumentParser, config_help: str = "config module or file",
                     default: str = DEFAULT_CONFIG, device: bool = True) -> None:
    """``-c/--config`` (``--cfg_path``, the authors' spelling), ``--set`` and, unless ``device`` is False,
    ``--device`` (None when not given: the config's device, or auto)."""
    parser.add_argument("-c", "--config", "--cfg_path", dest="config", default=default,
                        help=f"{config_help} (default {default})")
    add_set_flag(parser)
    if device:
        parser.add_argument("--device", help="auto (CUDA when present), cpu, cuda, cuda:1, ... (default: the "
                                             "config's device)")


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no_progress``: no progress bars. Without a terminal there are none either (:func:`progress_wanted`)."""
    parser.add_argument("--no_progress", action="store_true",
                        help="no progress bars (there are none when stderr is not a terminal: logs only)")


def progress_wanted(no_progress: bool, stream: Optional[TextIO] = None) -> bool:
    """Whether to draw progress bars: not asked off, and ``stream`` (stderr, where tqdm draws) is a terminal. Into a
    file or a pipe a bar's redraws would fill the log; the per-epoch log lines say the same once."""
    stream = sys.stderr if stream is None else stream
    return not no_progress and stream.isatty()


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
