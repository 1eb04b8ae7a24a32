"""Where a run may write: never into its inputs, never over a file it did not make unless asked, earlier results kept.

The rules every command that writes results follows (docs/RELIABILITY.md, "Writing results"):

- :func:`refuse_inside`: an output folder is never an input folder (a split's ``img/`` and ``labelcol/``, the
  ``--images`` folder of ``predict``) or inside one.
- :func:`refuse_overwrite`: files that already exist are not overwritten unless the user passes ``--overwrite``.
- :func:`keep_previous`: a result file that a new run would replace (a session's ``test_summary.json`` ...) is moved
  into ``previous_tests/<time>/`` beside it first, so earlier results are kept.

All raise :class:`OutputRefused` (a ``ValueError``) before any work is done, with the path and the fix. Standard
library only.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

PathLike = Union[str, os.PathLike]
PREVIOUS = "previous_tests"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class OutputRefused(ValueError):
    """An output would land in an input folder or over a file the user did not ask to replace."""


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def refuse_inside(output: PathLike, inputs: Dict[str, PathLike], flag: str) -> None:
    """Raise :class:`OutputRefused` when the folder ``output`` is one of ``inputs`` (a description -> folder) or lies
    inside one; symbolic links are followed, so a link into an input folder counts as the folder."""
    target = Path(os.path.realpath(output))
    for what, folder in inputs.items():
        if _inside(target, Path(os.path.realpath(folder))):
            raise OutputRefused(f"{flag} {output} is inside {what} ({folder}): a run never writes into its input "
                                "folders; choose another folder")


def refuse_overwrite(paths: Iterable[PathLike], overwrite: bool, flag: str = "--overwrite") -> None:
    """Raise :class:`OutputRefused` naming the files of ``paths`` that exist, unless ``overwrite``."""
    if overwrite:
        return
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise OutputRefused(f"{len(existing)} file(s) would be overwritten: {', '.join(existing[:3])}{more}; pass "
                            f"{flag} to replace them, or choose another output")


def keep_previous(folder: PathLike, names: Iterable[str], now: Optional[datetime.datetime] = None) -> List[str]:
    """Move the files or folders ``names`` that exist in ``folder`` into ``folder/previous_tests/<UTC time>/``,
    together, so a new run's results never replace or mix with an earlier run's. Returns their new locations."""
    present = [name for name in names if os.path.exists(os.path.join(folder, name))]
    if not present:
        return []
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H-%M-%SZ")
    archive = Path(folder) / PREVIOUS / stamp
    suffix = 1
    while archive.exists():
        suffix += 1
        archive = Path(folder) / PREVIOUS / f"{stamp}_{suffix}"
    archive.mkdir(parents=True)
    moved = []
    for name in present:
        os.replace(os.path.join(folder, name), archive / name)
        moved.append(str(archive / name))
    return moved


def csv_cell(text: str) -> str:
    """``text`` safe in a CSV cell that a spreadsheet opens: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab
    or a carriage return would run as a formula, so it gets a leading apostrophe (shown as text, as spreadsheets
    do for typed text). Reports and file names are user text."""
    return "'" + text if text[:1] in FORMULA_STARTS else text


def check_writable(folder: PathLike) -> None:
    """Raise :class:`OutputRefused` when ``folder`` (made if missing) cannot take a new file: checked before the
    work, so a read-only session fails at once instead of after scoring the whole split."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = Path(folder) / f".write_check_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputRefused(f"cannot write results to {folder} ({error.strerror or error}); choose a writable "
                            "folder with --out") from None
