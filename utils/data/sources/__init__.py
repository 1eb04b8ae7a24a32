"""Where QaTa-COV19 with LViT's reports can be found today, and how each copy is laid out.

Each source layout has one reader in :data:`SOURCES`: a function from the copy's folder to the list of
:class:`SourcePair` (split, image file, mask file, report) and the problems met on the way. The importer
(:mod:`utils.data.importer`) turns that list into the LViT layout that ``Config_QaTa`` reads, whatever the source; a
new source is one module in this package (its reader) and one entry in :data:`SOURCES` and :data:`SOURCE_HINTS` here.

Names in the LViT layout: the image ``img/<X>.png`` and its mask ``labelcol/mask_<X>.png``; a report table row names
the mask. ``<X>`` is the image's file name without its extension, as the source names it (SGSeg: as its annotation
file spells it; ProLearn: its renamed id).

The readers, one module each: ``sgseg`` (:func:`read_sgseg`), ``lvit`` (:func:`read_lvit`: Kaggle's images with
LViT's tables, or a folder already in the LViT layout), ``prolearn`` (:func:`read_prolearn`), ``guidedecoder``
(:func:`read_guidedecoder`); the records and the helpers several readers share are in ``_common``. A reader never
raises for a problem in the copy: it lists it, and answers with the code ``not_this_source`` when the folder does not
hold its layout at all (``tools.get_data`` detects layouts by that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

from utils.data.sources._common import SourcePair, SourceRead
from utils.data.sources.guidedecoder import read_guidedecoder
from utils.data.sources.lvit import read_lvit
from utils.data.sources.prolearn import read_prolearn
from utils.data.sources.sgseg import read_sgseg

__all__ = ["LVIT_QATA_COUNTS", "SOURCE_HINTS", "SOURCES", "Reader", "SourcePair", "SourceRead", "read_guidedecoder",
           "read_lvit", "read_prolearn", "read_sgseg", "read_source"]

# LViT's QaTa-COV19 split: captioned image/mask pairs per split.
LVIT_QATA_COUNTS = {"train": 5716, "val": 1429, "test": 2113}

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
