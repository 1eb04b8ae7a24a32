"""The synthetic demo set: reports that match their masks, distractors, determinism, creation when missing."""

import hashlib
import itertools
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import read_rows

from utils.config import Config
from utils.data.check import check_dataset
from utils.data.demo import (
    demo_cases,
    demo_report,
    ensure_demo_dataset,
    make_demo_dataset,
    parse_demo_report,
    read_demo_info,
    render_demo_case,
)
from utils.data.demo_layout import FIXED_LAYOUT, LEVELS, ZONES, DemoLayout, Lung, zone_boxes, zones_in_mask
from utils.data.records import DatasetError
from utils.data.tokenizer import ReportTokenizer


def demo_config(root, **changes):
    return Config().replace(train_dataset=str(root / "Train_Folder"), val_dataset=str(root / "Val_Folder"),
                            test_dataset=str(root / "Test_Folder"), img_size=64, **changes)


def test_reports_follow_the_qata_style():
    assert demo_report({("middle", "left")}) == "Unilateral pulmonary infection, one infected area, middle left lung."
    assert demo_report({("upper", "left"), ("lower", "right")}) == (
        "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.")
    tokenizer = ReportTokenizer(18)
    for n in (1, 2, 3):
        for zones in itertools.combinations(ZONES, n):
            report = demo_report(zones)
            assert parse_demo_report(report) == frozenset(zones)
            if n <= 2:  # one or two zones always fit the authors' 18 tokens
                assert not tokenizer(report).truncated[0], report


