"""Finding, pairing and reading the files of a data set, the way the authors' ``ImageToImage2D`` does (spec 1.1-1.5).

A data set is three split folders (``Train_Folder``, ``Val_Folder``, ``Test_Folder``), each holding ``img/`` and
``labelcol/``, plus report tables with the columns ``Image`` (the mask's file name) and ``Description``. Which
table serves which split is config (``train_text`` ...), resolved relative to the split folder unless absolute;
QaTa-COV19 keeps train and val reports in one ``Train_Val_text.xlsx``.

Pairing (``Config.pairing``):

- ``"qata"``: a mask ``labelcol/mask_<X>.png`` belongs to the image ``img/<X>.png``; the image may have another
  extension as long as its stem is ``<X>``.
- ``"stem"``: image and mask share a file stem whatever the extensions (MoNuSeg's test images are ``.tif``, its
  masks ``.png``); this is the authors' MosMedData+ and MoNuSeg rule.

Files are listed in sorted order, so an index is the same on every file system (the authors used the unsorted
``os.listdir``). Names starting with ``.`` (``.DS_Store``, macOS ``._x.png`` shadows) are not data and are skipped;
other files without an image extension are skipped with a warning.

Everything here reports problems as :class:`Problem` records instead of raising, so that a check can list every
problem of a folder at once; :class:`DatasetError` is what the loaders raise when errors remain.

Reading (spec 1.4): images become 3-channel BGR uint8 (grey replicated, alpha dropped, palette expanded, 16-bit
reduced to its high byte, all as ``cv2.imread`` does); masks become single-channel uint8 in which every non-zero
pixel stays non-zero (a 16-bit mask of 0/1 would read as all zero through ``cv2.imread(path, 0)``).
"""

from __future__ import annotations

import functools
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from utils.data.tokenizer import ReportTokenizer

logger = logging.getLogger(__name__)

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

# Folder names LViT's README and downloads use for the authors' task names (spec 1.1), for hints only.
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


def split_paths(cfg, split: str) -> SplitPaths:
    """The folders and table of ``split`` ("train", "val" or "test") under ``cfg``.

    The table path (``cfg.<split>_text``) is relative to the split folder unless it is absolute.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(getattr(cfg, f"{split}_dataset"))
    table = Path(getattr(cfg, f"{split}_text"))
    return SplitPaths(split=split, folder=folder, img_dir=folder / IMG_DIR, mask_dir=folder / MASK_DIR,
                      table=table if table.is_absolute() else folder / table)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (``Val_Folder/../Train_Folder/x`` and ``Train_Folder/x`` do)."""
    return Path(os.path.realpath(a)) == Path(os.path.realpath(b))


# ---- report tables -------------------------------------------------------------------------------------------


def unsafe_name_reason(name: str) -> Optional[str]:
    """Why ``name`` is not a plain file name inside a folder, or None when it is.

    A table row may only name a file in the split's ``labelcol/``: separators, ``..``, absolute paths and drive
    letters would let a row point outside the data folder.
    """
    if "\x00" in name:
        return "it contains a NUL character"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return "it is a relative path"
    if len(name) >= 2 and name[1] == ":":
        return "it starts with a drive letter"
    return None


