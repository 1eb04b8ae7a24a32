"""Predict every image of a folder whose reports a table gives: ``python test.py predict --images ...``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from tqdm import tqdm

from utils.config import Config
from utils.data.records import ERROR
from utils.data.tables import read_report_table
from utils.inference.predictor import Predictor, prediction_paths
from utils.outputs import refuse_overwrite


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`predict_folder`: ``done`` names the images whose three files were written to
    ``out_dir`` (the one in progress left none), ``total`` the images the table named."""

    def __init__(self, done: List[str], total: int, out_dir: str):
        super().__init__(f"interrupted after {len(done)} of {total} images")
        self.done = done
        self.total = total
        self.out_dir = out_dir

    def message(self) -> str:
        return (f"interrupted: {len(self.done)} of {self.total} image(s) predicted, their files are in "
                f"{self.out_dir}; the image being predicted left no file. Run again with --overwrite to redo them "
                "all, or predict the rest with a table of the others")


def predict_folder(predictor: Predictor, images: str, table: str, out_dir: str,
                   progress: bool = True, overwrite: bool = False, max_rows: int = Config.max_table_rows,
                   max_mib: int = Config.max_table_mib) -> List[str]:
    """Predict every image named in ``table`` (``.xlsx``/``.csv`` with ``Image`` and ``Description`` columns) from
    the folder ``images``; writes each image's three files to ``out_dir``, none of which may exist unless
    ``overwrite``. Returns the image names done. ``max_rows``, ``max_mib``: the table's limits
    (:func:`utils.data.tables.read_report_table`).

    Raises:
        FileNotFoundError: no such folder or table.
        ValueError: the table cannot be read, names an unsafe path, or names an image that is not there;
            :class:`utils.outputs.OutputRefused` when an output file exists (checked before any prediction).
        PredictionInterrupted: Ctrl-C; it says which images were done.
    """
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder {folder}")
    parsed = read_report_table(Path(table), "predict", names="the image's file name", max_rows=max_rows,
                               max_mib=max_mib)
    errors = [p.message for p in parsed.problems if p.severity == ERROR]
    if errors:
        raise ValueError(f"cannot use the report table {table}: " + "; ".join(errors[:5]))
    missing = sorted(name for name in parsed.reports if not (folder / name).is_file())
    if missing:
        raise ValueError(f"{len(missing)} image(s) named in {table} are not in {folder}: {missing[:5]}")
    stems = {}
    for name in parsed.reports:
        stems.setdefault(Path(name).stem, []).append(name)
    clashes = sorted(names for names in stems.values() if len(names) > 1)
    if clashes:
        raise ValueError(f"images whose outputs would overwrite each other (same name before the extension): "
                         f"{clashes[:5]}; rename them")
    refuse_overwrite([path for name in parsed.reports
                      for path in prediction_paths(os.path.join(out_dir, Path(name).stem))], overwrite)
    done: List[str] = []
    try:
        for name, report in tqdm(sorted(parsed.reports.items()), desc="predict", disable=not progress):
            result = predictor.predict(folder / name, report)
            result.save(os.path.join(out_dir, Path(name).stem))
            done.append(name)
    except KeyboardInterrupt:
        raise PredictionInterrupted(done, len(parsed.reports), out_dir) from None
    return done

