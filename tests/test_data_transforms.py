"""The training augmentation: the authors' row blur quirk versus a 2-D blur, photometric distortion, joint geometry."""

import numpy as np
import pytest
from scipy import ndimage

from utils.data.demo import parse_demo_report
from utils.data.demo_layout import zone_boxes
from utils.data.transforms import (
    gaussian_blur_2d,
    gaussian_blur_rows,
    mask_to_model_size,
    photometric_distortion,
    probability_to_full_size,
    random_geometry,
    to_model_size,
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


def _scipy_row_blur(image, rng, prob=0.5, row_prob=0.5):
    """The authors' loop: scipy's filter on each drawn row, in place into the uint8 image."""
    out = image.copy()
    if rng.random() >= prob:
        return out
    for row in range(out.shape[0]):
        if rng.random() < row_prob:
            out[row] = ndimage.gaussian_filter(out[row], sigma=rng.uniform(0.5, 1.0, size=2), order=0)
    return out


@pytest.mark.parametrize("width", [1, 3, 5, 112, 224])
def test_row_blur_equals_scipy_per_row(width):
    """The rows filtered together give scipy's per-row result bit for bit (every kernel radius 2..4, widths that
    reflect more than once), and leave the random stream where the loop leaves it."""
    rng = np.random.default_rng(width)
    image = rng.integers(0, 256, size=(96, width, 3), dtype=np.uint8)
    image[::3] = (rng.integers(0, 2, size=(32, width, 1)) * 255).astype(np.uint8)  # edges: large sums
    for seed in range(4):
        ours_rng, scipy_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        ours = gaussian_blur_rows(image, ours_rng, prob=1.0)
        expected = _scipy_row_blur(image, scipy_rng, prob=1.0)
        assert np.array_equal(ours, expected)
        assert ours_rng.random() == scipy_rng.random()
    assert not np.array_equal(ours, image)


def test_row_blur_refuses_a_sigma_range_that_reaches_zero():
    with pytest.raises(ValueError, match="sigma_range must be above 0"):
        gaussian_blur_rows(stripes(False), np.random.default_rng(0), sigma_range=(0.0, 1.0))


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
        for geometry in ("authors", "report", "none"):
            a = train_augment(image, mask, np.random.default_rng(5), mode, geometry, "upper left lung")
            b = train_augment(image, mask, np.random.default_rng(5), mode, geometry, "upper left lung")
            assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and a[2] == b[2]
    with pytest.raises(ValueError, match="blur_mode"):
        train_augment(image, mask, np.random.default_rng(5), "3d")
    with pytest.raises(ValueError, match="geometry"):
        train_augment(image, mask, np.random.default_rng(5), "rows", "flip")


def test_authors_geometry_is_the_authors_pipeline_and_keeps_the_report():
    image, mask = stripes(False), (stripes(True)[:, :, 0] > 100).astype(np.uint8)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        expected = random_geometry(photometric_distortion(gaussian_blur_rows(image, rng), rng), mask, rng)
        got = train_augment(image, mask, np.random.default_rng(seed), "rows", "authors", "upper left lung")
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
        assert got[2] == "upper left lung"


def test_no_geometry_keeps_where_things_are():
    image, mask = stripes(False), (stripes(True)[:, :, 0] > 100).astype(np.uint8)
    for seed in range(20):
        _, out_mask, report = train_augment(image, mask, np.random.default_rng(seed), "2d", "none", "upper left")
        assert np.array_equal(out_mask, mask) and report == "upper left"


def _centre(mask):
    ys, xs = np.nonzero(mask)
    return ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]


def _zone_of(point, size):
    y, x = int(point[0] * size), int(point[1] * size)
    return next(z for z, (y0, y1, x0, x1) in zone_boxes(size).items() if y0 <= y < y1 and x0 <= x < x1)


def test_report_geometry_moves_mask_and_report_together():
    size = 96
    y0, y1, x0, x1 = zone_boxes(size)[("upper", "left")]  # the patient's left: the image's right
    mask = np.zeros((size, size), np.uint8)
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    mask[cy - 3:cy + 3, cx - 3:cx + 3] = 1
    image = np.repeat((mask * 200)[:, :, None], 3, 2)
    report = "Unilateral pulmonary infection, one infected area, upper left lung."
    seen = set()
    for seed in range(300):
        _, out_mask, out_report = train_augment(image, mask, np.random.default_rng(seed), "2d", "report", report)
        if out_report == report:  # a small rotation or nothing: the lesion stays near where it was
            assert np.hypot(*np.subtract(_centre(out_mask), _centre(mask))) < 0.11
        else:  # a mirror: the report names the zone the lesion moved to
            zone = _zone_of(_centre(out_mask), size)
            assert parse_demo_report(out_report) == {zone}
            seen.add(zone)
    # Every mirror was drawn, and no 90-degree turn (it would move the lesion with the report unchanged).
    assert seen == {("upper", "right"), ("lower", "left"), ("lower", "right")}


def test_model_size_helpers_resize_binarise_and_come_back_clipped():
    image = np.zeros((40, 48, 3), np.uint8)
    image[:, 24:] = 200
    small = to_model_size(image, 16)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8 and small[0, 0, 0] == 0 and small[0, -1, 0] == 200
    mask = np.zeros((40, 48), np.uint8)
    mask[10:20, 12:24] = 255
    model_mask = mask_to_model_size(mask, 16)
    assert model_mask.dtype == np.uint8 and set(np.unique(model_mask)) == {0, 1}
    # > 0 after a bilinear resize: at least the rectangle's own area (10/40 x 12/48 of 16 x 16 = 16 pixels)
    assert model_mask.sum() >= 16
    probability = np.array([[0.0, 1.0], [0.25, 1.0]], np.float32)
    full = probability_to_full_size(probability, 6, 4)
    assert full.shape == (4, 6) and full.dtype == np.float32 and 0 <= full.min() and full.max() <= 1
    assert full[0, 0] == 0 and full[0, -1] == 1