def _quote(text: str, limit: int = 60) -> str:
    """``text`` shortened for a message."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def read_report_table(path: Path, split_label: str, names: str = "the mask's file name") -> ReportTable:
    """Read a report table (``.xlsx``, first sheet, or ``.csv`` in UTF-8) into ``{mask name: report}``.

    Every cell is read as text, so a number or a formula cannot break it (a formula reads as the value the
    spreadsheet program saved with it, or as empty when none was saved). Rows that are blank in both columns are
    skipped. Rows with a problem are left out of ``reports`` and reported: a name that is not a plain file name
    (error, refused), an empty name (warning), the same name twice with different reports (error) or with the
    same report (warning), an empty report (warning; the sample is trained with an empty report).

    Args:
        path: the table file.
        split_label: the split(s) using the table, for the problems (``"train+val"``).
        names: what the ``Image`` column holds, for the messages: the mask's file name in a data set's tables,
            the image's in a table for ``test.py predict``.

    Returns:
        The table; ``readable`` is False, with one error in ``problems``, when the file is missing, is not
        ``.xlsx``/``.csv``, cannot be parsed or lacks a column.
    """
    import pandas as pd

    table = ReportTable(path=path)

    def problem(severity: str, code: str, message: str) -> None:
        table.problems.append(Problem(severity, code, split_label, message))

    if not path.is_file():
        problem(ERROR, "missing_table", _missing_table_message(path))
        return table
    suffix = path.suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        problem(ERROR, "unreadable_table",
                f"{path}: report tables must be .xlsx or .csv, not {path.suffix!r}; save it as one of those")
        return table
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        else:
            frame = pd.read_excel(path, sheet_name=0, dtype=str, keep_default_na=False, engine="openpyxl")
    except UnicodeDecodeError as error:
        problem(ERROR, "unreadable_table", f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                                           "save the table as UTF-8 CSV or as .xlsx")
        return table
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        # pandas and openpyxl raise these for a corrupt, empty or mislabelled file.
        problem(ERROR, "unreadable_table", f"{path} cannot be read as a {suffix} table "
                                           f"({type(error).__name__}: {error}); open it in a spreadsheet program "
                                           "and save it again as .xlsx or UTF-8 .csv")
        return table
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in (IMAGE_COLUMN, REPORT_COLUMN) if c not in frame.columns]
    if missing:
        problem(ERROR, "missing_columns",
                f"{path} lacks the column(s) {missing} (it has {list(frame.columns)}); the header row must name "
                f"'{IMAGE_COLUMN}' ({names}) and '{REPORT_COLUMN}' (the report)")
        return table
    table.readable = True
    names = frame[IMAGE_COLUMN].fillna("").astype(str).tolist()
    reports = frame[REPORT_COLUMN].fillna("").astype(str).tolist()
    table.n_rows = len(names)
    for i, (raw_name, raw_report) in enumerate(zip(names, reports)):
        row = i + 2  # the spreadsheet row: 1 is the header
        name, report = raw_name.strip(), raw_report.strip()
        if not name and not report:
            continue
        where = f"{path.name} row {row}"
        if not name:
            problem(WARNING, "empty_name", f"{where} has a report but an empty {IMAGE_COLUMN} cell; the row is "
                                           "ignored")
            continue
        reason = unsafe_name_reason(name)
        if reason is not None:
            problem(ERROR, "unsafe_name",
                    f"{where}: {IMAGE_COLUMN} {_quote(name)} is refused because {reason}; it must be the bare file "
                    "name of a mask in labelcol/")
            continue
        if name in table.reports:
            first = table.rows[name]
            if table.reports[name] == report:
                problem(WARNING, "duplicate_row", f"{where} repeats row {first} ({_quote(name)}, same report); "
                                                  "one is used")
            else:
                problem(ERROR, "conflicting_rows",
                        f"{path.name} rows {first} and {row} give {_quote(name)} different reports "
                        f"({_quote(table.reports[name], 40)} vs {_quote(report, 40)}); keep one row")
            continue
        if not report:
            problem(WARNING, "empty_report",
                    f"{where} ({_quote(name)}) has an empty {REPORT_COLUMN}; the sample is trained with an empty "
                    "report. (A formula whose value was never saved reads as empty: open and save the table in a "
                    "spreadsheet program.)")
        table.reports[name] = report
        table.rows[name] = row
    return table


def _missing_table_message(path: Path) -> str:
    message = f"report table {path} does not exist"
    folder = path.parent
    if folder.is_dir():
        found = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in TABLE_EXTENSIONS)
        if found:
            message += (f"; {folder} holds {found}: set the config's <split>_text to the right one (QaTa keeps train "
                        "and val reports in Train_Folder/Train_Val_text.xlsx; MosMedData+ and MoNuSeg have "
                        "Train_text.xlsx, Val_text.xlsx and Test_text.xlsx)")
            return message
    return message + "; download the reports (datasets/README.md) and put the table there, or fix <split>_text"


# ---- listing and pairing -------------------------------------------------------------------------------------


def list_images(folder: Path, split: str) -> Tuple[List[str], List[Problem]]:
    """Sorted names of the image files in ``folder``.

    Names starting with ``.`` are skipped silently; other entries without an image extension
    (:data:`IMAGE_EXTENSIONS`) and sub-folders are skipped with a warning; a folder that cannot be listed is an
    error.
    """
    names, problems = [], []
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as error:
        reason = error.strerror or str(error)
        return [], [Problem(ERROR, "unreadable_folder", split, f"{folder} cannot be listed ({reason}); check its "
                                                               "permissions")]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS):
            names.append(entry.name)
        else:
            kind = "a folder" if entry.is_dir() else "not an image file"
            problems.append(Problem(WARNING, "ignored_file", split,
                                    f"{folder / entry.name} is {kind} (images are {', '.join(IMAGE_EXTENSIONS)}); "
                                    "ignored"))
    return names, problems


def _by_stem(names: Sequence[str], strip_prefix: str, folder: Path, split: str,
             problems: List[Problem]) -> Dict[str, str]:
    """Map the stem of each name (after ``strip_prefix``) to the name; two names with one stem are an error."""
    keyed: Dict[str, str] = {}
    for name in names:
        key = Path(name[len(strip_prefix):]).stem
        if key in keyed:
            problems.append(Problem(ERROR, "ambiguous_pair", split,
                                    f"{folder / keyed[key]} and {folder / name} have the same stem {key!r}, so the "
                                    "pairing cannot tell which one to use; remove one"))
            continue
        keyed[key] = name
    return keyed


def pair_files(paths: SplitPaths, image_names: Sequence[str], mask_names: Sequence[str],
               pairing: str) -> Tuple[List[Tuple[str, str]], List[Problem]]:
    """Pair image and mask file names by the config's rule.

    Args:
        paths: the split, for the messages.
        image_names, mask_names: the files of ``img/`` and ``labelcol/``.
        pairing: ``"qata"`` (``mask_<X>.* <-> <X>.*``) or ``"stem"`` (same stem).

    Returns:
        ``[(image name, mask name)]`` sorted by mask name (QaTa: the authors iterate the masks) or by image name
        (stem: they iterate the images), and the problems: a QaTa mask without the ``mask_`` prefix, an image
        without a mask, a mask without an image, two files with one stem (all errors).
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    split, problems = paths.split, []
    prefix = QATA_MASK_PREFIX if pairing == "qata" else ""
    if prefix:
        unprefixed = [m for m in mask_names if not m.startswith(prefix)]
        if unprefixed:
            hint = (" None of the masks has it: this looks like a set paired by file stem (MosMedData+, MoNuSeg); "
                    "use its config or pairing='stem'." if len(unprefixed) == len(mask_names) else "")
            for m in unprefixed:
                problems.append(Problem(ERROR, "bad_mask_name", split,
                                        f"{paths.mask_dir / m} does not follow QaTa's naming mask_<image name> "
                                        f"(pairing='qata').{hint}"))
            mask_names = [m for m in mask_names if m.startswith(prefix)]
    images = _by_stem(image_names, "", paths.img_dir, split, problems)
    masks = _by_stem(mask_names, prefix, paths.mask_dir, split, problems)
    for key in sorted(set(images) - set(masks)):
        expected = f"{prefix}{key}.png"
        problems.append(Problem(ERROR, "image_without_mask", split,
                                f"{paths.img_dir / images[key]} has no mask (expected {paths.mask_dir / expected}); "
                                "add the mask or remove the image"))
    for key in sorted(set(masks) - set(images)):
        problems.append(Problem(ERROR, "mask_without_image", split,
                                f"{paths.mask_dir / masks[key]} has no image (expected {paths.img_dir / key}.<ext>); "
                                "add the image or remove the mask"))
    pairs = [(images[k], masks[k]) for k in set(images) & set(masks)]
    pairs.sort(key=lambda pair: pair[1] if pairing == "qata" else pair[0])
    return pairs, problems


