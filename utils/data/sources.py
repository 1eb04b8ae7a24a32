"""Where QaTa-COV19 with LViT's reports can be found today, and how each copy is laid out.

Each source layout has one reader in :data:`SOURCES`: a function from the copy's folder to the list of
:class:`SourcePair` (split, image file, mask file, report) and the problems met on the way. The importer
(:mod:`utils.data.importer`) turns that list into the LViT layout that ``Config_QaTa`` reads, whatever the source; a
new source is one reader and one entry here.

Names in the LViT layout: the image ``img/<X>.png`` and its mask ``labelcol/mask_<X>.png``; a report table row names
the mask. ``<X>`` is the image's file name without its extension, as the source names it (SGSeg: as its annotation
file spells it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from utils.data.records import ERROR, QATA_MASK_PREFIX, WARNING, Problem

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


Reader = Callable[[Path], SourceRead]
SOURCES: Dict[str, Reader] = {"sgseg": read_sgseg}
SOURCE_HINTS = {
    "sgseg": "git clone https://github.com/ShuchangYe-bib/SGSeg (its data/QaTa folder, about 290 MB)",
}


def read_source(kind: str, folder: Path) -> SourceRead:
    """Read a source copy with the reader registered as ``kind``."""
    if kind not in SOURCES:
        raise ValueError(f"unknown source layout {kind!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[kind](Path(folder))
