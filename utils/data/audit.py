"""What a split's reports say, and where its masks are: the facts to know before trusting reports as a signal.

:func:`audit_split` counts the distinct reports; for each position word, where the mask mass of the images whose
reports use that word (and not its opposite) lies in image coordinates (left/right halves, top/middle/bottom
thirds), so one can read whether "left" means the image's left or the patient's; the share of reports naming all six
lung zones; and how often shuffling the reports between images hands an image the very same text.

Zones are parsed from QaTa-COV19's phrasing ("upper middle lower left lung and lower right lung", "all left lung");
a report with no such phrase names no zone.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Sequence, Tuple

import numpy as np

from utils.data.images import read_mask
from utils.data.records import Sample
from utils.data.reports import report_cycle

ROWS = ("upper", "middle", "lower")
SIDES = ("left", "right")
ALL_ZONES = frozenset((row, side) for row in ROWS for side in SIDES)
_ZONE_PHRASE = re.compile(r"\b((?:(?:upper|middle|lower|all)\s+)+)(left|right)\s+lung", re.IGNORECASE)
# Position words and the words that, when also present, make the word's region ambiguous.
WORD_OPPOSITES: Dict[str, Tuple[str, ...]] = {
    "left": ("right",), "right": ("left",),
    "upper": ("middle", "lower"), "middle": ("upper", "lower"), "lower": ("upper", "middle"),
}


def report_zones(report: str) -> FrozenSet[Tuple[str, str]]:
    """The (row, side) zones a QaTa-style report names; "all" names the three rows of its side."""
    zones = set()
    for rows, side in _ZONE_PHRASE.findall(report):
        words = rows.lower().split()
        for row in (ROWS if "all" in words else words):
            zones.add((row, side.lower()))
    return frozenset(zones)


def mask_mass(mask: np.ndarray) -> Dict[str, float]:
    """Shares of a mask's foreground in the image's left and right halves and top, middle and bottom thirds
    (image coordinates: column 0 is the image's left). All zero for an empty mask."""
    fg = mask > 0
    total = fg.sum()
    h, w = fg.shape
    if not total:
        return {key: 0.0 for key in ("image_left", "image_right", "top", "middle", "bottom")}
    cols = fg.sum(0)
    rows = fg.sum(1)
    left = cols[: w // 2].sum() + (cols[w // 2] / 2 if w % 2 else 0)
    third = [rows[int(round(k * h / 3)):int(round((k + 1) * h / 3))].sum() for k in range(3)]
    return {"image_left": float(left / total), "image_right": float(1 - left / total),
            "top": float(third[0] / total), "middle": float(third[1] / total), "bottom": float(third[2] / total)}


@dataclass
class Audit:
    """The findings of :func:`audit_split`."""

    images: int
    report_counts: List[Tuple[str, int]]  # distinct reports, most frequent first
    word_mass: Dict[str, Dict[str, float]]  # position word -> images, and mean mask shares where it is used alone
    all_zones_share: float  # reports naming all six zones
    same_text_pair_share: float  # two images drawn at random hold the same text (sum of squared frequencies)
    same_text_cycle_share: float  # images a plain derangement (report_cycle) hands their own text
    zone_counts: Dict[int, int] = field(default_factory=dict)  # zones named -> reports naming that many


def audit_split(samples: Sequence[Sample], seed: int = 0) -> Audit:
    """Audit the reports and masks of ``samples`` (see the module's docstring); every mask is decoded once."""
    reports = [s.report for s in samples]
    n = len(reports)
    counts = Counter(reports)
    masses = [mask_mass(read_mask(s.mask_path)) for s in samples]
    word_mass: Dict[str, Dict[str, float]] = {}
    for word, opposites in WORD_OPPOSITES.items():
        chosen = [m for r, m in zip(reports, masses)
                  if re.search(rf"\b{word}\b", r, re.I) and not any(re.search(rf"\b{o}\b", r, re.I) for o in opposites)
                  and any(m.values())]
        word_mass[word] = {"images": len(chosen),
                           **{key: float(np.mean([m[key] for m in chosen])) if chosen else float("nan")
                              for key in ("image_left", "image_right", "top", "middle", "bottom")}}
    zones = [report_zones(r) for r in reports]
    donor = report_cycle(n, seed) if n > 1 else None
    same_cycle = sum(reports[i] == reports[int(donor[i])] for i in range(n)) / n if donor is not None else 1.0
    return Audit(images=n, report_counts=counts.most_common(), word_mass=word_mass,
                 all_zones_share=sum(z == ALL_ZONES for z in zones) / max(n, 1),
                 same_text_pair_share=sum((c / n) ** 2 for c in counts.values()) if n else 0.0,
                 same_text_cycle_share=same_cycle,
                 zone_counts=dict(sorted(Counter(len(z) for z in zones).items())))


def format_audit(audit: Audit, top: int = 15) -> str:
    """The audit as text: the most frequent reports, the position words' mask shares, the zone and shuffle shares."""
    shown = min(top, len(audit.report_counts))
    lines = [f"{audit.images} images, {len(audit.report_counts)} distinct reports; the {shown} most frequent:"]
    for report, count in audit.report_counts[:top]:
        lines.append(f"  {count:5d} ({100 * count / audit.images:4.1f}%)  {report}")
    lines.append("")
    lines.append("position word (in reports without its opposite): images, and the mean share of their masks in the")
    lines.append("  image's left half | right half | top | middle | bottom third (column 0 is the image's left)")
    for word, m in audit.word_mass.items():
        shares = " | ".join(f"{m[key]:.2f}" for key in ("image_left", "image_right", "top", "middle", "bottom"))
        lines.append(f"  {word:7s} {m['images']:5d}   {shares}")
    lines.append("")
    named = ", ".join(f"{k}: {v}" for k, v in sorted(audit.zone_counts.items()))
    lines.append(f"zones named per report (count: images): {named}")
    lines.append(f"reports naming all six zones: {100 * audit.all_zones_share:.1f}%")
    lines.append(f"two images drawn at random hold the same report text: {100 * audit.same_text_pair_share:.1f}%")
    lines.append("a plain derangement of the reports hands an image its own text: "
                 f"{100 * audit.same_text_cycle_share:.1f}% (the shuffled ablation deranges over different texts)")
    return "\n".join(lines)
