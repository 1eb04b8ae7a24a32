"""The training augmentation: the authors' row blur quirk versus a 2-D blur, photometric distortion, joint geometry."""

import numpy as np
import pytest

from utils.transforms import (
    gaussian_blur_2d,
    gaussian_blur_rows,
    photometric_distortion,
    random_geometry,
    train_augment,
)


def stripes(horizontal: bool, size: int = 32) -> np.ndarray:
    """Grey stripes 4 px wide: constant along rows (horizontal) or along columns."""
    ramp = ((np.arange(size) // 4) % 2 * 200 + 20).astype(np.uint8)
    plane = np.repeat(ramp[:, None], size, 1) if horizontal else np.repeat(ramp[None, :], size, 0)
    return np.repeat(plane[:, :, None], 3, 2)


def test_row_blur_blurs_within_rows_only():
    image = stripes(False)
    blurred = gaussian_blur_rows(image, np.random.default_rng(0), prob=1.0, row_prob=1.0)
    assert not np.array_equal(blurred, image)
    # Changing one row changes that row of the output only: rows are never mixed with each other.
    edited = image.copy()
    edited[10] = 255 - edited[10]
    blurred_edited = gaussian_blur_rows(edited, np.random.default_rng(0), prob=1.0, row_prob=1.0)
    assert np.array_equal(np.delete(blurred_edited, 10, 0), np.delete(blurred, 10, 0))
    assert not np.array_equal(blurred_edited[10], blurred[10])
    # With row_prob 0.5 about half the rows change.
    changed = (gaussian_blur_rows(image, np.random.default_rng(1), prob=1.0) != image).any(axis=(1, 2))
    assert 0.2 < changed.mean() < 0.8


def test_row_blur_mixes_colours_and_2d_blur_does_not():
    flat = np.empty((16, 16, 3), np.uint8)
    flat[:] = (200, 0, 30)
    rng = np.random.default_rng(1)
    assert not np.array_equal(gaussian_blur_rows(flat, rng, prob=1.0, row_prob=1.0), flat)  # the quirk
    assert np.array_equal(gaussian_blur_2d(flat, rng, prob=1.0), flat)
    # The 2-D blur does blur across rows, which the row blur never does.
    assert not np.array_equal(gaussian_blur_2d(stripes(True), rng, prob=1.0), stripes(True))
    rows = gaussian_blur_rows(stripes(True), rng, prob=1.0, row_prob=1.0)
    assert (np.abs(rows.astype(int) - stripes(True)) <= 1).all()  # at most scipy's uint8 truncation


def test_blur_probability_zero_is_identity():
    rng = np.random.default_rng(2)
    image = stripes(False)
    assert np.array_equal(gaussian_blur_rows(image, rng, prob=0.0), image)
    assert np.array_equal(gaussian_blur_2d(image, rng, prob=0.0), image)


def test_photometric_distortion_is_per_pixel_and_stays_uint8():
    grey = np.full((8, 8, 3), 128, np.uint8)
    means = []
    for seed in range(60):
        out = photometric_distortion(grey, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == grey.shape
        assert (out == out[0, 0]).all()  # the same change everywhere on a flat image
        means.append(out.mean())
    # Brightness (+-32) and contrast (x0.5..1.5) move a mid-grey image anywhere in about [32, 240].
    assert min(means) < 110 and max(means) > 150 and 128 in np.round(means)


def test_geometry_moves_image_and_mask_together():
    rng = np.random.default_rng(3)
    mask = np.zeros((24, 24), np.uint8)
    mask[3:9, 4:15] = 1
    image = np.repeat((mask * 255)[:, :, None], 3, 2)
    unchanged = 0
    for _ in range(400):
        out_image, out_mask = random_geometry(image, mask, rng)
        assert set(np.unique(out_mask)) <= {0, 1}
        assert np.array_equal(out_image[:, :, 0], out_mask * 255)
        unchanged += np.array_equal(out_mask, mask)
    # rot90+flip never gives back this asymmetric mask; only "no change" (p 0.25) and a 0-degree rotation do.
    assert 0.18 < unchanged / 400 < 0.34


def test_train_augment_is_seeded_and_checks_blur_mode():
    image, mask = stripes(False), (stripes(True)[:, :, 0] > 100).astype(np.uint8)
    for mode in ("rows", "2d"):
        a = train_augment(image, mask, np.random.default_rng(5), mode)
        b = train_augment(image, mask, np.random.default_rng(5), mode)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="blur_mode"):
        train_augment(image, mask, np.random.default_rng(5), "3d")
