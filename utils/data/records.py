"""What a data set is made of, as every data module names it: splits, folders, columns, and the records a check
fills in (:class:`Problem`, :class:`ReportTable`, :class:`SplitIndex`), and :class:`DatasetError`.

A data set is three split folders (``Train_Folder``, ``Val_Folder``, ``Test_Folder``), each holding ``img/`` and
``labelcol/``, plus report tables with the columns ``Image`` (the mask's file name) and ``Description``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

SPLITS = ("train", "val", "test")
PAIRINGS = ("qata", "stem")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TABLE_EXTENSIONS = (".xlsx", ".csv")
IMAGE_COLUMN = "Image"
REPORT_COLUMN = "Description"
QATA_MASK_PREFIX = "mask_"
IMG_DIR = "img"
MASK_DIR = "labelcol"

ERROR = "error"
WARNING = "warning"

# Folder names LViT's README and downloads use for the authors' task names (docs/QUIRKS.md, A1), for hints only.
TASK_ALIASES = (
    ("Covid19", "QaTa-Covid19", "QaTa-COV19", "QaTa-COV19-v2", "QaTa-COV-v2"),
    ("MosMedplus", "MosMedDataPlus", "MosMedData+", "MosMedPlus"),
    ("MoNuSeg",),
)


class DatasetError(ValueError):
    """A data set folder or table that cannot be used. The message names the file or table row and how to fix it."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set.

    Attributes:
        severity: ``"error"`` (the set cannot be trained on) or ``"warning"`` (reported; training goes on).
        code: a stable name for the kind of problem (``"missing_row"``, ``"size_mismatch"``, ...).
        split: the split it concerns (``"train"``), or ``"train+val"`` for a table that several splits share.
        message: what is wrong, naming the file or row, and how to fix it.
    """

    severity: str
    code: str
    split: str
    message: str


@dataclass(frozen=True)
class SplitPaths:
    """Where one split lives: its folder, ``img/``, ``labelcol/`` and report table."""

    split: str
    folder: Path
    img_dir: Path
    mask_dir: Path
    table: Path


@dataclass
class ReportTable:
    """A report table read into ``{mask file name: report}``.

    Attributes:
        path: the table file.
        reports: mask file name -> report text (stripped; ``""`` for an empty cell).
        rows: mask file name -> the spreadsheet row it came from (the header is row 1).
        n_rows: data rows in the file, blank rows included.
        readable: False when the file is missing or unreadable or lacks a column; ``reports`` is then empty.
        problems: what is wrong with the table itself.
    """

    path: Path
    reports: Dict[str, str] = field(default_factory=dict)
    rows: Dict[str, int] = field(default_factory=dict)
    n_rows: int = 0
    readable: bool = False
    problems: List[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Sample:
    """One image, its mask and its report."""

    image_path: Path
    mask_path: Path
    report: str

    @property
    def name(self) -> str:
        """The image's file name, the sample's name in logs and pictures."""
        return self.image_path.name


@dataclass
class SplitIndex:
    """The samples of one split, in sorted order, and what stood in the way of pairing the rest.

    Attributes:
        paths: the split's folders and table.
        samples: complete image/mask/report triples, sorted by mask name (QaTa) or image name (stem pairing).
        image_names, mask_names: the image files found in ``img/`` and ``labelcol/``.
        n_reports: masks of this split that have a table row.
        problems: folder, pairing and row-lookup problems of this split (the table's own are on the table).
    """

    paths: SplitPaths
    samples: List[Sample] = field(default_factory=list)
    image_names: List[str] = field(default_factory=list)
    mask_names: List[str] = field(default_factory=list)
    n_reports: int = 0
    problems: List[Problem] = field(default_factory=list)
