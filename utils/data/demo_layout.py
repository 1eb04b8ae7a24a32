"""Where a demo image's lungs lie, and so its six zones: the geometry of :mod:`utils.data.demo`'s layouts.

Each lung is an ellipse (:class:`Lung`) cut into three zones (upper, middle, lower) across its long axis, six zones in
all (:data:`ZONES`). Left and right are the patient's and follow the radiological convention: the patient's left lung
is on the image's right.

- The fixed layout (:data:`FIXED_LAYOUT`): the lungs lie untilted at the same place in every image, so the six zones
  are fixed boxes, thirds of each lung's bounding box in whole pixels (:func:`zone_boxes`).
- A varied layout (:func:`varied_layout`): the chest is shifted and scaled, and each lung moved a little more and
  tilted, so a zone is a third of that image's (tilted) lung ellipse, cut across its long axis.

A :class:`DemoLayout` gives its zones' pixels (:meth:`DemoLayout.zone_regions`) and the zone holding a point
(:meth:`DemoLayout.zone_at`); :func:`zones_in_mask` gives the zones a mask reaches into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

import numpy as np

LEVELS = ("upper", "middle", "lower")
SIDES = ("left", "right")  # the patient's sides
Zone = Tuple[str, str]  # (level, side), e.g. ("upper", "left")
ZONES: Tuple[Zone, ...] = tuple((level, side) for side in SIDES for level in LEVELS)
LAYOUTS = ("fixed", "varied")  # the layouts a demo set is drawn in (utils.data.demo.render_demo_case)

# Geometry as fractions of the image side. Lung centres (x, y) and half-axes, by the patient's side (the fixed
# layout's; a varied layout moves them).
LUNG_CENTRE = {"right": (0.31, 0.48), "left": (0.69, 0.48)}
LUNG_AXES = (0.13, 0.30)
# The varied layout: the chest's shift (each way) and scale about the image's centre, then each lung's own shift,
# the spread of its half-axes and its tilt in degrees. The lungs stay inside the image and apart (see the tests).
_CHEST_SHIFT, _CHEST_SCALE = 0.06, (0.85, 1.1)
_LUNG_SHIFT, _LUNG_STRETCH, _LUNG_TILT = 0.02, 0.08, 12.0


@dataclass(frozen=True)
class Lung:
    """One lung field: an ellipse, in fractions of the image side.

    Attributes:
        x, y: its centre (x from the image's left edge, y from its top; pixel ``(i, j)`` is at ``(j / S, i / S)``).
        half_width, half_height: its half-axes across and along the lung.
        tilt: its long axis turned from the vertical, in degrees; positive moves its base towards the image's right.
    """

    x: float
    y: float
    half_width: float
    half_height: float
    tilt: float = 0.0

    def frame(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """Points ``(x, y)`` (fractions, arrays or floats) in the lung's own frame, in half-axes: ``u`` across (to
        the image's right when untilted) and ``v`` along, from the apex (-1) to the base (+1). The lung is
        ``u**2 + v**2 <= 1``."""
        t = np.deg2rad(self.tilt)
        dx, dy = np.subtract(x, self.x), np.subtract(y, self.y)
        return ((dx * np.cos(t) - dy * np.sin(t)) / self.half_width,
                (dx * np.sin(t) + dy * np.cos(t)) / self.half_height)

    def contains(self, x, y) -> np.ndarray:
        u, v = self.frame(x, y)
        return u ** 2 + v ** 2 <= 1.0


def _level_index(v):
    """The zone level (0 upper, 1 middle, 2 lower) of a lung-frame ``v`` in [-1, 1]: thirds of the long axis."""
    return np.clip(np.floor((np.asarray(v) + 1.0) * len(LEVELS) / 2), 0, len(LEVELS) - 1).astype(int)


@dataclass(frozen=True)
class DemoLayout:
    """Where one image's lungs lie, and so where its six zones are: each lung cut in three across its long axis,
    upper (apex) to lower (base).

    With ``boxes`` (the fixed layout; untilted lungs only), a zone is that third of its lung's bounding box in
    whole pixels, as :func:`zone_boxes` has always given it; otherwise it is that third of the lung's ellipse.

    Attributes:
        right, left: the patient's right lung (on the image's left) and left lung.
        boxes: zones are bounding-box thirds rather than ellipse thirds.
    """

    right: Lung
    left: Lung
    boxes: bool = False

    def __post_init__(self):
        if self.boxes and (self.right.tilt or self.left.tilt):
            raise ValueError(f"box zones need untilted lungs, got tilts {self.right.tilt}, {self.left.tilt}")

    def lung(self, side: str) -> Lung:
        return {"right": self.right, "left": self.left}[side]

    def zone_boxes(self, img_size: int) -> Dict[Zone, Tuple[int, int, int, int]]:
        """Each zone's pixel box ``(y0, y1, x0, x1)`` (half-open, disjoint), for a layout with ``boxes``."""
        if not self.boxes:
            raise ValueError("only the fixed layout's zones are boxes; use zone_regions")
        boxes = {}
        for side in SIDES:
            lung = self.lung(side)
            cx, cy, ax, ay = lung.x, lung.y, lung.half_width, lung.half_height
            x0, x1 = round((cx - ax) * img_size), round((cx + ax) * img_size) + 1
            edges = np.round(np.linspace(cy - ay, cy + ay, len(LEVELS) + 1) * img_size).astype(int)
            edges[-1] += 1
            for i, level in enumerate(LEVELS):
                boxes[(level, side)] = (int(edges[i]), int(edges[i + 1]), x0, x1)
        return boxes

    def zone_regions(self, img_size: int) -> Dict[Zone, np.ndarray]:
        """Each zone's pixels, ``[S, S]`` bool (disjoint), at the image side ``img_size``."""
        regions = {}
        if self.boxes:
            for zone, (y0, y1, x0, x1) in self.zone_boxes(img_size).items():
                regions[zone] = np.zeros((img_size, img_size), bool)
                regions[zone][y0:y1, x0:x1] = True
            return regions
        yy, xx = np.mgrid[0:img_size, 0:img_size].astype(np.float64) / img_size
        for side in SIDES:
            u, v = self.lung(side).frame(xx, yy)
            inside, level = u ** 2 + v ** 2 <= 1.0, _level_index(v)
            for i, name in enumerate(LEVELS):
                regions[(name, side)] = inside & (level == i)
        return regions

    def zone_at(self, x: float, y: float, img_size: int) -> Optional[Zone]:
        """The zone holding the point ``(x, y)`` in pixels (column, row; a fraction of a pixel allowed) of an image
        of side ``img_size``, or None outside every zone. The same test as :meth:`zone_regions` at whole pixels."""
        if self.boxes:
            return next((zone for zone, (y0, y1, x0, x1) in self.zone_boxes(img_size).items()
                         if y0 <= y <= y1 - 1 and x0 <= x <= x1 - 1), None)
        for side in SIDES:
            u, v = self.lung(side).frame(x / img_size, y / img_size)
            if u ** 2 + v ** 2 <= 1.0:
                return (LEVELS[int(_level_index(v))], side)
        return None


