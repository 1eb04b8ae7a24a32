"""A synthetic, chest-X-ray-like data set in the QaTa-COV19 layout, so the whole pipeline runs with nothing downloaded.

Each image is a grey 224 px "radiograph": a body outline, two dark lung fields, a heart shadow, a spine, curved
ribs, smooth and fine noise. Each lung is cut into three zones (upper, middle, lower) by height, six zones in all.
Lesion-like blobs (hazy, brighter opacities) lie inside 1 to 3 zones; the mask is exactly those blobs and the
report names exactly those zones, in the QaTa style:

    "Unilateral pulmonary infection, one infected area, middle left lung."
    "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
    "Bilateral pulmonary infection, three infected areas, upper lower left lung and middle right lung."

About 80% of the images also carry *distractor* blobs, drawn the same way in 1 or 2 zones the report does not name
and left out of the mask, so that a model has to read the report to segment well: segmenting every blob (the
"every blob" oracle, :func:`utils.inference.language.every_blob_logits`) scores clearly lower than reading.

Left and right follow the radiological convention: the patient's left lung is on the image's right.

Reports of one or two zones fit the authors' 18 tokens; those of three zones lose only their final full stop.
Everything is drawn with vectorised numpy/OpenCV and seeded per image from ``(seed, split, index)``, so a set is
identical for a seed, and a split's images do not depend on the other splits' sizes. About 300 images at 224 px
are written in a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Tuple

import cv2
import numpy as np
import pandas as pd

from utils.data.records import DatasetError

logger = logging.getLogger(__name__)

LEVELS = ("upper", "middle", "lower")
SIDES = ("left", "right")  # the patient's sides
Zone = Tuple[str, str]  # (level, side), e.g. ("upper", "left")
ZONES: Tuple[Zone, ...] = tuple((level, side) for side in SIDES for level in LEVELS)
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
SPLIT_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
TRAIN_VAL_TABLE = "Train_Val_text.xlsx"
TEST_TABLE = "Test_text.xlsx"

# Geometry as fractions of the image side. Lung centres (x, y) and half-axes, by the patient's side.
_LUNG_CENTRE = {"right": (0.31, 0.48), "left": (0.69, 0.48)}
_LUNG_AXES = (0.13, 0.30)
_HEART = ((0.56, 0.70), (0.11, 0.09))
_BODY = ((0.50, 0.56), (0.46, 0.52))
_N_ZONES_P = (0.40, 0.45, 0.15)  # probability of 1, 2, 3 infected zones
_DISTRACTOR_P = 0.8
DEMO_VERSION = 2  # 1: 40% of images with distractors (before 2026-11-28); 2: 80%
INFO_FILE = "demo.json"  # the set's version, seed, size and split counts, at the set's root


@dataclass
class DemoCase:
    """One rendered image with its ground truth.

    Attributes:
        image: ``[S, S]`` uint8 grey radiograph.
        mask: ``[S, S]`` uint8 in {0, 255}: the lesions the report names.
        blobs: ``[S, S]`` bool: every blob drawn, named or not (what a model that does not read would segment).
        zones: the zones named by the report (and present in the mask).
        distractors: zones holding blobs that are in the image only.
        report: the QaTa-style sentence.
    """

    image: np.ndarray
    mask: np.ndarray
    blobs: np.ndarray
    zones: FrozenSet[Zone]
    distractors: FrozenSet[Zone]
    report: str


def demo_report(zones) -> str:
    """The QaTa-style report naming ``zones`` (1 to 6 of :data:`ZONES`), left lung first, upper to lower.

    >>> demo_report({("upper", "left"), ("lower", "right")})
    'Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.'
    """
    zones = set(zones)
    if not zones or not zones <= set(ZONES):
        raise ValueError(f"zones must be a non-empty subset of {ZONES}, got {sorted(zones)}")
    sides = [side for side in SIDES if any(z[1] == side for z in zones)]
    parts = [" ".join(level for level in LEVELS if (level, side) in zones) + f" {side} lung" for side in sides]
    count = COUNT_WORDS.get(len(zones), str(len(zones)))
    area = "area" if len(zones) == 1 else "areas"
    extent = "Bilateral" if len(sides) == 2 else "Unilateral"
    return f"{extent} pulmonary infection, {count} infected {area}, {' and '.join(parts)}."


_ZONE_PHRASE = re.compile(r"((?:(?:upper|middle|lower)\s+)+)(left|right)\s+lung")


def parse_demo_report(report: str) -> FrozenSet[Zone]:
    """The zones a demo report names (the inverse of :func:`demo_report`)."""
    return frozenset((level, side) for levels, side in _ZONE_PHRASE.findall(report) for level in levels.split())


def zone_boxes(img_size: int) -> Dict[Zone, Tuple[int, int, int, int]]:
    """Each zone's pixel box ``(y0, y1, x0, x1)`` (half-open, disjoint) for a demo image of side ``img_size``."""
    boxes = {}
    for side in SIDES:
        cx, cy = _LUNG_CENTRE[side]
        ax, ay = _LUNG_AXES
        x0, x1 = round((cx - ax) * img_size), round((cx + ax) * img_size) + 1
        edges = np.round(np.linspace(cy - ay, cy + ay, len(LEVELS) + 1) * img_size).astype(int)
        edges[-1] += 1
        for i, level in enumerate(LEVELS):
            boxes[(level, side)] = (int(edges[i]), int(edges[i + 1]), x0, x1)
    return boxes


