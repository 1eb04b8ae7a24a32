"""The ``prolearn`` source: the ProLearn repository's ``data/QaTa`` (github ShuchangYe-bib/ProLearn)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from utils.data.records import ERROR, WARNING, Problem
from utils.data.sources._common import (
    CaseCollisions,
    SourcePair,
    SourceRead,
    count_unlisted,
    find_root,
    not_this_source,
)
from utils.data.tables import unsafe_name_reason


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
    root = find_root(folder, "split.json", ("data/QaTa", "QaTa"))
    if root is None or not (root / "reports").is_dir():
        return not_this_source(f"{folder} holds no split.json with a reports/ folder beside it (nor data/QaTa/...); "
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
    collisions = CaseCollisions()
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
    unlisted = count_unlisted(root / "images", [p.image for p in pairs])
    if unlisted:
        problems.append(Problem(WARNING, "unlisted", "all",
                                f"{unlisted} image(s) in {root / 'images'} are in no list of {split_file}; they are "
                                "left out"))
    problems += collisions.problems()
    return SourceRead(pairs, problems, {"root": str(root), "split_json_entries": entries,
                                        "duplicates_collapsed": {s: len(ids) for s, ids in collapsed.items()},
                                        "unlisted_images": unlisted,
                                        "names": "ProLearn's ids, not LViT's file names", **collisions.notes()})
