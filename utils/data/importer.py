"""Write a source copy of a data set (:mod:`utils.data.sources`) as the LViT layout, checked, with a manifest.

The layout is the one ``Config_QaTa`` reads: ``Train_Folder/{img,labelcol,Train_Val_text.xlsx}`` (the table holds
the train and val reports), ``Val_Folder/{img,labelcol}``, ``Test_Folder/{img,labelcol,Test_text.xlsx}``.

Nothing is written into the source, and nothing is left half-written: the set is built in a hidden sibling folder
(``.<name>.partial``), checked there with the same check training runs (every image decoded), and renamed into place
only when it passes. An existing target is never replaced.

``manifest.json`` at the target lists every file with its split, sha256 and report, the source and the date, and
``data_sha256``: one hash of the splits, names, file hashes and reports (not of the date or the source path), so two
users can tell by one line whether they hold the same data.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from utils.config import Config
from utils.data.check import check_dataset
from utils.data.images import read_image, read_mask
from utils.data.records import (
    ERROR,
    IMAGE_COLUMN,
    IMG_DIR,
    MASK_DIR,
    QATA_MASK_PREFIX,
    REPORT_COLUMN,
    WARNING,
    DatasetError,
    Problem,
)
from utils.data.sources import SourcePair, SourceRead

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
TRAIN_VAL_TABLE = "Train_Val_text.xlsx"
TEST_TABLE = "Test_text.xlsx"
MANIFEST = "manifest.json"
PARTIAL_MARKER = ".get_data_partial"


def layout_config(root: Path) -> Config:
    """The config fields that point the data layer at an LViT-layout folder ``root`` (QaTa's tables)."""
    return Config().replace(train_dataset=str(root / SPLIT_FOLDERS["train"]),
                            val_dataset=str(root / SPLIT_FOLDERS["val"]),
                            test_dataset=str(root / SPLIT_FOLDERS["test"]),
                            train_text=TRAIN_VAL_TABLE, val_text=f"../{SPLIT_FOLDERS['train']}/{TRAIN_VAL_TABLE}",
                            test_text=TEST_TABLE, pairing="qata")


def manifest_hash(split_folder: Path) -> Optional[str]:
    """The ``data_sha256`` of the manifest beside a split folder (``<root>/manifest.json`` for
    ``<root>/Test_Folder``), or None when the data set has no readable manifest."""
    path = Path(split_folder).resolve().parent / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("data_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def plan_problems(pairs: List[SourcePair], expected: Optional[Dict[str, int]]) -> List[Problem]:
    """What stands in the way of writing ``pairs``: names twice in a split, in two splits or differing only in
    case (they would collide on a case-insensitive file system), empty reports, and counts other than
    ``expected`` (split -> count; None = any)."""
    problems: List[Problem] = []
    seen: Dict[str, str] = {}
    lowered: Dict[str, str] = {}
    for pair in pairs:
        if pair.stem in seen:
            where = "twice in" if seen[pair.stem] == pair.split else f"in {seen[pair.stem]} and in"
            problems.append(Problem(ERROR, "duplicate", pair.split, f"{pair.stem!r} is {where} {pair.split}"))
            continue
        other = lowered.get(pair.stem.lower())
        if other is not None:
            problems.append(Problem(ERROR, "case_collision", pair.split,
                                    f"{other!r} and {pair.stem!r} differ only in letter case; they would be one file "
                                    "on a case-insensitive file system"))
        seen[pair.stem] = pair.split
        lowered[pair.stem.lower()] = pair.stem
        if not pair.report:
            problems.append(Problem(ERROR, "empty_report", pair.split, f"{pair.stem!r} has no report"))
    if expected is not None:
        counts = Counter(pair.split for pair in pairs)
        for split, want in expected.items():
            if counts.get(split, 0) != want:
                problems.append(Problem(ERROR, "count", split,
                                        f"{counts.get(split, 0)} pairs in {split}, expected {want} (LViT's split); "
                                        "is the source copy complete?"))
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mask_problem(pair: SourcePair) -> Optional[Problem]:
    """A mask whose values are not two levels {0, v} or whose size differs from its image's."""
    mask = read_mask(pair.mask)
    image = read_image(pair.image)
    if mask.shape[:2] != image.shape[:2]:
        return Problem(ERROR, "size_mismatch", pair.split,
                       f"{pair.mask} is {mask.shape[1]}x{mask.shape[0]}, its image {image.shape[1]}x{image.shape[0]}")
    values = np.unique(mask)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        return Problem(WARNING, "non_binary_mask", pair.split,
                       f"{pair.mask} has {len(values)} grey levels; pixels > 0 are foreground")
    return None


def data_hash(files: List[dict]) -> str:
    """One sha256 over every file's split, names, hashes and report, in a fixed order."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda e: (e["split"], e["image"])):
        line = "\t".join((entry["split"], entry["image"], entry["image_sha256"], entry["mask"], entry["mask_sha256"],
                          entry["report"]))
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def _raise(problems: List[Problem], what: str) -> None:
    errors = [p for p in problems if p.severity == ERROR]
    for warning in (p for p in problems if p.severity == WARNING):
        logger.warning("%s: %s", warning.split, warning.message)
    if errors:
        lines = "\n".join(f"  [{p.split}] {p.code}: {p.message}" for p in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise DatasetError(f"{what}: {len(errors)} error(s)\n{lines}{more}")


def _staging_folder(target: Path) -> Path:
    """The hidden sibling folder the set is built in; a leftover one of ours (it holds the marker) is removed."""
    staging = target.parent / f".{target.name}.partial"
    if staging.exists():
        if not (staging / PARTIAL_MARKER).exists():
            raise DatasetError(f"{staging} exists and was not written by this tool; move it away and run again")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / PARTIAL_MARKER).write_text("an unfinished import; safe to delete\n", encoding="utf-8")
    return staging


def write_layout(read: SourceRead, target: Path, source: str, kind: str,
                 expected: Optional[Dict[str, int]]) -> dict:
    """Write the pairs of ``read`` as the LViT layout at ``target`` and return the manifest.

    Args:
        read: what a source reader found.
        target: the data set folder to create (it must not exist).
        source: where the copy came from (a path or address), for the manifest.
        kind: the source layout's name (a key of :data:`utils.data.sources.SOURCES`).
        expected: split -> the number of pairs the split must have; None accepts any.

    Raises:
        DatasetError: the source has errors, the target exists, or the written set fails the check; nothing is left
            at ``target`` then.
    """
    target = Path(target)
    if target.exists():
        raise DatasetError(f"{target} already exists; move it away or choose another --to (nothing was written)")
    _raise(read.problems + plan_problems(read.pairs, expected), f"the {kind} copy at {source} cannot be imported")
    _raise([p for p in map(_mask_problem, read.pairs) if p is not None], "masks")
    staging = _staging_folder(target)
    try:
        files = _copy_pairs(read.pairs, staging)
        _write_tables(read.pairs, staging)
        report = check_dataset(layout_config(staging), decode=True)
        _raise(report.problems, f"the data set written at {staging}")
        counts = Counter(entry["split"] for entry in files)
        manifest = {
            "dataset": "QaTa-COV19 with LViT's reports",
            "layout": "LViT: Train_Folder, Val_Folder, Test_Folder with img/ and labelcol/; Train_Val_text.xlsx, "
                      "Test_text.xlsx",
            "source_kind": kind,
            "source": source,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "counts": {split: counts.get(split, 0) for split in SPLIT_FOLDERS},
            "distinct_reports": {split: len({e["report"] for e in files if e["split"] == split})
                                 for split in SPLIT_FOLDERS},
            "source_notes": read.notes,
            "data_sha256": data_hash(files),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (staging / PARTIAL_MARKER).unlink()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _copy_pairs(pairs: List[SourcePair], staging: Path) -> List[dict]:
    files = []
    for folder in SPLIT_FOLDERS.values():
        (staging / folder / IMG_DIR).mkdir(parents=True)
        (staging / folder / MASK_DIR).mkdir(parents=True)
    for pair in pairs:
        folder = staging / SPLIT_FOLDERS[pair.split]
        image_name = f"{pair.stem}{pair.image.suffix.lower()}"
        mask_name = f"{QATA_MASK_PREFIX}{pair.stem}{pair.mask.suffix.lower()}"
        shutil.copyfile(pair.image, folder / IMG_DIR / image_name)
        shutil.copyfile(pair.mask, folder / MASK_DIR / mask_name)
        files.append({"split": pair.split, "image": image_name, "mask": mask_name,
                      "image_sha256": _sha256(folder / IMG_DIR / image_name),
                      "mask_sha256": _sha256(folder / MASK_DIR / mask_name), "report": pair.report})
    return files


def _write_tables(pairs: List[SourcePair], staging: Path) -> None:
    rows = defaultdict(list)
    for pair in pairs:
        table = "test" if pair.split == "test" else "train_val"
        rows[table].append({IMAGE_COLUMN: f"{QATA_MASK_PREFIX}{pair.stem}{pair.mask.suffix.lower()}",
                            REPORT_COLUMN: pair.report})
    for table, path in (("train_val", staging / SPLIT_FOLDERS["train"] / TRAIN_VAL_TABLE),
                        ("test", staging / SPLIT_FOLDERS["test"] / TEST_TABLE)):
        pd.DataFrame(rows[table], columns=[IMAGE_COLUMN, REPORT_COLUMN]).to_excel(path, index=False)
