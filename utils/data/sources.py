"""Where QaTa-COV19 with LViT's reports can be found today, and how each copy is laid out.

Each source layout has one reader in :data:`SOURCES`: a function from the copy's folder to the list of
:class:`SourcePair` (split, image file, mask file, report) and the problems met on the way. The importer
(:mod:`utils.data.importer`) turns that list into the LViT layout that ``Config_QaTa`` reads, whatever the source; a
new source is one reader and one entry here.

Names in the LViT layout: the image ``img/<X>.png`` and its mask ``labelcol/mask_<X>.png``; a report table row names
the mask. ``<X>`` is the image's file name without its extension, as the source names it (SGSeg: as its annotation
file spells it; ProLearn: its renamed id).

The readers: ``sgseg`` (:func:`read_sgseg`), ``lvit`` (:func:`read_lvit`: Kaggle's images with LViT's tables, or a
folder already in the LViT layout), ``prolearn`` (:func:`read_prolearn`), ``guidedecoder``
(:func:`read_guidedecoder`). A reader never raises for a problem in the copy: it lists it, and answers with the code
``not_this_source`` when the folder does not hold its layout at all (``tools.get_data`` detects layouts by that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from utils.data.files import index_split
from utils.data.records import (
    ERROR,
    IMG_DIR,
    MASK_DIR,
    QATA_MASK_PREFIX,
    TABLE_EXTENSIONS,
    WARNING,
    Problem,
    ReportTable,
    SplitPaths,
)
from utils.data.tables import read_report_table, unsafe_name_reason

# LViT's QaTa-COV19 split: captioned image/mask pairs per split.
LVIT_QATA_COUNTS = {"train": 5716, "val": 1429, "test": 2113}


@dataclass(frozen=True)
class SourcePair:
    """One image of a source copy, its mask and its report, and the split the source puts it in."""

    split: str
    stem: str  # <X>: the image is written as img/<X>.png, the mask as labelcol/mask_<X>.png
    image: Path
    mask: Path
    report: str


@dataclass
class SourceRead:
    """What a reader found: the pairs, the problems, and facts worth keeping in the manifest."""

    pairs: List[SourcePair]
    problems: List[Problem]
    notes: Dict[str, object]


def _find_root(folder: Path, marker: str, candidates: Tuple[str, ...]) -> Optional[Path]:
    """The folder under ``folder`` (itself or one of ``candidates``) that holds ``marker``."""
    for sub in ("",) + candidates:
        root = folder / sub if sub else folder
        if (root / marker).exists():
            return root
    return None


def _case_groups(folder: Path) -> Dict[str, List[str]]:
    """Lower-cased file name -> the names in ``folder`` that spell it (more than one: a case collision)."""
    groups: Dict[str, List[str]] = {}
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            groups.setdefault(path.name.lower(), []).append(path.name)
    return groups


def read_sgseg(folder: Path) -> SourceRead:
    """The SGSeg repository's ``data/QaTa`` (github ShuchangYe-bib/SGSeg).

    Layout: ``images/{train,valid,test}/{images,masks}`` and ``prompts/annotation.json``, a dict of split -> list
    of ``{"image_path": "mask_<X>.png", "caption": report, ...}``. Some images and masks are there twice under
    names that differ only in letter case; the annotation's spelling decides which file is used, and the other
    copies are counted (and compared) in the notes.
    """
    root = _find_root(folder, "prompts/annotation.json", ("data/QaTa", "QaTa"))
    if root is None:
        return SourceRead([], [Problem(ERROR, "not_this_source", "all",
                                       f"{folder} holds no prompts/annotation.json (nor data/QaTa/prompts/...); the "
                                       "SGSeg copy is the data/QaTa folder of github.com/ShuchangYe-bib/SGSeg")], {})
    annotation = json.loads((root / "prompts" / "annotation.json").read_text(encoding="utf-8"))
    pairs: List[SourcePair] = []
    problems: List[Problem] = []
    collisions = 0
    differing = 0
    for split, source_split in (("train", "train"), ("val", "valid"), ("test", "test")):
        entries = annotation.get(source_split)
        if not isinstance(entries, list):
            problems.append(Problem(ERROR, "missing_split", split,
                                    f"{root / 'prompts/annotation.json'} has no list {source_split!r}"))
            continue
        image_dir = root / "images" / source_split / "images"
        mask_dir = root / "images" / source_split / "masks"
        if not image_dir.is_dir() or not mask_dir.is_dir():
            problems.append(Problem(ERROR, "missing_folder", split, f"{image_dir} or {mask_dir} is missing"))
            continue
        image_groups = _case_groups(image_dir)
        mask_groups = _case_groups(mask_dir)
        for entry in entries:
            mask_name = str(entry.get("image_path", ""))
            if not mask_name.startswith(QATA_MASK_PREFIX):
                problems.append(Problem(ERROR, "bad_entry", split, f"annotation entry {mask_name!r} does not name "
                                                                   f"a mask ({QATA_MASK_PREFIX}<image>)"))
                continue
            image_name = mask_name[len(QATA_MASK_PREFIX):]
            for name, groups, where in ((image_name, image_groups, image_dir), (mask_name, mask_groups, mask_dir)):
                spelled = groups.get(name.lower(), [])
                if len(spelled) > 1:
                    collisions += 1
                    contents = {(where / other).read_bytes() for other in spelled}
                    differing += len(contents) > 1
            if not (image_dir / image_name).is_file() or not (mask_dir / mask_name).is_file():
                problems.append(Problem(ERROR, "missing_file", split,
                                        f"annotation entry {mask_name!r}: {image_dir / image_name} or "
                                        f"{mask_dir / mask_name} is missing (names must match the annotation's "
                                        "spelling, letter case included)"))
                continue
            pairs.append(SourcePair(split, Path(image_name).stem, image_dir / image_name, mask_dir / mask_name,
                                    str(entry.get("caption", "")).strip()))
    if differing:
        problems.append(Problem(WARNING, "case_collision", "all",
                                f"{differing} file(s) have a copy whose name differs only in letter case and whose "
                                "bytes differ; the annotation's spelling was used"))
    return SourceRead(pairs, problems, {"root": str(root), "case_collisions": collisions,
                                        "case_collisions_differing": differing})


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the readers below.

# LViT's QaTa report tables, by file stem (each may be .xlsx or .csv).
LVIT_TABLES = ("Train_text", "Val_text", "Test_text", "Train_Val_text")
# Kaggle's QaTa-COV19-v2: split -> its folder, each with Images/ and Ground-truths/; the train folder holds LViT's
# train and val images.
KAGGLE_FOLDERS = {"train": "Train Set", "test": "Test Set"}
KAGGLE_IMAGES, KAGGLE_MASKS = "Images", "Ground-truths"
# LViT's layout: split -> folder (as utils.data.importer writes it).
LVIT_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
# GuideDecoder keeps the last 20% of train.csv's rows for validation (its utils/dataset.py).
GUIDEDECODER_TRAIN_FRACTION = 0.8


def _not_this_source(message: str) -> SourceRead:
    """The answer of a reader whose layout ``folder`` does not hold."""
    return SourceRead([], [Problem(ERROR, "not_this_source", "all", message)], {})


class _CaseCollisions:
    """Counts the files used that share their folder with a name differing only in letter case, and how many of
    those have different bytes (then which one the source meant is a guess; the spelling the source names is used).
    """

    def __init__(self) -> None:
        self.groups: Dict[Path, Dict[str, List[str]]] = {}
        self.found = 0
        self.differing = 0

    def see(self, path: Path) -> None:
        if path.parent not in self.groups:
            self.groups[path.parent] = _case_groups(path.parent)
        spelled = self.groups[path.parent].get(path.name.lower(), [])
        if len(spelled) > 1:
            self.found += 1
            self.differing += len({(path.parent / name).read_bytes() for name in spelled}) > 1

    def problems(self) -> List[Problem]:
        if not self.differing:
            return []
        return [Problem(WARNING, "case_collision", "all",
                        f"{self.differing} file(s) have a copy whose name differs only in letter case and whose bytes "
                        "differ; the spelling the source names was used")]

    def notes(self) -> Dict[str, int]:
        return {"case_collisions": self.found, "case_collisions_differing": self.differing}


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


def _kaggle_pair(split: str, mask_name: str, report: str, image_dir: Path, mask_dir: Path, where: str,
                 collisions: _CaseCollisions) -> Tuple[Optional[SourcePair], Optional[Problem]]:
    """The pair a table row names: the mask ``mask_dir/<mask_name>`` and the image ``image_dir/<X>`` beside it."""
    if not mask_name.startswith(QATA_MASK_PREFIX):
        return None, Problem(ERROR, "bad_entry", split, f"{where}: {mask_name!r} does not name a mask "
                                                        f"({QATA_MASK_PREFIX}<image file name>)")
    image, mask = image_dir / mask_name[len(QATA_MASK_PREFIX):], mask_dir / mask_name
    missing = [str(p) for p in (image, mask) if not p.is_file()]
    if missing:
        return None, Problem(ERROR, "missing_file", split,
                             f"{where} names {mask_name!r}, but {' and '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} missing (names must match the table's "
                             "spelling, letter case included); is the image copy complete?")
    collisions.see(image)
    collisions.see(mask)
    return SourcePair(split, image.stem, image, mask, report), None


def _unlisted(folder: Path, used: Iterable[Path]) -> int:
    """How many image files in ``folder`` no row names."""
    used = {p.name for p in used}
    return sum(1 for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and p.name not in used)


# ---------------------------------------------------------------------------------------------------------------
# lvit: Kaggle's QaTa-COV19-v2 with LViT's report tables, or a folder already in the LViT layout.


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
    layout_root = _find_root(folder, LVIT_FOLDERS["train"], ("Covid19", "QaTa-Covid19", "QaTa-COV19"))
    if layout_root is not None:
        return _read_lvit_layout(layout_root)
    root = _find_root(folder, KAGGLE_FOLDERS["train"], ("QaTa-COV19-v2", "QaTa-COV19/QaTa-COV19-v2"))
    if root is None:
        return _not_this_source(f"{folder} holds neither Kaggle's QaTa-COV19-v2 ('{KAGGLE_FOLDERS['train']}' and "
                                f"'{KAGGLE_FOLDERS['test']}' folders) nor the LViT layout (Train_Folder, Val_Folder, "
                                "Test_Folder)")
    search = [folder, root] + [root / name for name in KAGGLE_FOLDERS.values()]
    tables, problems = _find_tables(search, LVIT_TABLES)
    if not tables:
        return _not_this_source(f"{root} holds Kaggle's images but none of LViT's report tables "
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
    collisions = _CaseCollisions()
    used: Dict[str, List[Path]] = {"train": [], "test": []}
    for split, (reports, table) in rows.items():
        folder_name = KAGGLE_FOLDERS["test" if split == "test" else "train"]
        image_dir, mask_dir = root / folder_name / KAGGLE_IMAGES, root / folder_name / KAGGLE_MASKS
        if not image_dir.is_dir() or not mask_dir.is_dir():
            problems.append(Problem(ERROR, "missing_folder", split, f"{image_dir} or {mask_dir} is missing"))
            continue
        for name, report in reports.items():
            pair, problem = _kaggle_pair(split, name, report, image_dir, mask_dir,
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
            unlisted[key] = _unlisted(image_dir, used[key])
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


# ---------------------------------------------------------------------------------------------------------------
# prolearn: the ProLearn repository's data/QaTa.


def read_prolearn(folder: Path) -> SourceRead:
    """The ProLearn repository's ``data/QaTa`` (github ShuchangYe-bib/ProLearn).

    Layout: ``images/<id>.png``, ``masks/<id>.png``, ``reports/<id>.txt`` (the report) and ``split.json``, a dict
    ``{"train": [id, ...], "val": [...], "test": [...]}``. The ids are ProLearn's renaming of LViT's file names
    (``covid_0001`` for ``covid_1``, ``cxr_s09343-e20470-r1`` for ``sub-S09343_ses-E20470_..._dx``); they are kept
    as the names ``<X>``, so the written set's names and ``data_sha256`` differ from an import of LViT's copy.

    Duplicates: split.json lists some ids twice within a split (3 in train and 5 in test in the copy read in 2025).
    Such an entry can only name one file, so it is used once and counted in a warning and the notes; LViT's split
    has two different images there (two acquisitions of one session, ``acq-1``/``acq-2``, that the renaming merged),
    and ProLearn's copy holds only one, so those splits are short of LViT's counts (5713 / 1429 / 2108 pairs instead
    of 5716 / 1429 / 2113): import it with ``--any-counts``. An id in two splits is an error. The val split is
    split.json's own (it has LViT's 1429); a copy without a ``"val"`` list is an error, no val is invented.
    """
    folder = Path(folder)
    root = _find_root(folder, "split.json", ("data/QaTa", "QaTa"))
    if root is None or not (root / "reports").is_dir():
        return _not_this_source(f"{folder} holds no split.json with a reports/ folder beside it (nor data/QaTa/...); "
                                "the ProLearn copy is the data/QaTa folder of github.com/ShuchangYe-bib/ProLearn")
    split_file = root / "split.json"
    try:
        split_lists = json.loads(split_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return SourceRead([], [Problem(ERROR, "unreadable_split", "all",
                                       f"{split_file} is not JSON text ({error}); get the file again")], {})
    if not isinstance(split_lists, dict):
        return SourceRead([], [Problem(ERROR, "unreadable_split", "all",
                                       f"{split_file} is not a dict of split -> ids; get the file again")], {})
    problems: List[Problem] = []
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            problems.append(Problem(ERROR, "missing_folder", "all", f"{root / sub} is missing; is the copy complete?"))
    if problems:
        return SourceRead([], problems, {"root": str(root)})
    pairs: List[SourcePair] = []
    split_of: Dict[str, str] = {}
    collapsed: Dict[str, List[str]] = {}
    entries: Dict[str, int] = {}
    collisions = _CaseCollisions()
    for split in ("train", "val", "test"):
        ids = split_lists.get(split)
        if not isinstance(ids, list):
            why = (" ProLearn's copy then lacks LViT's val split, and none is invented: get LViT's partition (its "
                   "README) or another copy" if split == "val" else "")
            problems.append(Problem(ERROR, "missing_split", split,
                                    f"{split_file} has no list {split!r} (it has {sorted(split_lists)}).{why}"))
            continue
        entries[split] = len(ids)
        for sample_id in ids:
            if not isinstance(sample_id, str) or not sample_id:
                problems.append(Problem(ERROR, "bad_entry", split, f"{split_file}: {sample_id!r} is not an id"))
                continue
            reason = unsafe_name_reason(sample_id)
            if reason is not None:
                problems.append(Problem(ERROR, "unsafe_name", split,
                                        f"{split_file}: id {sample_id!r} is refused because {reason}"))
                continue
            if sample_id in split_of:
                if split_of[sample_id] == split:
                    collapsed.setdefault(split, []).append(sample_id)
                else:
                    problems.append(Problem(ERROR, "split_overlap", split,
                                            f"{split_file} lists {sample_id!r} in {split_of[sample_id]} and in "
                                            f"{split}; a sample belongs to one split"))
                continue
            split_of[sample_id] = split
            image, mask, report_file = (root / "images" / f"{sample_id}.png", root / "masks" / f"{sample_id}.png",
                                        root / "reports" / f"{sample_id}.txt")
            missing = [str(p) for p in (image, mask, report_file) if not p.is_file()]
            if missing:
                problems.append(Problem(ERROR, "missing_file", split,
                                        f"{split_file} lists {sample_id!r}, but {' and '.join(missing)} "
                                        f"{'is' if len(missing) == 1 else 'are'} missing; is the copy complete?"))
                continue
            try:
                report = report_file.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError as error:
                problems.append(Problem(ERROR, "unreadable_report", split,
                                        f"{report_file} is not UTF-8 text ({error.reason}); get the file again"))
                continue
            collisions.see(image)
            collisions.see(mask)
            pairs.append(SourcePair(split, sample_id, image, mask, report))
    for split, ids in collapsed.items():
        problems.append(Problem(WARNING, "duplicate_entry", split,
                                f"{split_file} lists {len(ids)} id(s) of {split} twice (e.g. {ids[0]!r}); each is "
                                f"used once, so {split} has {len(ids)} pair(s) fewer than its list (LViT's split "
                                "has two images there that ProLearn's renaming merged; use --any-counts)"))
    unlisted = _unlisted(root / "images", [p.image for p in pairs])
    if unlisted:
        problems.append(Problem(WARNING, "unlisted", "all",
                                f"{unlisted} image(s) in {root / 'images'} are in no list of {split_file}; they are "
                                "left out"))
    problems += collisions.problems()
    return SourceRead(pairs, problems, {"root": str(root), "split_json_entries": entries,
                                        "duplicates_collapsed": {s: len(ids) for s, ids in collapsed.items()},
                                        "unlisted_images": unlisted,
                                        "names": "ProLearn's ids, not LViT's file names", **collisions.notes()})


# ---------------------------------------------------------------------------------------------------------------
# guidedecoder: GuideDecoder's prompt CSVs beside Kaggle's images.


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
    root = _find_root(folder, "prompt/train.csv", ("QaTa-COV19-v2", "data/QaTa-COV19-v2"))
    if root is None:
        return _not_this_source(f"{folder} holds no prompt/train.csv (nor QaTa-COV19-v2/prompt/...); GuideDecoder's "
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
    collisions = _CaseCollisions()
    for name, report in train_table.reports.items():
        row = train_table.rows[name]
        split = "val" if row - 2 >= cut else "train"  # row 2 is the table's first data row, index 0
        pair, problem = _kaggle_pair(split, name, report, *folders["Train"], f"train.csv row {row}", collisions)
        problems += [problem] if problem is not None else []
        pairs += [pair] if pair is not None else []
    for name, report in tables["test"].reports.items():
        pair, problem = _kaggle_pair("test", name, report, *folders["Test"],
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


Reader = Callable[[Path], SourceRead]
# Detection (tools.get_data) tries the readers in this order and takes the first whose layout the folder holds.
SOURCES: Dict[str, Reader] = {"sgseg": read_sgseg, "lvit": read_lvit, "prolearn": read_prolearn,
                              "guidedecoder": read_guidedecoder}
SOURCE_HINTS = {
    "sgseg": "git clone https://github.com/ShuchangYe-bib/SGSeg (its data/QaTa folder, about 290 MB)",
    "lvit": "Kaggle's QaTa-COV19 (https://www.kaggle.com/datasets/aysendegerli/qatacov19-dataset, a login is needed; "
            "its QaTa-COV19-v2 folder) plus LViT's Train_text.xlsx, Val_text.xlsx and Test_text.xlsx (links in the "
            "Data Preparation section of https://github.com/HUANGLIZI/LViT); put the tables beside QaTa-COV19-v2",
    "prolearn": "git clone https://github.com/ShuchangYe-bib/ProLearn (its data/QaTa folder; renamed ids and merged "
                "duplicates give 5713 / 1429 / 2108 pairs: pass --any-counts)",
    "guidedecoder": "Kaggle's QaTa-COV19-v2 folder (as for lvit) with LViT's tables saved as prompt/train.csv "
                    "(train+val) and prompt/test.csv, as https://github.com/Junelin2333/LanGuideMedSeg-MICCAI2023 "
                    "reads them; val is the last 20% of train.csv (counts may differ from LViT's: --any-counts)",
}


def read_source(kind: str, folder: Path) -> SourceRead:
    """Read a source copy with the reader registered as ``kind``."""
    if kind not in SOURCES:
        raise ValueError(f"unknown source layout {kind!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[kind](Path(folder))
