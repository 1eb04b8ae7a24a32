"""Checks that tell a user what is wrong with a data set folder, before training (or ``Load_Dataset.py --check``).

:func:`check_dataset` looks at the splits a run needs and returns a :class:`CheckResult`: per split the counts
(images, masks, reports, complete pairs, reports cut to ``token_len``) and a list of :class:`Problem` records, each
naming the file or table row. Errors make the set untrainable; warnings are reported and training goes on.

Errors: a missing split folder, ``img/``, ``labelcol/`` or table; a table that cannot be read or lacks a column;
a row naming a file outside the data folder (``../x.png``, ``/abs``, ``a/b.png``: refused); two rows giving one
mask different reports; an image without a mask, a mask without an image, two files with one stem; an image and
mask without a row; a QaTa mask not named ``mask_<image>``; an unreadable or zero-byte image or mask; a mask whose
size differs from its image's; a split with no complete sample.

Warnings: a row naming no mask in any split that uses the table; a row repeated with the same report; an empty
report or name cell; a non-binary mask (it is binarised as ``value > 0``); a file that is not an image; an image
under 16 pixels on a side or more than 10:1 (it is stretched to a square); a split whose masks are all empty.
An image or mask over ``max_image_pixels`` is an error, refused from its header before it is decoded.

Rows of a table that several splits share (QaTa's ``Train_Val_text.xlsx``) are checked against the masks of all
splits that use it, so a validation row is not "unused" when only the training split is checked. Table problems
are reported once, under the splits that share the table (``train+val``).
"""

from __future__ import annotations

import functools
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from utils.data.files import index_split, list_images, same_file, split_paths
from utils.data.images import read_image, read_mask
from utils.data.records import ERROR, SPLITS, WARNING, DatasetError, Problem, ReportTable, Sample, SplitIndex
from utils.data.tables import read_report_table
from utils.data.tokenizer import tokenize_reports

MIN_SIDE = 16  # an image smaller than this on a side is warned about (it is stretched to img_size)
MAX_ASPECT = 10  # and one longer than this many times its width, or wider than this many times its height


@dataclass
class SplitSummary:
    """What was found in one split.

    Attributes:
        split: "train", "val" or "test".
        folder: the split folder.
        table: its report table.
        images, masks: image files in ``img/`` and ``labelcol/``.
        reports: masks of this split that have a table row.
        pairs: complete samples (image, mask and report).
        cut_reports: reports whose words do not fit ``token_len`` and are cut.
        empty_masks: masks with no foreground pixel (only counted when images are decoded).
    """

    split: str
    folder: Path
    table: Path
    images: int = 0
    masks: int = 0
    reports: int = 0
    pairs: int = 0
    cut_reports: int = 0
    empty_masks: int = 0


