"""The ``sgseg`` source: the SGSeg repository's ``data/QaTa`` (github ShuchangYe-bib/SGSeg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from utils.data.records import ERROR, QATA_MASK_PREFIX, WARNING, Problem
from utils.data.sources._common import SourcePair, SourceRead, case_groups, find_root, not_this_source


def read_sgseg(folder: Path) -> SourceRead:
    """The SGSeg repository's ``data/QaTa`` (github ShuchangYe-bib/SGSeg).

    Layout: ``images/{train,valid,test}/{images,masks}`` and ``prompts/annotation.json``, a dict of split -> list
    of ``{"image_path": "mask_<X>.png", "caption": report, ...}``. Some images and masks are there twice under
    names that differ only in letter case; the annotation's spelling decides which file is used, and the other
    copies are counted (and compared) in the notes.
    """
    root = find_root(folder, "prompts/annotation.json", ("data/QaTa", "QaTa"))
    if root is None:
        return not_this_source(f"{folder} holds no prompts/annotation.json (nor data/QaTa/prompts/...); the SGSeg "
                               "copy is the data/QaTa folder of github.com/ShuchangYe-bib/SGSeg")
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
        image_groups = case_groups(image_dir)
        mask_groups = case_groups(mask_dir)
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