def test_written_set_passes_the_check_and_reports_match_masks(tmp_path):
    root = make_demo_dataset(tmp_path / "Demo", n_train=10, n_val=3, n_test=3, img_size=64, seed=1)
    report = check_dataset(demo_config(root))
    assert report.ok and report.problems == []
    assert [report.splits[s].pairs for s in ("train", "val", "test")] == [10, 3, 3]
    for folder, table in (("Train_Folder", "Train_Val_text.xlsx"), ("Test_Folder", "Test_text.xlsx")):
        for mask_name, text in read_rows(root / folder / table):
            split = mask_name.split("_")[1]
            split_folder = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}[split]
            mask = cv2.imread(str(root / split_folder / "labelcol" / mask_name), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
            assert zones_in_mask(mask) == parse_demo_report(text), mask_name


def test_distractors_are_in_the_image_but_not_in_the_mask_or_report():
    cases = [render_demo_case(np.random.default_rng([0, 0, i]), 96) for i in range(100)]
    with_distractors = [c for c in cases if c.distractors]
    assert 70 <= len(with_distractors) < 95  # most images: a model that segments every blob scores clearly lower
    for case in with_distractors:
        assert not case.distractors & case.zones
        assert zones_in_mask(case.mask) == case.zones == parse_demo_report(case.report)
        # `blobs` holds the named lesions and the distractors, each in its own zone.
        assert zones_in_mask(case.blobs) == case.zones | case.distractors
        assert not (case.mask.astype(bool) & ~case.blobs).any()
    # A lesion (named or not) makes its zone brighter than the lung around it in the other, empty zones.
    lesion_zone = np.mean([_zone_mean(c, z) for c in with_distractors for z in c.distractors])
    empty_zone = np.mean([_zone_mean(c, z) for c in cases for z in set(ZONES) - c.zones - c.distractors])
    assert lesion_zone > empty_zone + 5


def _zone_mean(case, zone):
    y0, y1, x0, x1 = zone_boxes(case.image.shape[0])[zone]
    return case.image[y0:y1, x0:x1].astype(float).mean()


def test_same_seed_same_set_other_seed_other_set(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_train=3, n_val=1, n_test=1, img_size=64, seed=4)
    b = make_demo_dataset(tmp_path / "b", n_train=3, n_val=1, n_test=1, img_size=64, seed=4)
    c = make_demo_dataset(tmp_path / "c", n_train=3, n_val=1, n_test=1, img_size=64, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 10
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    table = "Train_Folder/Train_Val_text.xlsx"
    assert read_rows(a / table) == read_rows(b / table)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_ensure_creates_once_and_refuses_partial_sets(tmp_path, monkeypatch):
    import utils.data.demo as demo

    calls = []
    monkeypatch.setattr(demo, "make_demo_dataset",
                        lambda root, layout: calls.append(root) or make_demo_dataset(root, 2, 1, 1, img_size=64,
                                                                                     layout=layout))
    cfg = demo_config(tmp_path / "datasets" / "Demo")
    root = demo.ensure_demo_dataset(cfg)
    assert root == tmp_path / "datasets" / "Demo" and (root / "Val_Folder" / "labelcol").is_dir()
    assert demo.ensure_demo_dataset(cfg) == root and len(calls) == 1  # present: not written again
    assert not list((tmp_path / "datasets").glob(".*tmp*"))  # no temporary folder left behind
    (root / "Test_Folder").rename(root / "Test_Folder_old")
    with pytest.raises(DatasetError, match="delete"):
        demo.ensure_demo_dataset(cfg)
    with pytest.raises(DatasetError, match="Val_Folder"):
        ensure_demo_dataset(cfg.replace(val_dataset=str(tmp_path / "other" / "Val_Folder")))
    with pytest.raises(FileExistsError):
        make_demo_dataset(root)
    (root / "Test_Folder_old").rename(root / "Test_Folder")
    (root / "demo.json").unlink()  # the user's own data, or a set written before version 2: never "delete"
    with pytest.raises(DatasetError, match="not a demo set written by this program.*demo_data=False") as caught:
        demo.ensure_demo_dataset(cfg)
    assert "delete" not in str(caught.value)
    (root / "Test_Folder").rename(root / "Test_Folder_old")  # the user's data, a split short
    with pytest.raises(DatasetError, match="demo_data=False") as caught:
        demo.ensure_demo_dataset(cfg)
    assert "delete" not in str(caught.value)


def test_demo_cases_are_drawn_again_from_the_sets_seed(tmp_path):
    import cv2

    from utils.data.demo import demo_cases, read_demo_info

    root = make_demo_dataset(tmp_path / "Demo", n_train=2, n_val=1, n_test=3, img_size=64, seed=9)
    assert read_demo_info(root) == {"version": 2, "seed": 9, "img_size": 64,
                                    "counts": {"train": 2, "val": 1, "test": 3}}
    cases = demo_cases(root, "test")
    assert sorted(cases) == ["test_0000.png", "test_0001.png", "test_0002.png"]
    for name, case in cases.items():  # the regenerated case is the one on disk
        assert np.array_equal(cv2.imread(str(root / "Test_Folder" / "img" / name), cv2.IMREAD_GRAYSCALE), case.image)
        assert np.array_equal(cv2.imread(str(root / "Test_Folder" / "labelcol" / f"mask_{name}"),
                                         cv2.IMREAD_GRAYSCALE), case.mask)


def test_demo_config():
    from Config_Demo import config

    assert config.demo_data and config.img_size % 16 == 0 and config.clip_weights is None
    assert config.variant == "improved" and config.geometry == "report"
    assert config.train_dataset == "datasets/Demo/Train_Folder" and config.pairing == "qata"


def test_two_processes_writing_the_set_at_once_both_succeed(tmp_path, monkeypatch):
    import utils.data.demo as demo

    real_replace = os.replace
    root = tmp_path / "Demo"

    def other_process_wins(src, dst):  # another run renames its copy into place first
        monkeypatch.setattr(demo.os, "replace", real_replace)
        make_demo_dataset(root, 2, 1, 1, img_size=64)
        real_replace(src, dst)

    monkeypatch.setattr(demo.os, "replace", other_process_wins)
    assert make_demo_dataset(root, 2, 1, 1, img_size=64) == root
    assert (root / "demo.json").is_file() and not list(tmp_path.glob(".*tmp*"))


# ---- layouts ----------------------------------------------------------------------------------------------------

# set_digest of make_demo_dataset(root, 3, 2, 2, img_size=64, seed=7), taken before layouts existed.
FIXED_SET_SHA256 = "c0800adf962f333c0eb662ddd0af29a12b007380ca1371c3dfae3c67fe01406e"


def set_digest(root: Path) -> str:
    """sha256 of a demo set: every PNG's decoded pixels (not its bytes, which depend on the PNG encoder), the
    tables' rows (not the .xlsx bytes, which hold the time of writing) and demo.json."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        digest.update(f"{path.relative_to(root).as_posix()} {pixels.shape} {pixels.dtype}\n".encode())
        digest.update(pixels.tobytes())
    for table in ("Train_Folder/Train_Val_text.xlsx", "Test_Folder/Test_text.xlsx"):
        digest.update(repr(read_rows(root / table)).encode())
    digest.update((root / "demo.json").read_bytes())
    return digest.hexdigest()


def test_the_fixed_layout_is_the_set_written_before_layouts_existed(tmp_path):
    root = make_demo_dataset(tmp_path / "Demo", 3, 2, 2, img_size=64, seed=7)
    assert set_digest(root) == FIXED_SET_SHA256
    assert "layout" not in json.loads((root / "demo.json").read_text())
    fixed = make_demo_dataset(tmp_path / "Fixed", 3, 2, 2, img_size=64, seed=7, layout="fixed")
    assert set_digest(fixed) == FIXED_SET_SHA256
    case = render_demo_case(np.random.default_rng([7, 2, 0]), 64)
    assert case.layout == FIXED_LAYOUT and case.layout.zone_boxes(64) == zone_boxes(64)


def test_lung_zones_are_thirds_of_the_tilted_lung():
    # One lung at the centre, turned 90 degrees: its base points to the image's right, so upper is on the left.
    turned = Lung(0.5, 0.5, 0.1, 0.3, tilt=90.0)
    layout = DemoLayout(right=turned, left=Lung(0.9, 0.9, 0.01, 0.01))
    size = 100
    for x, level in ((25, "upper"), (35, "upper"), (45, "middle"), (55, "middle"), (65, "lower"), (79, "lower")):
        assert layout.zone_at(x, 50, size) == (level, "right"), x
    assert layout.zone_at(50, 35, size) is None and layout.zone_at(10, 50, size) is None  # outside the ellipse
    regions = layout.zone_regions(size)
    assert regions[("upper", "right")][50, 21] and not regions[("upper", "right")][50, 19]  # x from 20 to 80
    assert regions[("middle", "right")][50, 50] and regions[("middle", "right")][41, 50]  # across: 40 to 60
    assert not regions[("middle", "right")][39, 50]
    # Untilted, the same lung's zones are horizontal bands: y from 20 to 80 in thirds.
    upright = DemoLayout(right=Lung(0.5, 0.5, 0.1, 0.3), left=Lung(0.9, 0.9, 0.01, 0.01))
    assert [upright.zone_at(50, y, size)[0] for y in (21, 39, 41, 59, 61, 79)] == [
        "upper", "upper", "middle", "middle", "lower", "lower"]
    # zone_at and zone_regions agree at every pixel.
    for lay in (layout, upright, FIXED_LAYOUT):
        regions = lay.zone_regions(size)
        for y, x in itertools.product(range(0, size, 3), range(0, size, 3)):
            holder = [z for z, region in regions.items() if region[y, x]]
            assert holder == ([lay.zone_at(x, y, size)] if lay.zone_at(x, y, size) else []), (lay, x, y)
    with pytest.raises(ValueError, match="untilted"):
        DemoLayout(right=turned, left=turned, boxes=True)


@pytest.mark.parametrize("size", [64, 96])
def test_the_varied_layout_places_each_images_lungs_anew(size):
    cases = [render_demo_case(np.random.default_rng([0, 0, i]), size, "varied") for i in range(40)]
    for side in ("right", "left"):
        lungs = [c.layout.lung(side) for c in cases]
        assert np.ptp([lung.x for lung in lungs]) > 0.08 and np.ptp([lung.y for lung in lungs]) > 0.08
        assert np.ptp([lung.half_height for lung in lungs]) > 0.05 and np.ptp([lung.tilt for lung in lungs]) > 15
    for case in cases:
        regions = case.layout.zone_regions(size)
        stacked = np.stack(list(regions.values()))
        assert all(region.any() for region in regions.values())
        assert stacked.sum(0).max() == 1  # the zones (and so the two lungs) do not overlap
        assert not (stacked[:, [0, -1], :].any() or stacked[:, :, [0, -1]].any())  # and stay inside the image
    # The image's own lungs are drawn: the dark lung field moves with the layout.
    lung_means = [c.image[c.layout.zone_regions(size)[("middle", "left")]].mean() for c in cases]
    body_means = [c.image[(c.image > 0) & ~np.stack(list(c.layout.zone_regions(size).values())).any(0)].mean()
                  for c in cases]
    assert np.mean(lung_means) + 20 < np.mean(body_means)
    # A lookup of the fixed boxes would miss: some lesion centres lie outside their zone's fixed box.
    boxes = zone_boxes(size)
    outside = [(c, z) for c in cases for z, (x, y) in c.centres.items()
               if not (boxes[z][0] <= y < boxes[z][1] and boxes[z][2] <= x < boxes[z][3])]
    assert len(outside) >= 5


@pytest.mark.parametrize("size", [64, 96])
def test_varied_reports_name_the_zone_of_each_lesions_centre(size):
    cases = [render_demo_case(np.random.default_rng([3, 1, i]), size, "varied") for i in range(80)]
    crossing = 0
    for case in cases:
        named = parse_demo_report(case.report)
        assert named == case.zones and not case.distractors & case.zones
        assert set(case.centres) == case.zones | case.distractors
        for zone, (x, y) in case.centres.items():  # each lesion's centre lies in the zone it is reported for
            assert case.layout.zone_at(x, y, size) == zone, (case.report, zone, x, y)
        in_mask = zones_in_mask(case.mask, case.layout)
        assert named <= in_mask and in_mask <= {(level, side) for level in LEVELS for _, side in named}
        assert not (case.mask.astype(bool) & ~case.blobs).any()
        crossing += in_mask != named
        if len(case.zones) == 1 and not case.distractors:  # one lesion: the mask is that lesion
            ys, xs = np.nonzero(case.mask)
            assert case.centres[next(iter(case.zones))] == pytest.approx((xs.mean(), ys.mean()))
    assert crossing >= 10  # lesions cross zone lines; the report names the zone of the centre


def test_a_varied_set_is_recorded_and_drawn_again(tmp_path):
    root = make_demo_dataset(tmp_path / "Demo", n_train=2, n_val=1, n_test=3, img_size=64, seed=9, layout="varied")
    assert read_demo_info(root) == {"version": 2, "seed": 9, "img_size": 64,
                                    "counts": {"train": 2, "val": 1, "test": 3}, "layout": "varied"}
    assert check_dataset(demo_config(root)).ok
    cases = demo_cases(root, "test")
    rows = dict(read_rows(root / "Test_Folder" / "Test_text.xlsx"))
    for name, case in cases.items():
        assert case.layout != FIXED_LAYOUT and not case.layout.boxes
        assert np.array_equal(cv2.imread(str(root / "Test_Folder" / "img" / name), cv2.IMREAD_GRAYSCALE), case.image)
        mask = cv2.imread(str(root / "Test_Folder" / "labelcol" / f"mask_{name}"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask, case.mask) and rows[f"mask_{name}"] == case.report
    with pytest.raises(ValueError, match="layout"):
        make_demo_dataset(tmp_path / "Other", 1, 1, 1, img_size=64, layout="tilted")
    with pytest.raises(ValueError, match="layout"):
        render_demo_case(np.random.default_rng(0), 64, "tilted")
    info = json.loads((root / "demo.json").read_text())
    (root / "demo.json").write_text(json.dumps({**info, "layout": "tilted"}))
    with pytest.raises(DatasetError, match="layout 'tilted'.*delete"):
        read_demo_info(root)


def test_ensure_writes_the_configured_layout_and_refuses_a_set_of_the_other(tmp_path):
    cfg = demo_config(tmp_path / "datasets" / "Demo").replace(demo_layout="varied")
    import utils.data.demo as demo

    root = tmp_path / "datasets" / "Demo"
    make_demo_dataset(root, 2, 1, 1, img_size=64, layout="varied")
    assert demo.ensure_demo_dataset(cfg) == root  # present in the asked layout: used
    with pytest.raises(DatasetError, match="layout 'varied', the config asks for 'fixed'"):
        demo.ensure_demo_dataset(cfg.replace(demo_layout="fixed"))
