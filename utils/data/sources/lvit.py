"""The ``lvit`` source: Kaggle's QaTa-COV19-v2 with LViT's report tables, or a folder already in the LViT layout."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from utils.data.files import index_split
from utils.data.records import ERROR, IMG_DIR, MASK_DIR, TABLE_EXTENSIONS, WARNING, Problem, ReportTable, SplitPaths
from utils.data.sources._common import (
    KAGGLE_FOLDERS,
    KAGGLE_IMAGES,
    KAGGLE_MASKS,
    CaseCollisions,
    SourcePair,
    SourceRead,
    count_unlisted,
    find_root,
    kaggle_pair,
    not_this_source,
)
from utils.data.tables import read_report_table

# LViT's QaTa report tables, by file stem (each may be .xlsx or .csv).
LVIT_TABLES = ("Train_text", "Val_text", "Test_text", "Train_Val_text")
# LViT's layout: split -> folder (as utils.data.importer writes it).
LVIT_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}


def read_lvit(folder: Path) -> SourceRead:
    """The original: Kaggle's QaTa-COV19-v2 with LViT's report tables, or a folder already in the LViT layout.

    Kaggle's layout: ``QaTa-COV19-v2/{Train Set,Test Set}/{Images/<X>.png,Ground-truths/mask_<X>.png}``. LViT's
    tables (columns ``Image``, the mask's file name, and ``Description``, the report; ``.xlsx`` or ``.csv``) are
    looked for in ``folder``, the ``QaTa-COV19-v2`` folder and its two split folders. The tables make the split: a
    mask that ``Val_text`` names is val, one that ``Train_text`` names is train (a copy with ``Train_Val_text``
    instead: the rows that ``Val_text`` does not name), one that ``Test_text`` names is test; train and val images
    are in ``Train Set``. ``Train_Val_text`` alone cannot tell train from val, so ``Val_text`` is required. A row
    naming a missing file is an error; images that no row names are left out and counted (a warning).

    A folder already in the LViT layout (``Train_Folder``, ``Val_Folder``, ``Test_Folder``, each with ``img/`` and
    ``labelcol/``; the tables ``Train_Folder/Train_Val_text`` or ``Train_Folder/Train_text`` with
    ``Val_Folder/Val_text``, and ``Test_Folder/Test_text``) is read the way training reads it
    (:func:`utils.data.files.index_split`): the folder holding a file makes its split.
    """
    folder = Path(folder)
    layout_root = find_root(folder, LVIT_FOLDERS["train"], ("Covid19", "QaTa-Covid19", "QaTa-COV19"))
    if layout_root is not None:
        return _read_lvit_layout(layout_root)
    root = find_root(folder, KAGGLE_FOLDERS["train"], ("QaTa-COV19-v2", "QaTa-COV19/QaTa-COV19-v2"))
    if root is None:
        return not_this_source(f"{folder} holds neither Kaggle's QaTa-COV19-v2 ('{KAGGLE_FOLDERS['train']}' and "
                               f"'{KAGGLE_FOLDERS['test']}' folders) nor the LViT layout (Train_Folder, Val_Folder, "
                               "Test_Folder)")
    search = [folder, root] + [root / name for name in KAGGLE_FOLDERS.values()]
    tables, problems = _find_tables(search, LVIT_TABLES)
    if not tables:
        return not_this_source(f"{root} holds Kaggle's images but none of LViT's report tables "
                               f"({', '.join(t + '.xlsx' for t in LVIT_TABLES)}) in {root} or {folder}; download "
                               "them (LViT's README, Data Preparation) and put them there")
    for split, stem in (("val", "Val_text"), ("test", "Test_text")):
        if stem not in tables:
            why = (" (Train_Val_text alone does not say which images are val; LViT's README links Val_text and the "
                   "train/val partition)" if split == "val" else "")
            problems.append(Problem(ERROR, "missing_table", split,
                                    f"LViT's {stem}.xlsx is in none of {', '.join(map(str, search))}{why}; put it "
                                    "there"))
    train_stem = "Train_text" if "Train_text" in tables else "Train_Val_text"
    if train_stem not in tables:
        problems.append(Problem(ERROR, "missing_table", "train",
                                f"neither Train_text.xlsx nor Train_Val_text.xlsx is in any of "
                                f"{', '.join(map(str, search))}; put LViT's train table there"))
    if any(p.severity == ERROR for p in problems):
        return SourceRead([], problems, {"root": str(root)})

    read = {stem: read_report_table(tables[stem], split)
            for stem, split in ((train_stem, "train"), ("Val_text", "val"), ("Test_text", "test"))}
    for table in read.values():
        problems += table.problems
    val_reports = read["Val_text"].reports
    train_rows = dict(read[train_stem].reports)
    if train_stem == "Train_Val_text":
        # Train_Val_text holds the val rows too: they are val (with Val_text's report, which must agree).
        for name in list(train_rows):
            if name in val_reports:
                if train_rows[name] != val_reports[name]:
                    problems.append(Problem(ERROR, "conflicting_rows", "val",
                                            f"{name!r} has different reports in {tables['Train_Val_text'].name} and "
                                            f"{tables['Val_text'].name}; correct one of them"))
                del train_rows[name]
    rows = {"train": (train_rows, read[train_stem]), "val": (val_reports, read["Val_text"]),
            "test": (read["Test_text"].reports, read["Test_text"])}
    pairs: List[SourcePair] = []
    collisions = CaseCollisions()
    used: Dict[str, List[Path]] = {"train": [], "test": []}
    for split, (reports, table) in rows.items():
        folder_name = KAGGLE_FOLDERS["test" if split == "test" else "train"]
        image_dir, mask_dir = root / folder_name / KAGGLE_IMAGES, root / folder_name / KAGGLE_MASKS
        if not image_dir.is_dir() or not mask_dir.is_dir():
            problems.append(Problem(ERROR, "missing_folder", split, f"{image_dir} or {mask_dir} is missing"))
            continue
        for name, report in reports.items():
            pair, problem = kaggle_pair(split, name, report, image_dir, mask_dir,
                                        f"{table.path.name} row {table.rows[name]}", collisions)
            if problem is not None:
                problems.append(problem)
            if pair is not None:
                pairs.append(pair)
                used["test" if split == "test" else "train"].append(pair.image)
    unlisted = {}
    for key, folder_name in KAGGLE_FOLDERS.items():
        image_dir = root / folder_name / KAGGLE_IMAGES
        if image_dir.is_dir():
            unlisted[key] = count_unlisted(image_dir, used[key])
            if unlisted[key]:
                problems.append(Problem(WARNING, "unlisted", key,
                                        f"{unlisted[key]} image(s) in {image_dir} have no row in LViT's tables; "
                                        "they are left out"))
    problems += collisions.problems()
    return SourceRead(pairs, problems, {"root": str(root), "form": "kaggle",
                                        "tables": {stem: str(path) for stem, path in tables.items()},
                                        "train_table": train_stem, "unlisted_images": unlisted,
                                        **collisions.notes()})


def _read_lvit_layout(root: Path) -> SourceRead:
    """A folder already in the LViT layout (see :func:`read_lvit`)."""
    problems: List[Problem] = []
    split_folders = {split: root / name for split, name in LVIT_FOLDERS.items()}
    train_val, train_val_problems = _find_tables([split_folders["train"]], ["Train_Val_text"])
    problems += train_val_problems
    table_paths: Dict[str, Path] = {}
    for split, stem in (("train", "Train_text"), ("val", "Val_text"), ("test", "Test_text")):
        if split != "test" and "Train_Val_text" in train_val:
            table_paths[split] = train_val["Train_Val_text"]
            continue
        found, found_problems = _find_tables([split_folders[split]], [stem])
        problems += found_problems
        if stem in found:
            table_paths[split] = found[stem]
        else:
            also = " (or Train_Folder/Train_Val_text.xlsx for train and val)" if split != "test" else ""
            problems.append(Problem(ERROR, "missing_table", split,
                                    f"{split_folders[split] / (stem + '.xlsx')} does not exist{also}; put LViT's "
                                    "table there"))
    if any(p.severity == ERROR for p in problems):
        return SourceRead([], problems, {"root": str(root), "form": "lvit_layout"})
    tables: Dict[Path, ReportTable] = {}
    users: Dict[Path, List[str]] = {}
    for path in table_paths.values():
        if path not in tables:
            users[path] = [s for s, p in table_paths.items() if p == path]
            tables[path] = read_report_table(path, "+".join(users[path]))
            problems += tables[path].problems
    pairs: List[SourcePair] = []
    masks: Dict[str, List[str]] = {}
    for split, split_folder in split_folders.items():
        paths = SplitPaths(split, split_folder, split_folder / IMG_DIR, split_folder / MASK_DIR, table_paths[split])
        index = index_split(paths, tables[table_paths[split]], "qata")
        problems += index.problems
        masks[split] = index.mask_names
        pairs += [SourcePair(split, s.image_path.stem, s.image_path, s.mask_path, s.report) for s in index.samples]
    for path, table in tables.items():
        named = {m for split in users[path] for m in masks[split]}
        unused = [name for name in table.reports if name not in named]
        if unused:
            problems.append(Problem(WARNING, "row_without_file", "+".join(users[path]),
                                    f"{len(unused)} row(s) of {path} name no mask in the folders of "
                                    f"{'+'.join(users[path])} (e.g. {unused[0]!r}); they are unused"))
    return SourceRead(pairs, problems, {"root": str(root), "form": "lvit_layout",
                                        "tables": {split: str(path) for split, path in table_paths.items()}})


def _find_tables(folders: Iterable[Path], stems: Iterable[str]) -> Tuple[Dict[str, Path], List[Problem]]:
    """Where each report table ``<stem>.xlsx`` / ``<stem>.csv`` is in ``folders`` (not recursive).

    A table found in several places with different bytes is an error (which one is meant is a guess); identical
    copies are one table.
    """
    found: Dict[str, Path] = {}
    problems: List[Problem] = []
    folders = list(dict.fromkeys(f.resolve() for f in folders if f.is_dir()))
    for stem in stems:
        paths = [folder / f"{stem}{ext}" for folder in folders for ext in TABLE_EXTENSIONS]
        paths = [p for p in paths if p.is_file()]
        if not paths:
            continue
        if len({p.read_bytes() for p in paths}) > 1:
            problems.append(Problem(ERROR, "ambiguous_table", "all",
                                    f"{stem} is there {len(paths)} times with different contents "
                                    f"({', '.join(map(str, paths))}); keep one"))
        found[stem] = paths[0]
    return found, problems