def zones_in_mask(mask: np.ndarray) -> FrozenSet[Zone]:
    """The zones in which ``mask`` (``[S, S]``, non-zero = lesion) has foreground."""
    return frozenset(z for z, (y0, y1, x0, x1) in zone_boxes(mask.shape[0]).items() if mask[y0:y1, x0:x1].any())


class _Canvas:
    """Coordinate grids and anatomy masks for one image size, shared by all images of that size."""

    def __init__(self, size: int):
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.yy, self.xx = yy, xx
        self.body = self._ellipse(*_BODY)
        self.heart = self._ellipse(*_HEART)
        self.spine = (np.abs(xx - 0.5) < 0.045) & self.body
        self.lung = {side: self._ellipse(_LUNG_CENTRE[side], _LUNG_AXES) & ~self.heart for side in SIDES}
        self.field = self.lung["left"] | self.lung["right"]
        self.zone_field = {}
        for (level, side), (y0, y1, x0, x1) in zone_boxes(size).items():
            box = np.zeros((size, size), bool)
            box[y0:y1, x0:x1] = True
            self.zone_field[(level, side)] = box & self.lung[side]
        # Blob centres keep a margin from the zone's edges, so that the clip to the zone rarely shows.
        margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(0.08 * size)) | 1,) * 2)
        self.zone_core = {}
        for zone, region in self.zone_field.items():
            core = cv2.erode(region.astype(np.uint8), margin).astype(bool)
            self.zone_core[zone] = core if core.any() else region
        # Ribs curve down away from the spine; `rib_phase` is the rib coordinate before a random shift.
        self.rib_phase = (yy - 0.14 - 0.10 * ((xx - 0.5) / 0.35) ** 2) / 0.085

    def _ellipse(self, centre, axes) -> np.ndarray:
        return ((self.xx - centre[0]) / axes[0]) ** 2 + ((self.yy - centre[1]) / axes[1]) ** 2 <= 1.0


def _blob(canvas: _Canvas, zone: Zone, rng: np.random.Generator) -> np.ndarray:
    """A lesion-like blob: 2-3 overlapping random ellipses around a point of ``zone``, kept inside the zone."""
    size, allowed = canvas.size, canvas.zone_field[zone]
    ys, xs = np.nonzero(canvas.zone_core[zone])
    pick = rng.integers(len(ys))
    blob = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(2, 4))):
        centre = (int(xs[pick] + rng.normal(0, 0.02 * size)), int(ys[pick] + rng.normal(0, 0.02 * size)))
        axes = tuple(int(max(2, rng.uniform(0.025, 0.06) * size)) for _ in range(2))
        cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    blob = blob.astype(bool) & allowed
    if not blob.any():  # the ellipses can miss a thin zone edge; the picked point is always inside
        blob[ys[pick], xs[pick]] = True
    return blob