def index_split(paths: SplitPaths, table: Optional[ReportTable], pairing: str) -> SplitIndex:
    """List, pair and look up the reports of one split.

    Args:
        paths: the split's folders (:func:`split_paths`).
        table: its report table, already read (:func:`read_report_table`). A table that is not ``readable``
            leaves every pair without a report and without a problem per pair: the table's own problem says why.
        pairing: ``"qata"`` or ``"stem"``.

    Returns:
        The index. A missing folder is one error and an empty index; a pair without a table row is an error
        naming the mask (with a hint when the table names the image or another extension instead).
    """
    index = SplitIndex(paths=paths)
    split = paths.split
    if not paths.folder.is_dir():
        index.problems.append(Problem(ERROR, "missing_folder", split, _missing_folder_message(paths.folder)))
        return index
    for folder in (paths.img_dir, paths.mask_dir):
        if not folder.is_dir():
            there = sorted(p.name for p in paths.folder.iterdir() if p.is_dir())
            index.problems.append(Problem(ERROR, "missing_folder", split,
                                          f"{folder} does not exist ({paths.folder} holds the folders {there}); "
                                          f"each split needs {IMG_DIR}/ for images and {MASK_DIR}/ for masks: "
                                          "rename or symlink them"))
    if index.problems:
        return index
    index.image_names, image_problems = list_images(paths.img_dir, split)
    index.mask_names, mask_problems = list_images(paths.mask_dir, split)
    pairs, pairing_problems = pair_files(paths, index.image_names, index.mask_names, pairing)
    index.problems += image_problems + mask_problems + pairing_problems
    if table is None or not table.readable:
        return index
    index.n_reports = sum(m in table.reports for m in index.mask_names)
    table_stems = None
    for image_name, mask_name in pairs:
        report = table.reports.get(mask_name)
        if report is not None:
            index.samples.append(Sample(paths.img_dir / image_name, paths.mask_dir / mask_name, report))
            continue
        if table_stems is None:  # built once, only when a row is missing
            table_stems = {Path(n).stem: n for n in table.reports}
        message = (f"{paths.mask_dir / mask_name} has no row in {table.path} (its {IMAGE_COLUMN} column must hold "
                   f"{mask_name!r}); add a row with its report")
        near = table_stems.get(Path(mask_name).stem) or table_stems.get(Path(image_name).stem)
        if near is not None:
            message += f". The table has {near!r}: {IMAGE_COLUMN} must name the mask file exactly"
        index.problems.append(Problem(ERROR, "missing_row", split, message))
    if not index.samples and not any(p.severity == ERROR for p in index.problems):
        index.problems.append(Problem(ERROR, "empty_split", split, f"{paths.folder} holds no image with a mask and "
                                                                   "a report; put the split's files in img/ and "
                                                                   "labelcol/"))
    return index