FIXED_LAYOUT = DemoLayout(right=Lung(*LUNG_CENTRE["right"], *LUNG_AXES),
                          left=Lung(*LUNG_CENTRE["left"], *LUNG_AXES), boxes=True)


def zone_boxes(img_size: int) -> Dict[Zone, Tuple[int, int, int, int]]:
    """Each zone's pixel box ``(y0, y1, x0, x1)`` (half-open, disjoint) for a fixed-layout demo image of side
    ``img_size``."""
    return FIXED_LAYOUT.zone_boxes(img_size)


def zones_in_mask(mask: np.ndarray, layout: DemoLayout = FIXED_LAYOUT) -> FrozenSet[Zone]:
    """The zones of ``layout`` (the image's :attr:`utils.data.demo.DemoCase.layout`) in which ``mask``
    (``[S, S]``, non-zero = lesion) has foreground. In the fixed layout these are the zones the report names; in the
    varied one a lesion that crosses a zone line adds the zone it reaches into."""
    return frozenset(z for z, region in layout.zone_regions(mask.shape[0]).items() if mask[region].any())


def varied_layout(rng: np.random.Generator) -> Tuple[DemoLayout, Tuple[float, float], float]:
    """Draw a varied layout: ``(layout, chest shift (x, y), chest scale)``."""
    shift = tuple(float(d) for d in rng.uniform(-_CHEST_SHIFT, _CHEST_SHIFT, 2))
    scale = float(rng.uniform(*_CHEST_SCALE))
    lungs = {}
    for side in SIDES:
        (cx, cy), (ax, ay) = LUNG_CENTRE[side], LUNG_AXES
        dx, dy = rng.uniform(-_LUNG_SHIFT, _LUNG_SHIFT, 2)
        sx, sy = rng.uniform(1 - _LUNG_STRETCH, 1 + _LUNG_STRETCH, 2)
        lungs[side] = Lung(x=float(0.5 + scale * (cx - 0.5) + shift[0] + dx),
                           y=float(0.5 + scale * (cy - 0.5) + shift[1] + dy),
                           half_width=float(scale * ax * sx), half_height=float(scale * ay * sy),
                           tilt=float(rng.uniform(-_LUNG_TILT, _LUNG_TILT)))
    return DemoLayout(right=lungs["right"], left=lungs["left"]), shift, scale

