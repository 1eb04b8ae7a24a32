"""Reading images and masks: every kind of file becomes BGR uint8, and a mask keeps every non-zero pixel."""

import cv2
import numpy as np
import pytest

from utils.data.images import read_image, read_mask


def test_images_of_any_kind_read_as_bgr_uint8(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    bgra = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (10, 12), dtype=np.uint16)
    for name, array in (("grey.png", grey), ("bgra.png", bgra), ("deep.png", deep), ("deep.tif", deep)):
        cv2.imwrite(str(tmp_path / name), array)
    PIL = pytest.importorskip("PIL.Image")
    palette = PIL.new("P", (12, 10))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.putpixel((3, 4), 1)
    palette.save(tmp_path / "palette.png")
    for name in ("grey.png", "bgra.png", "deep.png", "deep.tif", "palette.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (10, 12, 3) and image.dtype == np.uint8
        assert np.array_equal(image, cv2.imread(str(tmp_path / name))), name  # what the authors' imread gives
    assert tuple(read_image(tmp_path / "palette.png")[4, 3]) == (0, 0, 255)  # red, in BGR


def test_masks_keep_every_nonzero_pixel(tmp_path):
    mask = np.zeros((8, 8), np.uint16)
    mask[2:5, 2:5] = 1
    cv2.imwrite(str(tmp_path / "m16.png"), mask)
    assert not cv2.imread(str(tmp_path / "m16.png"), 0).any()  # the authors' read loses a 16-bit 0/1 mask
    assert np.array_equal(read_mask(tmp_path / "m16.png") > 0, mask > 0)
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[1:3, 1:3] = (0, 0, 1)  # so dark that a luminance conversion rounds it to 0
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    assert np.array_equal(read_mask(tmp_path / "colour.png") > 0, colour.any(axis=2))