def render_demo_case(rng: np.random.Generator, img_size: int = 224) -> DemoCase:
    """Draw one synthetic radiograph, its lesion mask and its report.

    Args:
        rng: the random source (one per image for reproducible sets).
        img_size: the side ``S`` of the square image.

    Returns:
        A :class:`DemoCase`.
    """
    canvas = _canvas(img_size)
    s = img_size
    image = np.full((s, s), rng.uniform(8, 25), np.float32)
    image[canvas.body] = rng.uniform(105, 135) + 25 * canvas.yy[canvas.body]
    image[canvas.spine] += 45
    image[canvas.field] = rng.uniform(40, 60) + 20 * canvas.yy[canvas.field]
    image[canvas.heart] = rng.uniform(140, 165)
    rib = canvas.rib_phase + rng.uniform(-0.3, 0.3)
    ribs = (rib >= 0) & (rib < 8) & ((rib % 1.0) < 0.32) & canvas.body
    image[ribs] += rng.uniform(12, 22)
    smooth = cv2.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    image += 8 * smooth

    n_zones = int(rng.choice(len(_N_ZONES_P), p=_N_ZONES_P)) + 1
    order = rng.permutation(len(ZONES))
    zones = [ZONES[i] for i in order[:n_zones]]
    distractors = []
    if rng.random() < _DISTRACTOR_P:
        distractors = [ZONES[i] for i in order[n_zones:n_zones + int(rng.integers(1, 3))]]
    mask = np.zeros((s, s), bool)
    blobs = np.zeros((s, s), bool)
    opacity = np.zeros((s, s), np.float32)
    for zone in zones + distractors:
        blob = _blob(canvas, zone, rng)
        blobs |= blob
        if zone in zones:
            mask |= blob
        # A hazy, slightly textured opacity around the blob (ground-glass-like).
        haze = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), sigmaX=0.012 * s)
        opacity += rng.uniform(50, 85) * haze * (0.8 + 0.4 * rng.random((s, s), dtype=np.float32))
    image += opacity
    image += rng.normal(0, rng.uniform(3, 7), (s, s)).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.6)
    return DemoCase(image=np.clip(image, 0, 255).astype(np.uint8), mask=mask.astype(np.uint8) * 255, blobs=blobs,
                    zones=frozenset(zones), distractors=frozenset(distractors), report=demo_report(zones))


_CANVASES: Dict[int, _Canvas] = {}


def _canvas(size: int) -> _Canvas:
    if size not in _CANVASES:
        _CANVASES[size] = _Canvas(size)
    return _CANVASES[size]


def _write_table(path: Path, rows: List[Tuple[str, str]]) -> None:
    pd.DataFrame(rows, columns=["Image", "Description"]).to_excel(path, index=False, engine="openpyxl")