def _missing_folder_message(folder: Path) -> str:
    message = f"split folder {folder} does not exist"
    root = folder.parent
    if root.is_dir():
        there = sorted(p.name for p in root.iterdir() if p.is_dir())
        return message + f" ({root} holds {there}); the splits are Train_Folder, Val_Folder and Test_Folder"
    for group in TASK_ALIASES:
        if root.name not in group:
            continue
        for alias in group:
            candidate = root.parent / alias
            if alias != root.name and candidate.is_dir():
                return message + (f"; {candidate} exists, LViT's name for the authors' task {root.name!r}: link it "
                                  f"with `ln -s {alias} {root}` or point the config's *_dataset paths at it")
    return message + "; download and arrange the data set as datasets/README.md describes, or fix the config's paths"


def load_split_index(cfg, split: str) -> Tuple[SplitIndex, ReportTable]:
    """Index one split from the config alone: read its table, list, pair and look up reports (no image decoding).

    Returns:
        The split's index and its table; problems are in both (``index.problems``, ``table.problems``).
    """
    paths = split_paths(cfg, split)
    table = read_report_table(paths.table, split)
    return index_split(paths, table, cfg.pairing), table


# ---- reading images and masks --------------------------------------------------------------------------------


def _decode(path: Path) -> np.ndarray:
    """Decode an image file as stored (any depth and channels). Raises DatasetError for a missing, empty or
    undecodable file."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"{path} cannot be read ({error.strerror or error}); check that it exists and is "
                           "readable") from error
    if data.size == 0:
        raise DatasetError(f"{path} is empty (0 bytes); replace it with the original file")
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise DatasetError(f"{path} is not an image OpenCV can decode ({data.size} bytes); replace it or convert it "
                           "to PNG")
    return array


def _to_uint8(array: np.ndarray, keep_nonzero: bool) -> np.ndarray:
    """Bring any pixel type to uint8: 16-bit keeps its high byte (as ``cv2.imread`` does), floats in [0, 1] are
    scaled by 255, other floats clipped to [0, 255]. With ``keep_nonzero`` (masks), a non-zero pixel never
    becomes 0."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        out = (array >> 8).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        out = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    else:
        out = np.clip(array, 0, 255).astype(np.uint8)
    if keep_nonzero:
        out[(out == 0) & (array != 0)] = 1
    return out


