"""The synthetic demo set: reports that match their masks, distractors, determinism, creation when missing."""

import itertools
import os

import cv2
import numpy as np
import pytest
from conftest import read_rows

from utils.config import Config
from utils.data.check import check_dataset
from utils.data.demo import (
    ZONES,
    demo_report,
    ensure_demo_dataset,
    make_demo_dataset,
    parse_demo_report,
    render_demo_case,
    zone_boxes,
    zones_in_mask,
)
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
                        lambda root: calls.append(root) or make_demo_dataset(root, 2, 1, 1, img_size=64))
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
    (root / "demo.json").unlink()  # a set written before version 2 (40% distractors) has none
    with pytest.raises(DatasetError, match="older version.*delete"):
        demo.ensure_demo_dataset(cfg)


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
