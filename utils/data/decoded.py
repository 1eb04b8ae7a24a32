"""A split's images and masks decoded and brought to the model's size once, kept in memory for every epoch.

Reading a PNG, converting it and resizing it costs the same every epoch and gives the same bytes every time, so a
training run that keeps the results pays it once. Augmentation then starts from the kept arrays, and an item is
the same bits as without the cache. The cache is filled up front, on as many threads as there are cores
(OpenCV's decoding and resizing release the GIL), so that DataLoader workers forked afterwards share it.

A file changed on disk during the run is read again: each entry remembers its two files' size and modification
time, and is checked against them when used (a ``stat`` per file, microseconds).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)
MIB = 1 << 20

Arrays = Tuple[np.ndarray, np.ndarray]  # the image [S, S, 3] uint8 (BGR) and the mask [S, S] uint8 in {0, 1}
Stamp = Tuple[int, int, int, int]


def file_stamp(image: Path, mask: Path) -> Stamp:
    """Size and modification time (ns) of an image and its mask: what changes when either file is rewritten."""
    a, b = os.stat(image), os.stat(mask)
    return a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns


class DecodedCache:
    """The decoded, resized arrays of a split's samples, by index.

    Args:
        pairs: each sample's ``(image path, mask path)``.
        load: ``load(i) -> (image, mask)``, the uncached read of sample ``i`` at the model's size.
        img_size: the model's side ``S`` (for the memory estimate).
        budget_mib: the most memory the split's arrays may take; a split that needs more is not cached (logged).
    """

    def __init__(self, pairs: Sequence[Tuple[Path, Path]], load: Callable[[int], Arrays], img_size: int,
                 budget_mib: int):
        self.pairs = list(pairs)
        self.load = load
        self.needed_mib = len(self.pairs) * img_size * img_size * 4 / MIB
        self.budget_mib = budget_mib
        self.enabled = 0 < self.needed_mib <= budget_mib
        self.entries: Dict[int, Tuple[Stamp, np.ndarray, np.ndarray]] = {}
        self.fill_seconds = 0.0

    def fill(self, threads: Optional[int] = None) -> None:
        """Decode every sample now (no-op when disabled or filled)."""
        if not self.enabled or len(self.entries) == len(self.pairs):
            return
        started = time.perf_counter()
        missing = [i for i in range(len(self.pairs)) if i not in self.entries]
        with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
            for i, entry in zip(missing, pool.map(self._entry, missing)):
                self.entries[i] = entry
        self.fill_seconds += time.perf_counter() - started
        logger.info("decoded %d images and masks into memory in %.1f s (%.0f MiB): later epochs do not read them "
                    "again", len(missing), self.fill_seconds, self.needed_mib)

    def _entry(self, i: int) -> Tuple[Stamp, np.ndarray, np.ndarray]:
        stamp = file_stamp(*self.pairs[i])
        image, mask = self.load(i)
        image.setflags(write=False)  # shared by every epoch (and forked worker): nobody may change it in place
        mask.setflags(write=False)
        return stamp, image, mask

    def get(self, i: int) -> Arrays:
        """Sample ``i``'s arrays: kept ones when its files are unchanged, else read (and kept) anew."""
        if not self.enabled:
            return self.load(i)
        entry = self.entries.get(i)
        if entry is None or entry[0] != file_stamp(*self.pairs[i]):
            entry = self.entries[i] = self._entry(i)
        return entry[1], entry[2]
