"""The records every source reader answers with (:class:`SourcePair`, :class:`SourceRead`), and the helpers that
several readers share (Kaggle's folder names, finding a copy's root, the answer ``not_this_source``, case collisions,
a table row's pair, unlisted images).

They live here, not in the package's ``__init__``, so that the reader modules import them without importing the
registry that imports the readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from utils.data.records import ERROR, QATA_MASK_PREFIX, WARNING, Problem

# Kaggle's QaTa-COV19-v2: split -> its folder, each with Images/ and Ground-truths/; the train folder holds LViT's
# train and val images.
KAGGLE_FOLDERS = {"train": "Train Set", "test": "Test Set"}
KAGGLE_IMAGES, KAGGLE_MASKS = "Images", "Ground-truths"


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


def find_root(folder: Path, marker: str, candidates: Tuple[str, ...]) -> Optional[Path]:
    """The folder under ``folder`` (itself or one of ``candidates``) that holds ``marker``."""
    for sub in ("",) + candidates:
        root = folder / sub if sub else folder
        if (root / marker).exists():
            return root
    return None


def case_groups(folder: Path) -> Dict[str, List[str]]:
    """Lower-cased file name -> the names in ``folder`` that spell it (more than one: a case collision)."""
    groups: Dict[str, List[str]] = {}
    for path in sorted(folder.iterdir()):
        if not path.name.startswith("."):
            groups.setdefault(path.name.lower(), []).append(path.name)
    return groups


def not_this_source(message: str) -> SourceRead:
    """The answer of a reader whose layout ``folder`` does not hold."""
    return SourceRead([], [Problem(ERROR, "not_this_source", "all", message)], {})


class CaseCollisions:
    """Counts the files used that share their folder with a name differing only in letter case, and how many of
    those have different bytes (then which one the source meant is a guess; the spelling the source names is used).
    """

    def __init__(self) -> None:
        self.groups: Dict[Path, Dict[str, List[str]]] = {}
        self.found = 0
        self.differing = 0

    def see(self, path: Path) -> None:
        if path.parent not in self.groups:
            self.groups[path.parent] = case_groups(path.parent)
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


def kaggle_pair(split: str, mask_name: str, report: str, image_dir: Path, mask_dir: Path, where: str,
                collisions: CaseCollisions) -> Tuple[Optional[SourcePair], Optional[Problem]]:
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


def count_unlisted(folder: Path, used: Iterable[Path]) -> int:
    """How many image files in ``folder`` no row names."""
    used = {p.name for p in used}
    return sum(1 for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and p.name not in used)

