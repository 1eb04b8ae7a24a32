"""The position words of a report, how they change when the image is mirrored, and reports given to other images.

One place for the vocabulary that report-consistent augmentation (``geometry="report"`` in
:mod:`utils.data.transforms`) and the interest-map measures (:mod:`utils.inference.language`) share. The words cover the
phrasing of QaTa-COV19 ("upper left lung and lower right lung"), MosMedData+ and the demo set, and the usual radiology
synonyms (top/bottom, apical/basal, superior/inferior).

A left-right mirror of the image puts what was on one side on the other, so "left" and "right" swap, whichever
side a data set's words mean (the demo's are the patient's; QaTa-COV19's "left" is the image's left, docs/QATA.md).
An up-down mirror swaps upper and lower. "Middle", "bilateral" and
"unilateral" stay true under both mirrors.

:func:`report_cycle` is a fixed derangement of a split's reports (no image keeps its own report file);
:func:`text_derangement` mends it so that no image keeps its own report *text* where that can be done, for the
shuffled-report scores during validation (``val/dice_shuffled``, ``val/text_gain``) and in the text ablation.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

LEFT_RIGHT: Dict[str, str] = {"left": "right", "right": "left"}
UP_DOWN: Dict[str, str] = {"upper": "lower", "lower": "upper", "top": "bottom", "bottom": "top",
                           "apical": "basal", "basal": "apical", "superior": "inferior", "inferior": "superior"}
# Words that say where a lesion is: what the words-of-interest weight should fall on in a positional report.
POSITION_WORDS = frozenset(LEFT_RIGHT) | frozenset(UP_DOWN) | {"middle"}

_WORD = re.compile(r"\b(" + "|".join(sorted(set(LEFT_RIGHT) | set(UP_DOWN), key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)


def _same_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def mirror_report(report: str, left_right: bool, up_down: bool) -> str:
    """The report as it reads for the image mirrored left-right and/or up-down.

    Every position word is swapped in one pass (so "left and right" becomes "right and left", never "left and
    left"), with its case kept ("Left" -> "Right", "UPPER" -> "LOWER"); punctuation and every other word stay.

    >>> mirror_report("Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
    ...               left_right=True, up_down=False)
    'Bilateral pulmonary infection, two infected areas, upper right lung and lower left lung.'
    """
    table = {**(LEFT_RIGHT if left_right else {}), **(UP_DOWN if up_down else {})}
    if not table:
        return report

    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = table.get(word.lower())
        return word if new is None else _same_case(new, word)

    return _WORD.sub(swap, report)


def report_cycle(n: int, seed: int) -> torch.Tensor:
    """``donor[i]``: whose report image ``i`` gets. One random cycle through all images, so with two or more
    images none keeps its own; the same ``(n, seed)`` always gives the same cycle."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    donor = torch.empty(n, dtype=torch.long)
    donor[order] = order.roll(-1)  # image order[k] takes the report of order[k + 1]
    return donor


def text_derangement(reports: Sequence[str], seed: int) -> Tuple[torch.Tensor, int]:
    """``donor[i]``: whose report image ``i`` gets, so that image ``i`` reads a report whose text differs from its
    own wherever that is possible, and how many images could not be given a different text.

    Starts from :func:`report_cycle` (so a split whose reports are all distinct gets exactly that cycle), then
    mends each image whose donor's text equals its own by swapping donors with an image ``j`` such that both
    then read a different text; ``j`` is the first such image in a seeded order. Data sets with few distinct
    reports (QaTa-COV19 has about 60 for 2113 test images) hand many images their own text under a plain cycle.
    An image is left unchanged only when no swap exists (one text held by more than half of the images).
    """
    n = len(reports)
    donor = report_cycle(n, seed)
    if n < 2:
        return donor, n
    _, text = np.unique(np.asarray(list(reports), dtype=object).astype(str), return_inverse=True)
    donor_np = donor.numpy().copy()
    order = np.random.default_rng(seed).permutation(n)
    unchanged = 0
    for i in order:
        if text[donor_np[i]] != text[i]:
            continue
        candidates = order[(text[order] != text[i]) & (text[donor_np[order]] != text[i])]
        if not len(candidates):
            unchanged += 1
            continue
        j = candidates[0]
        donor_np[i], donor_np[j] = donor_np[j], donor_np[i]
    return torch.from_numpy(donor_np), unchanged


_PATH_LIKE = re.compile(r"^\S*([/\\]\S*|\.[A-Za-z0-9]{1,5})$")  # no spaces, and a separator or a file extension


def report_concerns(report: str) -> List[str]:
    """What looks wrong with a report given for prediction, as phrases for a warning (empty when nothing does):
    an empty report; one that looks like a file path (the report is the text, not a file of it); one whose
    letters are mostly not Latin (the text towers here read English reports). A report cut to ``token_len`` is
    the tokenizer's to tell."""
    text = report.strip()
    if not text:
        return ["it is empty: the model reads only the start and end tokens"]
    concerns = []
    if _PATH_LIKE.match(text) and any(ch.isalpha() for ch in text):
        concerns.append(f"{text[:60]!r} looks like a file path or name: the report is the text itself (pass "
                        "--text \"$(cat FILE)\" to read it from a file)")
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(ch.isascii() for ch in letters) < 0.5 * len(letters):
        concerns.append("most of its letters are not Latin: the text tower learned English reports, so it reads "
                        "this as unfamiliar pieces")
    return concerns