def make_demo_dataset(root, n_train: int = 200, n_val: int = 50, n_test: int = 50, img_size: int = 224,
                      seed: int = 0) -> Path:
    """Write the demo set at ``root`` in the QaTa-COV19 layout (``pairing="qata"``).

    ``root/{Train_Folder,Val_Folder,Test_Folder}/{img,labelcol}`` hold ``<split>_<i>.png`` and
    ``mask_<split>_<i>.png``; ``Train_Folder/Train_Val_text.xlsx`` has the train and val reports and
    ``Test_Folder/Test_text.xlsx`` the test reports. The set is written to a temporary folder beside ``root``
    and renamed into place, so an interrupted run leaves no half-written set.

    Args:
        root: the data set folder to create; it must not exist.
        n_train, n_val, n_test: images per split (each >= 1).
        img_size: side of the square images, >= 32.
        seed: the set's seed; image i of a split is drawn from ``default_rng([seed, split number, i])``.

    Returns:
        ``root``.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; remove it to write the demo set there")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if min(counts.values()) < 1 or img_size < 32:
        raise ValueError(f"need at least one image per split and img_size >= 32, got {counts}, {img_size}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tables: Dict[str, List[Tuple[str, str]]] = {"train_val": [], "test": []}
    try:
        for split_no, (split, count) in enumerate(counts.items()):
            folder = tmp / SPLIT_FOLDERS[split]
            (folder / "img").mkdir(parents=True)
            (folder / "labelcol").mkdir()
            for i in range(count):
                case = render_demo_case(np.random.default_rng([seed, split_no, i]), img_size)
                name = f"{split}_{i:04d}.png"
                cv2.imwrite(str(folder / "img" / name), case.image)
                cv2.imwrite(str(folder / "labelcol" / f"mask_{name}"), case.mask)
                tables["test" if split == "test" else "train_val"].append((f"mask_{name}", case.report))
        _write_table(tmp / SPLIT_FOLDERS["train"] / TRAIN_VAL_TABLE, tables["train_val"])
        _write_table(tmp / SPLIT_FOLDERS["test"] / TEST_TABLE, tables["test"])
        info = {"version": DEMO_VERSION, "seed": seed, "img_size": img_size, "counts": counts}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / INFO_FILE).is_file():
                raise
            # Another process wrote the same set at the same time (two runs started together): keep its copy.
            logger.info("the demo data set at %s was written by another process meanwhile; using it", root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("wrote the demo data set (%d/%d/%d images, %d px, seed %d) to %s", n_train, n_val, n_test,
                img_size, seed, root.resolve())
    return root


def ensure_demo_dataset(cfg) -> Path:
    """Create the demo set where ``cfg``'s split folders point, unless it is already there.

    Args:
        cfg: a config whose ``train_dataset``, ``val_dataset`` and ``test_dataset`` are ``<root>/Train_Folder``,
            ``<root>/Val_Folder`` and ``<root>/Test_Folder`` (as in ``Config_Demo.py``).

    Returns:
        ``<root>``.

    Raises:
        DatasetError: the paths do not have that shape, or ``<root>`` exists without all three split folders
            (it is not overwritten: delete it to regenerate).
    """
    folders = {split: Path(getattr(cfg, f"{split}_dataset")) for split in SPLIT_FOLDERS}
    root = folders["train"].parent
    for split, folder in folders.items():
        if folder.parent != root or folder.name != SPLIT_FOLDERS[split]:
            raise DatasetError(f"the demo set needs {split}_dataset = {root / SPLIT_FOLDERS[split]}, got {folder}")
    if all(folder.is_dir() for folder in folders.values()):
        read_demo_info(root)  # an older demo set is an error that says how to renew it
        return root
    if root.exists():
        raise DatasetError(f"{root} exists but lacks some of {list(SPLIT_FOLDERS.values())}; delete {root} to have the "
                           "demo set written again")
    return make_demo_dataset(root)


def read_demo_info(root) -> dict:
    """The ``demo.json`` of the demo set at ``root``: version, seed, image size and split counts.

    Raises:
        DatasetError: no such file (not a demo set, or one written before version 2), or another version; the
            message says to delete the folder so that the current set is written.
    """
    path = Path(root) / INFO_FILE
    renew = f"delete {root} and the current demo set (version {DEMO_VERSION}) is written on the next run"
    if not path.is_file():
        raise DatasetError(f"{root} has no {INFO_FILE}: it is not a demo set, or one written by an older version "
                           f"(40% of images with distractors); {renew}")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is unreadable ({error}); {renew}") from None
    if not isinstance(info, dict) or info.get("version") != DEMO_VERSION:
        raise DatasetError(f"{path} says version {info.get('version') if isinstance(info, dict) else '?'}, this "
                           f"code writes version {DEMO_VERSION}; {renew}")
    return info


def demo_cases(root, split: str) -> Dict[str, DemoCase]:
    """The cases of one split of the demo set at ``root``, drawn again from its seed: image file name -> case.

    The image and mask on disk are the case's; the case also knows its zones, distractors and blobs.
    """
    info = read_demo_info(root)
    split_no = list(SPLIT_FOLDERS).index(split)
    return {f"{split}_{i:04d}.png": render_demo_case(np.random.default_rng([info["seed"], split_no, i]),
                                                          info["img_size"])
            for i in range(info["counts"][split])}
