"""Finding and pairing the files of a data set, the way the authors' ``ImageToImage2D`` does (docs/QUIRKS.md, A1).

A data set is three split folders (``Train_Folder``, ``Val_Folder``, ``Test_Folder``), each holding ``img/`` and
``labelcol/``, plus report tables (:mod:`utils.data.tables`).

Pairing (``Config.pairing``):

- ``"qata"``: a mask ``labelcol/mask_<X>.png`` belongs to the image ``img/<X>.png``; the image may have another
  extension as long as its stem is ``<X>``.
- ``"stem"``: image and mask share a file stem whatever the extensions (MoNuSeg's test images are ``.tif``, its
  masks ``.png``); this is the authors' MosMedData+ and MoNuSeg rule.

Files are listed in sorted order, so an index is the same on every file system (the authors used the unsorted
``os.listdir``). Names starting with ``.`` (``.DS_Store``, macOS ``._x.png`` shadows) are not data and are skipped;
other files without an image extension are skipped with a warning.

Everything here reports problems as :class:`utils.data.records.Problem` records instead of raising, so that a check
can list every problem of a folder at once; :class:`utils.data.records.DatasetError` is what the loaders raise when
errors remain. Reading the pixels is :mod:`utils.data.images`'s job.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from utils.data.records import (
    ERROR,
    IMAGE_COLUMN,
    IMAGE_EXTENSIONS,
    IMG_DIR,
    MASK_DIR,
    PAIRINGS,
    QATA_MASK_PREFIX,
    SPLITS,
    TASK_ALIASES,
    WARNING,
    Problem,
    ReportTable,
    Sample,
    SplitIndex,
    SplitPaths,
)
from utils.data.tables import read_report_table


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
    table = read_report_table(paths.table, split, max_rows=cfg.max_table_rows, max_mib=cfg.max_table_mib)
    return index_split(paths, table, cfg.pairing), table