@dataclass
class CheckResult:
    """The outcome of :func:`check_dataset`.

    Attributes:
        splits: split name -> its counts.
        tables: table path -> the splits that read it.
        problems: every problem found, in the order found.
        indexes: split name -> its sample index, for building the datasets without listing the folders again.
        decoded: whether images and masks were decoded (sizes, binary masks, unreadable files checked).
    """

    splits: Dict[str, SplitSummary] = field(default_factory=dict)
    tables: Dict[Path, List[str]] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)
    indexes: Dict[str, SplitIndex] = field(default_factory=dict)
    decoded: bool = False

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when the set can be trained on (no errors; warnings allowed)."""
        return not self.errors

    def format(self, max_per_kind: Optional[int] = 10, severities: Sequence[str] = (ERROR, WARNING)) -> str:
        """The check's result as text: a table of counts per split, the tables, then the problems.

        Args:
            max_per_kind: show at most this many problems of one kind in one split, then a count of the rest
                (None: all).
            severities: which problems to list.

        Returns:
            Several lines, ending with a one-line verdict.
        """
        lines = []
        header = ("split", "images", "masks", "reports", "pairs", "cut reports", "folder")
        rows = [header] + [(s.split, str(s.images), str(s.masks), str(s.reports), str(s.pairs), str(s.cut_reports),
                            str(s.folder)) for s in self.splits.values()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        for r in rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                         + "  " + r[-1])
        if self.decoded:
            empty = {s.split: s.empty_masks for s in self.splits.values() if s.empty_masks}
            if empty:
                lines.append("masks without foreground: " + ", ".join(f"{k} {v}" for k, v in empty.items()))
        else:
            lines.append("images and masks were not decoded (sizes, binary masks and unreadable files unchecked)")
        lines.append("report tables:")
        for path, users in self.tables.items():
            lines.append(f"  {path}  (used by {', '.join(users)})")
        for severity in severities:
            chosen = [p for p in self.problems if p.severity == severity]
            if not chosen:
                continue
            lines.append(f"{severity}s ({len(chosen)}):")
            groups: Dict[Tuple[str, str], List[Problem]] = defaultdict(list)
            for p in chosen:
                groups[(p.split, p.code)].append(p)
            for (split, code), group in groups.items():
                shown = group if max_per_kind is None else group[:max_per_kind]
                for p in shown:
                    lines.append(f"  [{split}] {code}: {p.message}")
                if len(group) > len(shown):
                    lines.append(f"  [{split}] {code}: ... and {len(group) - len(shown)} more like this")
        n_err, n_warn = len(self.errors), len(self.warnings)
        if n_err:
            lines.append(f"FAILED: {n_err} error(s), {n_warn} warning(s); these splits cannot be used as they are.")
        else:
            lines.append(f"OK: {n_warn} warning(s); these splits can be used.")
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        """Raise :class:`DatasetError` listing the errors (at most 10 per kind) when there are any."""
        if self.errors:
            raise DatasetError("the data set has errors:\n" + self.format(max_per_kind=10, severities=(ERROR,)))


def check_dataset(cfg, splits: Iterable[str] = SPLITS, decode: Optional[bool] = None,
                  max_threads: Optional[int] = None) -> CheckResult:
    """Check the splits of the data set that ``cfg`` points at.

    Args:
        cfg: a :class:`utils.config.Config` (split folders, tables, pairing, ``token_len``).
        splits: the splits to check (a run that trains needs "train" and "val").
        decode: decode every image and mask (unreadable files, sizes, binary masks); None = ``cfg.check_images``.
        max_threads: threads for decoding (OpenCV releases the GIL); None = up to 8, one per CPU.

    Returns:
        The :class:`CheckResult`; it never raises for a problem in the data, only lists it.
    """
    splits = list(dict.fromkeys(splits))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; splits are {SPLITS}")
    decode = cfg.check_images if decode is None else decode
    result = CheckResult(decoded=decode)
    all_paths = {s: split_paths(cfg, s) for s in SPLITS}

    # One read per table file; a table serves every split whose configured path leads to the same file.
    users_of: Dict[str, List[str]] = {}
    table_of: Dict[str, ReportTable] = {}
    for split in splits:
        owner = next((s for s in table_of if same_file(all_paths[s].table, all_paths[split].table)), None)
        if owner is not None:
            table_of[split] = table_of[owner]
            continue
        users = [s for s in SPLITS if same_file(all_paths[s].table, all_paths[split].table)]
        label = "+".join(users)
        table_of[split] = read_report_table(all_paths[split].table, label, max_rows=cfg.max_table_rows,
                                            max_mib=cfg.max_table_mib)
        users_of[split] = users
        result.tables[all_paths[split].table] = users
        result.problems += table_of[split].problems

    for split in splits:
        index = index_split(all_paths[split], table_of[split], cfg.pairing)
        result.indexes[split] = index
        result.problems += index.problems
        result.splits[split] = SplitSummary(split=split, folder=all_paths[split].folder,
                                            table=all_paths[split].table, images=len(index.image_names),
                                            masks=len(index.mask_names), reports=index.n_reports,
                                            pairs=len(index.samples))

    for split, users in users_of.items():
        result.problems += _unused_rows(table_of[split], [all_paths[u] for u in users], result.indexes)

    for split in splits:
        samples = result.indexes[split].samples
        words_cut = tokenize_reports([s.report for s in samples], cfg, pad_short_reports=False).words_cut
        result.splits[split].cut_reports = int(words_cut.sum())
        if decode:
            problems, empty = _check_files(samples, split, max_threads, cfg.max_image_pixels)
            result.problems += problems
            result.splits[split].empty_masks = empty
    return result


def _unused_rows(table: ReportTable, users: Sequence, indexes: Dict[str, SplitIndex]) -> List[Problem]:
    """Warnings for the rows of ``table`` that name no mask in any split using it."""
    if not table.readable:
        return []
    masks = set()
    for paths in users:
        if paths.split in indexes:
            masks.update(indexes[paths.split].mask_names)
        elif paths.mask_dir.is_dir():  # a sharing split that is not being checked still owns its rows
            masks.update(list_images(paths.mask_dir, paths.split)[0])
    folders = " or ".join(str(p.mask_dir) for p in users)
    label = "+".join(p.split for p in users)
    return [Problem(WARNING, "row_without_file", label,
                    f"{table.path.name} row {table.rows[name]}: {name!r} names no mask in {folders}; the row is unused")
            for name in table.reports if name not in masks]


def odd_shape_reason(width: int, height: int) -> Optional[str]:
    """Why an image of ``width`` x ``height`` is unlikely to be meant (tiny, or a strip), or None."""
    if min(width, height) < MIN_SIDE:
        return f"is {width}x{height} (WxH), under {MIN_SIDE} pixels on a side"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return f"is {width}x{height} (WxH), more than {MAX_ASPECT}:1"
    return None


def _check_sample(sample: Sample, max_pixels: int) -> Tuple[List[Tuple[str, str, str]], bool]:
    """Decode one image and mask: ``([(severity, code, message)], mask is empty)``."""
    found = []
    image = mask = None
    try:
        image = read_image(sample.image_path, max_pixels)
    except DatasetError as error:
        found.append((ERROR, "unreadable_file", str(error)))
    try:
        mask = read_mask(sample.mask_path, max_pixels)
    except DatasetError as error:
        found.append((ERROR, "unreadable_file", str(error)))
    if image is not None:
        odd = odd_shape_reason(image.shape[1], image.shape[0])
        if odd:
            found.append((WARNING, "odd_shape", f"{sample.image_path} {odd}; it is stretched to a square of img_size "
                                                "pixels like every image: check that it is the image you meant"))
    if mask is None:
        return found, False
    if image is not None and image.shape[:2] != mask.shape:
        found.append((ERROR, "size_mismatch",
                      f"{sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {sample.image_path} "
                      f"is {image.shape[1]}x{image.shape[0]}; both are resized on their own, so the mask would not "
                      "line up: supply the mask at the image's size"))
    levels = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    if len(levels[levels > 0]) > 1:
        shown = ", ".join(str(v) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
        found.append((WARNING, "non_binary_mask",
                      f"{sample.mask_path} is not binary: {len(levels)} grey levels ({shown}). It is binarised as "
                      "value > 0 after the bilinear resize, so every non-zero pixel is foreground (JPEG artefacts "
                      "and soft edges grow the mask); save masks as 0/255 PNG if that is not intended"))
    return found, not levels.size or levels.max() == 0


def _check_files(samples: Sequence[Sample], split: str, max_threads: Optional[int],
                 max_pixels: int) -> Tuple[List[Problem], int]:
    """Decode every image and mask of a split, in threads; return the problems and the number of empty masks."""
    threads = max_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(functools.partial(_check_sample, max_pixels=max_pixels), samples))
    problems = [Problem(sev, code, split, msg) for found, _ in results for sev, code, msg in found]
    empty = sum(empty for _, empty in results)
    if samples and empty == len(samples):
        problems.append(Problem(WARNING, "all_masks_empty", split,
                                f"all {empty} masks of {split} are empty (no pixel above 0): there is nothing to "
                                "segment; check that labelcol/ holds the masks and not blank files"))
    return problems, empty
