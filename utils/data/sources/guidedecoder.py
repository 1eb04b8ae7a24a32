"""The ``guidedecoder`` source: GuideDecoder's prompt CSVs beside Kaggle's images
(github Junelin2333/LanGuideMedSeg-MICCAI2023)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from utils.data.records import ERROR, WARNING, Problem
from utils.data.sources._common import (
    KAGGLE_FOLDERS,
    KAGGLE_IMAGES,
    KAGGLE_MASKS,
    CaseCollisions,
    SourcePair,
    SourceRead,
    find_root,
    kaggle_pair,
    not_this_source,
)
from utils.data.tables import read_report_table

# GuideDecoder keeps the last 20% of train.csv's rows for validation (its utils/dataset.py).
GUIDEDECODER_TRAIN_FRACTION = 0.8


def _guide_folders(root: Path, part: str) -> Optional[Tuple[Path, Path]]:
    """The images and masks folders of GuideDecoder's ``Train``/``Test`` (``Images``, ``GTs``) or of Kaggle's
    ``Train Set``/``Test Set`` (``Images``, ``Ground-truths``), whichever is there."""
    kaggle = KAGGLE_FOLDERS["test" if part == "Test" else "train"]
    for images, masks in ((root / part / "Images", root / part / "GTs"),
                          (root / kaggle / KAGGLE_IMAGES, root / kaggle / KAGGLE_MASKS)):
        if images.is_dir() and masks.is_dir():
            return images, masks
    return None


def read_guidedecoder(folder: Path) -> SourceRead:
    """GuideDecoder's copy (github Junelin2333/LanGuideMedSeg-MICCAI2023): prompt CSVs beside Kaggle's images.

    Layout (its config/training.yaml): ``QaTa-COV19-v2/prompt/{train,test}.csv`` with the columns ``Image`` (the
    mask's file name, ``mask_<X>.png``) and ``Description`` (the report), LViT's reports saved as CSV; the images in
    ``Train/Images/<X>.png`` and ``Train/GTs/mask_<X>.png`` (``Test/...`` likewise), or in Kaggle's own folders
    ``Train Set/{Images,Ground-truths}``.

    The val split is not a table: as GuideDecoder's ``utils/dataset.py`` does, val is the last 20% of train.csv's
    rows (rows from ``int(0.8 * rows)`` on) and train the rest. That is LViT's val split only when train.csv lists
    LViT's 5716 train rows and then its 1429 val rows; other tables give other splits and counts, which the importer
    then refuses unless ``--any-counts``. A warning says so on every import. A row naming a missing file is an error.
    """
    folder = Path(folder)
    root = find_root(folder, "prompt/train.csv", ("QaTa-COV19-v2", "data/QaTa-COV19-v2"))
    if root is None:
        return not_this_source(f"{folder} holds no prompt/train.csv (nor QaTa-COV19-v2/prompt/...); GuideDecoder's "
                               "copy is QaTa-COV19-v2 with prompt/train.csv and prompt/test.csv")
    problems: List[Problem] = []
    tables = {}
    for name, label in (("train", "train+val"), ("test", "test")):
        path = root / "prompt" / f"{name}.csv"
        if not path.is_file():
            problems.append(Problem(ERROR, "missing_table", label, f"{path} does not exist; save LViT's {name} "
                                                                   "reports there (columns Image, Description)"))
            continue
        tables[name] = read_report_table(path, label)
        problems += tables[name].problems
    folders = {part: _guide_folders(root, part) for part in ("Train", "Test")}
    for part, found in folders.items():
        if found is None:
            problems.append(Problem(ERROR, "missing_folder", part.lower(),
                                    f"{root / part} has no Images/ and GTs/ (nor {root / KAGGLE_FOLDERS[part.lower()]} "
                                    f"{KAGGLE_IMAGES}/ and {KAGGLE_MASKS}/); put the images and masks there"))
    if any(p.severity == ERROR and p.code in ("missing_folder", "missing_table", "unreadable_table",
                                              "missing_columns") for p in problems):
        return SourceRead([], problems, {"root": str(root)})
    train_table = tables["train"]
    cut = int(GUIDEDECODER_TRAIN_FRACTION * train_table.n_rows)
    pairs: List[SourcePair] = []
    collisions = CaseCollisions()
    for name, report in train_table.reports.items():
        row = train_table.rows[name]
        split = "val" if row - 2 >= cut else "train"  # row 2 is the table's first data row, index 0
        pair, problem = kaggle_pair(split, name, report, *folders["Train"], f"train.csv row {row}", collisions)
        problems += [problem] if problem is not None else []
        pairs += [pair] if pair is not None else []
    for name, report in tables["test"].reports.items():
        pair, problem = kaggle_pair("test", name, report, *folders["Test"],
                                    f"test.csv row {tables['test'].rows[name]}", collisions)
        problems += [problem] if problem is not None else []
        pairs += [pair] if pair is not None else []
    problems.append(Problem(WARNING, "carved_val", "val",
                            f"GuideDecoder has no val table: val is the last 20% of {train_table.path}'s rows "
                            f"({train_table.n_rows - cut} of {train_table.n_rows}, from row {cut + 2}), as its "
                            "utils/dataset.py takes them; that is LViT's val split only if train.csv lists LViT's "
                            "train rows and then its val rows"))
    problems += collisions.problems()
    return SourceRead(pairs, problems, {"root": str(root), "train_rows": train_table.n_rows,
                                        "val_rule": f"train.csv rows from index int(0.8 * {train_table.n_rows}) = "
                                                    f"{cut} on are val (GuideDecoder's utils/dataset.py)",
                                        **collisions.notes()})
