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

Two layouts (``layout`` of :func:`make_demo_dataset`, recorded in ``demo.json``; their geometry, the lungs and
zones, is :mod:`utils.data.demo_layout`):

- ``"fixed"`` (the default, the set the README's numbers were measured on): the lungs lie at the same place in
  every image, so the six zones are fixed boxes (:func:`utils.data.demo_layout.zone_boxes`), and each blob is kept
  inside its zone.
- ``"varied"``: each image's chest is shifted and scaled, and each lung moved a little more and tilted, so a
  zone is a third of that image's (tilted) lung ellipse, cut across its long axis
  (:class:`utils.data.demo_layout.DemoLayout`), and a model cannot find a zone by its pixel coordinates alone. A
  blob is kept inside its lung only, so it may cross a zone line; the zone that the report names is the one holding
  the blob's centre (the mean of its pixels).

Either way each :class:`DemoCase` carries its :class:`utils.data.demo_layout.DemoLayout` and its lesions' centres,
which :func:`utils.data.demo_layout.zones_in_mask` and :func:`utils.inference.language.interest_shares` take.

Reports of one or two zones fit the authors' 18 tokens; those of three zones lose only their final full stop.
Everything is drawn with vectorised numpy/OpenCV and seeded per image from ``(seed, split, index)``, so a set is
identical for a seed, and a split's images do not depend on the other splits' sizes. About 300 images at 224 px
are written in a few seconds.

Over 400 lines on purpose: drawing a case and writing the set share one seeding rule, and :func:`demo_cases`
draws a written set again with it, so the two stay in one module; the lung and zone geometry is
:mod:`utils.data.demo_layout`.
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

from utils.data.demo_layout import (
    FIXED_LAYOUT,
    LAYOUTS,
    LEVELS,
    LUNG_AXES,
    LUNG_CENTRE,
    SIDES,
    ZONES,
    DemoLayout,
    Zone,
    varied_layout,
    zone_boxes,
)
from utils.data.records import DatasetError

logger = logging.getLogger(__name__)

COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
SPLIT_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
TRAIN_VAL_TABLE = "Train_Val_text.xlsx"
TEST_TABLE = "Test_text.xlsx"

# The chest's anatomy as fractions of the image side: heart and body ellipses (centre, half-axes).
_HEART = ((0.56, 0.70), (0.11, 0.09))
_BODY = ((0.50, 0.56), (0.46, 0.52))
_N_ZONES_P = (0.40, 0.45, 0.15)  # probability of 1, 2, 3 infected zones
_DISTRACTOR_P = 0.8
DEMO_VERSION = 2  # the set's generation rules: 1 drew distractors in 40% of images, 2 in 80%
INFO_FILE = "demo.json"  # the set's version, seed, size, split counts and (unless fixed) layout, at the set's root
_BLOB_TRIES = 50  # draws of a varied-layout blob until its centre lies in its zone (about 5% of draws miss)

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
        layout: where this image's lungs, and so its zones, lie.
        centres: each lesion's centre (the mean of its pixels) as ``(x, y)`` in pixels, by the zone it was drawn
            for (named or distractor); that zone holds it (``layout.zone_at(x, y, S)``).
    """

    image: np.ndarray
    mask: np.ndarray
    blobs: np.ndarray
    zones: FrozenSet[Zone]
    distractors: FrozenSet[Zone]
    report: str
    layout: DemoLayout
    centres: Dict[Zone, Tuple[float, float]]


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


class _Canvas:
    """Coordinate grids and anatomy masks for one image size, shared by all images of that size."""

    def __init__(self, size: int):
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.yy, self.xx = yy, xx
        self.body = self._ellipse(*_BODY)
        self.heart = self._ellipse(*_HEART)
        self.spine = (np.abs(xx - 0.5) < 0.045) & self.body
        self.lung = {side: self._ellipse(LUNG_CENTRE[side], LUNG_AXES) & ~self.heart for side in SIDES}
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


class _VariedCanvas:
    """The anatomy of one varied-layout image: the fixed layout's chest shifted and scaled, its lungs placed by
    ``layout``. It has the attributes of :class:`_Canvas` that :func:`render_demo_case` reads, and the points that
    :func:`_crossing_blob` centres its blobs on."""

    def __init__(self, size: int, layout: DemoLayout, shift: Tuple[float, float], scale: float):
        self.size, self.layout = size, layout
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.yy = yy
        # The chest's own coordinates: where each pixel was before the chest was shifted and scaled.
        cx, cy = 0.5 + (xx - 0.5 - shift[0]) / scale, 0.5 + (yy - 0.5 - shift[1]) / scale

        def ellipse(centre, axes):
            return ((cx - centre[0]) / axes[0]) ** 2 + ((cy - centre[1]) / axes[1]) ** 2 <= 1.0

        self.body = ellipse(*_BODY)
        self.heart = ellipse(*_HEART)
        self.spine = (np.abs(cx - 0.5) < 0.045) & self.body
        grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64) / size  # as DemoLayout.zone_regions
        self.lung = {side: layout.lung(side).contains(grid_x, grid_y) & ~self.heart for side in SIDES}
        self.field = self.lung["left"] | self.lung["right"]
        self.rib_phase = (cy - 0.14 - 0.10 * ((cx - 0.5) / 0.35) ** 2) / 0.085
        # A blob's first ellipse is centred on a point of its zone kept off the lung's outline (so that the blob is
        # not mostly cut off), but not off the zone lines: the blob may cross one.
        margin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(3, int(0.08 * size)) | 1,) * 2)
        inner = {side: cv2.erode(lung.astype(np.uint8), margin).astype(bool) for side, lung in self.lung.items()}
        self.anchors = {}
        for zone, region in layout.zone_regions(size).items():
            for candidates in (region & inner[zone[1]], region & self.lung[zone[1]]):
                if candidates.any():
                    self.anchors[zone] = np.nonzero(candidates)
                    break
            else:
                raise ValueError(f"the {zone} zone of {layout} has no lung pixels at {size} px")


def _crossing_blob(canvas: _VariedCanvas, zone: Zone, rng: np.random.Generator) -> np.ndarray:
    """A lesion-like blob for the varied layout: 2-3 overlapping random ellipses, the first centred on a point of
    ``zone``, kept inside the zone's lung only. Drawn again until its centre lies in ``zone``, so that the report
    naming ``zone`` is true of it.

    Raises:
        RuntimeError: no draw of :data:`_BLOB_TRIES` had its centre in ``zone`` (not seen in practice).
    """
    size, lung = canvas.size, canvas.lung[zone[1]]
    ys, xs = canvas.anchors[zone]
    for _ in range(_BLOB_TRIES):
        pick = rng.integers(len(ys))
        blob = np.zeros((size, size), np.uint8)
        for k in range(int(rng.integers(2, 4))):
            # The first ellipse covers the picked point, so the blob is never empty after the cut to the lung.
            offset = (0.0, 0.0) if k == 0 else rng.normal(0, 0.02 * size, 2)
            centre = (int(xs[pick] + offset[0]), int(ys[pick] + offset[1]))
            axes = tuple(int(max(2, rng.uniform(0.025, 0.06) * size)) for _ in range(2))
            cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
        blob = blob.astype(bool) & lung
        if canvas.layout.zone_at(*_centre(blob), size) == zone:
            return blob
    raise RuntimeError(f"no blob of {_BLOB_TRIES} drawn for {zone} had its centre in that zone")


def _centre(blob: np.ndarray) -> Tuple[float, float]:
    """The mean ``(x, y)`` of a non-empty blob's pixels, in pixels (column, row)."""
    ys, xs = np.nonzero(blob)
    return float(xs.mean()), float(ys.mean())


def render_demo_case(rng: np.random.Generator, img_size: int = 224, layout: str = "fixed") -> DemoCase:
    """Draw one synthetic radiograph, its lesion mask and its report.

    Args:
        rng: the random source (one per image for reproducible sets).
        img_size: the side ``S`` of the square image.
        layout: "fixed" (the lungs at the same place in every image, blobs kept inside their zone boxes) or
            "varied" (each image's lungs shifted, scaled and tilted, blobs kept inside their lung); see the
            module's docstring.

    Returns:
        A :class:`DemoCase`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "fixed":
        canvas, geometry = _canvas(img_size), FIXED_LAYOUT
    else:
        geometry, shift, scale = varied_layout(rng)
        canvas = _VariedCanvas(img_size, geometry, shift, scale)
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
    centres = {}
    for zone in zones + distractors:
        blob = _blob(canvas, zone, rng) if layout == "fixed" else _crossing_blob(canvas, zone, rng)
        centres[zone] = _centre(blob)
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
                    zones=frozenset(zones), distractors=frozenset(distractors), report=demo_report(zones),
                    layout=geometry, centres=centres)


_CANVASES: Dict[int, _Canvas] = {}


def _canvas(size: int) -> _Canvas:
    if size not in _CANVASES:
        _CANVASES[size] = _Canvas(size)
    return _CANVASES[size]


def _write_table(path: Path, rows: List[Tuple[str, str]]) -> None:
    pd.DataFrame(rows, columns=["Image", "Description"]).to_excel(path, index=False, engine="openpyxl")


def make_demo_dataset(root, n_train: int = 200, n_val: int = 50, n_test: int = 50, img_size: int = 224,
                      seed: int = 0, layout: str = "fixed") -> Path:
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
        layout: "fixed" or "varied" (:func:`render_demo_case`). A varied set is recorded in ``demo.json`` as
            ``"layout": "varied"``; a fixed set's ``demo.json`` has no ``layout``, as before layouts existed, so
            that a fixed set is the same, byte for byte, as one written before.

    Returns:
        ``root``.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} already exists; remove it to write the demo set there")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if min(counts.values()) < 1 or img_size < 32:
        raise ValueError(f"need at least one image per split and img_size >= 32, got {counts}, {img_size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
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
                case = render_demo_case(np.random.default_rng([seed, split_no, i]), img_size, layout)
                name = f"{split}_{i:04d}.png"
                cv2.imwrite(str(folder / "img" / name), case.image)
                cv2.imwrite(str(folder / "labelcol" / f"mask_{name}"), case.mask)
                tables["test" if split == "test" else "train_val"].append((f"mask_{name}", case.report))
        _write_table(tmp / SPLIT_FOLDERS["train"] / TRAIN_VAL_TABLE, tables["train_val"])
        _write_table(tmp / SPLIT_FOLDERS["test"] / TEST_TABLE, tables["test"])
        info = {"version": DEMO_VERSION, "seed": seed, "img_size": img_size, "counts": counts}
        if layout != "fixed":  # a fixed set's demo.json stays as it was before layouts existed
            info["layout"] = layout
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
    logger.info("wrote the demo data set (%d/%d/%d images, %d px, seed %d, %s layout) to %s", n_train, n_val, n_test,
                img_size, seed, layout, root.resolve())
    return root


def ensure_demo_dataset(cfg) -> Path:
    """Create the demo set where ``cfg``'s split folders point, unless it is already there.

    A missing set is written in ``cfg.demo_layout``; a set that is present must have been written in that layout
    (its ``demo.json`` says which), or it is an error: a run never trains on the other layout unawares.

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
        info = read_demo_info(root)  # an older demo set is an error that says how to renew it
        if info.get("layout", "fixed") != cfg.demo_layout:
            raise DatasetError(f"{root} holds a demo set of layout {info.get('layout', 'fixed')!r}, the config asks "
                               f"for {cfg.demo_layout!r}; delete {root} or point the config at another folder")
        return root
    if root.exists():
        if (root / INFO_FILE).is_file():  # a demo set this program wrote, with a split missing
            raise DatasetError(f"{root} exists but lacks some of {list(SPLIT_FOLDERS.values())}; delete {root} to have "
                               "the demo set written again")
        raise DatasetError(f"{root} exists and is not a demo set written by this program (no {INFO_FILE}); to train "
                           "on your own data there, --set demo_data=False, or point the config's split folders "
                           "elsewhere")
    return make_demo_dataset(root, layout=cfg.demo_layout)


def read_demo_info(root) -> dict:
    """The ``demo.json`` of the demo set at ``root``: version, seed, image size, split counts and, for a set that
    is not in the fixed layout, ``layout`` (see :func:`demo_layout`).

    Raises:
        DatasetError: no such file (not a demo set, or one written before version 2), another version, or a
            layout this code does not draw; the message says to delete the folder so that the current set is
            written.
    """
    path = Path(root) / INFO_FILE
    renew = f"delete {root} and the current demo set (version {DEMO_VERSION}) is written on the next run"
    if not path.is_file():
        # Possibly the user's own data: never advise deleting a folder this program may not have written.
        raise DatasetError(f"{root} has no {INFO_FILE}, so it is not a demo set written by this program (or one from "
                           f"before version 2). To train on your own data there, --set demo_data=False (or use a "
                           f"config of your own); if it is an old demo set, move it away and the current one is "
                           "written on the next run")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is unreadable ({error}); {renew}") from None
    if not isinstance(info, dict) or info.get("version") != DEMO_VERSION:
        raise DatasetError(f"{path} says version {info.get('version') if isinstance(info, dict) else '?'}, this "
                           f"code writes version {DEMO_VERSION}; {renew}")
    if demo_layout(info) not in LAYOUTS:
        raise DatasetError(f"{path} says layout {demo_layout(info)!r}, this code draws {LAYOUTS}; {renew}")
    return info


def demo_layout(info: dict) -> str:
    """The layout of the set whose ``demo.json`` is ``info``: its ``layout``, or "fixed" where it has none (the
    fixed layout is written without one, as every set was before layouts existed)."""
    return info.get("layout", "fixed")


def demo_cases(root, split: str) -> Dict[str, DemoCase]:
    """The cases of one split of the demo set at ``root``, drawn again from its seed: image file name -> case.

    The image and mask on disk are the case's; the case also knows its zones, distractors, blobs, layout and
    lesion centres.
    """
    info = read_demo_info(root)
    split_no = list(SPLIT_FOLDERS).index(split)
    return {f"{split}_{i:04d}.png": render_demo_case(np.random.default_rng([info["seed"], split_no, i]),
                                                          info["img_size"], demo_layout(info))
            for i in range(info["counts"][split])}