def to_bgr_uint8(array: np.ndarray) -> np.ndarray:
    """A decoded image as ``[H, W, 3]`` BGR uint8: grey is replicated, grey+alpha and BGRA lose their alpha.

    This is what the authors' ``cv2.imread(path)`` returns for 8- and 16-bit PNG, JPEG and TIFF files.
    """
    array = _to_uint8(array, keep_nonzero=False)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(array[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return np.ascontiguousarray(array[:, :, :3])
    return array


def to_gray_uint8(array: np.ndarray) -> np.ndarray:
    """A decoded mask as ``[H, W]`` uint8 in which every non-zero pixel stays non-zero.

    Grey masks keep their values (what ``cv2.imread(path, 0)`` gives, so the bilinear resize then ``> 0`` matches
    the authors'); a colour mask takes the maximum over its colour channels (alpha ignored), so no coloured
    pixel rounds to 0 as it can in a luminance conversion.
    """
    array = _to_uint8(array, keep_nonzero=True)
    if array.ndim == 3:
        colour = array[:, :, :1] if array.shape[2] <= 2 else array[:, :, :3]
        array = colour.max(axis=2)
    return np.ascontiguousarray(array)


_LOW_DEPTH_WARNED: set = set()


def read_image(path: Path) -> np.ndarray:
    """Read an image as ``[H, W, 3]`` BGR uint8 (see :func:`to_bgr_uint8`). Raises DatasetError naming the file.

    A 16-bit image whose values use fewer bits (a 12-bit radiograph stored as 16-bit PNG, say) would be almost
    black with the high byte alone (what ``cv2.imread`` gives): it is scaled from its own bit depth instead, with
    a warning naming the file (once per file).
    """
    array = _decode(path)
    bits = _used_bits(array)
    if bits is not None:
        if str(path) not in _LOW_DEPTH_WARNED:
            _LOW_DEPTH_WARNED.add(str(path))
            logger.warning("%s is a 16-bit image whose values use %d bits (max %d): scaled by 2^-%d to 8 bits, not "
                           "cut to its high byte, which would be almost black", path, bits, int(array.max()), bits - 8)
        array = (array >> (bits - 8)).astype(np.uint8)
    return to_bgr_uint8(array)


def _used_bits(array: np.ndarray):
    """For a 16-bit array whose high byte would be at most 15 (12 bits or fewer in use), the bits in use (>= 8);
    otherwise None."""
    if array.dtype != np.uint16 or not array.size:
        return None
    top = int(array.max())
    return max(8, top.bit_length()) if top < 1 << 12 else None


def read_mask(path: Path) -> np.ndarray:
    """Read a mask as ``[H, W]`` uint8, non-zero = foreground (see :func:`to_gray_uint8`). Raises DatasetError."""
    return to_gray_uint8(_decode(path))


# ---- reports -------------------------------------------------------------------------------------------------


@dataclass
class TokenizedSplit:
    """The reports of a split as the network reads them.

    Attributes:
        tokens: ``[N, L]`` int64 CLIP BPE ids, zero-padded (``L = token_len``).
        text_mask: ``[N, L]`` int64, 1 on the start token, the words and the end token.
        words_cut: ``[N]`` bool, True where the report's own words do not fit ``L`` and were cut. The authors'
            " EOF XXX" padding is cut whenever it does not fit too; that is by design and not counted here.
    """

    tokens: torch.Tensor
    text_mask: torch.Tensor
    words_cut: torch.Tensor


@functools.lru_cache(maxsize=8)
def _tokenizer(token_len: int, pad_short_reports: bool) -> ReportTokenizer:
    """One tokenizer per setting: building one loads the BPE vocabulary (a fraction of a second)."""
    return ReportTokenizer(token_len, pad_short_reports)


def tokenize_reports(reports: Sequence[str], token_len: int, pad_short_reports: bool) -> TokenizedSplit:
    """Tokenise reports with the network's tokenizer (:class:`utils.data.tokenizer.ReportTokenizer`).

    Args:
        reports: N report strings (any Unicode; empty is allowed).
        token_len: the context length ``L``.
        pad_short_reports: the authors' " EOF XXX" padding of reports under 9 words.

    Returns:
        Tokens, text mask and which reports lost words to the cut (:class:`TokenizedSplit`).
    """
    reports = list(reports)
    tokenized = _tokenizer(token_len, pad_short_reports)(reports) if reports else None
    if tokenized is None:
        empty = torch.zeros(0, token_len, dtype=torch.long)
        return TokenizedSplit(empty, empty.clone(), torch.zeros(0, dtype=torch.bool))
    if pad_short_reports:
        # With padding on, `truncated` also flags reports whose padding alone overflowed; the words fit iff the
        # unpadded report fits.
        words_cut = _tokenizer(token_len, False)(reports).truncated
    else:
        words_cut = tokenized.truncated
    return TokenizedSplit(tokenized.tokens, tokenized.text_mask, words_cut)
