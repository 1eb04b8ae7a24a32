"""The report audit: zones parsed from QaTa phrasing, mask shares in image coordinates, and the audit of a tiny set
whose answers are known; the command on a data set folder."""

import json

import cv2
import numpy as np
import pytest

from tools import audit_reports
from utils.data.audit import ALL_ZONES, audit_split, mask_mass, report_zones
from utils.data.records import Sample

SIX = ("bilateral pulmonary infection, six infected areas, upper middle lower left lung and upper middle lower right "
       "lung.")


@pytest.mark.parametrize("report, zones", [
    (SIX, ALL_ZONES),
    ("unilateral pulmonary infection, one infected area, lower right lung.", {("lower", "right")}),
    ("bilateral pulmonary infection, three infected areas, middle lower left lung and lower right lung.",
     {("middle", "left"), ("lower", "left"), ("lower", "right")}),
    ("Unilateral pulmonary infection, all left lung.", {("upper", "left"), ("middle", "left"), ("lower", "left")}),
    ("no position at all.", set()),
])
def test_report_zones(report, zones):
    assert report_zones(report) == frozenset(zones)


@pytest.mark.parametrize("hw", [(6, 8), (9, 7)])
def test_mask_mass_in_image_coordinates(hw):
    h, w = hw
    mask = np.zeros(hw, np.uint8)
    mask[:h // 3, :w // 2] = 255  # the image's top-left corner (column 0 is the image's left)
    shares = mask_mass(mask)
    assert shares["image_left"] == pytest.approx(1.0) and shares["image_right"] == pytest.approx(0.0)
    assert shares["top"] == pytest.approx(1.0) and shares["bottom"] == 0
    assert mask_mass(np.zeros(hw, np.uint8))["image_left"] == 0  # an empty mask weighs nothing


def _samples(tmp_path, items):
    samples = []
    for i, (report, side) in enumerate(items):
        mask = np.zeros((12, 12), np.uint8)
        if side == "left":
            mask[4:8, 0:6] = 255
        else:
            mask[4:8, 6:12] = 255
        path = tmp_path / f"mask_{i}.png"
        cv2.imwrite(str(path), mask)
        samples.append(Sample(image_path=tmp_path / f"{i}.png", mask_path=path, report=report))
    return samples


LEFT = "unilateral pulmonary infection, one infected area, lower left lung."
RIGHT = "unilateral pulmonary infection, one infected area, lower right lung."


def test_audit_of_a_set_whose_left_is_the_images_left(tmp_path):
    samples = _samples(tmp_path, [(LEFT, "left"), (LEFT, "left"), (RIGHT, "right"), (SIX, "left")])
    audit = audit_split(samples)
    assert audit.images == 4 and audit.report_counts[0] == (LEFT, 2) and len(audit.report_counts) == 3
    assert audit.word_mass["left"]["images"] == 2 and audit.word_mass["left"]["image_left"] == pytest.approx(1.0)
    assert audit.word_mass["right"]["images"] == 1 and audit.word_mass["right"]["image_right"] == pytest.approx(1.0)
    assert audit.all_zones_share == pytest.approx(0.25)
    assert audit.same_text_pair_share == pytest.approx((2 / 4) ** 2 + 2 * (1 / 4) ** 2)
    assert audit.zone_counts == {1: 3, 6: 1}


def test_the_command_prints_and_writes_the_audit(qata_set, tmp_path, capsys):
    out = tmp_path / "audit.json"
    folder = qata_set.test_dataset.rsplit("/", 1)[0]
    settings = [f"{k}={getattr(qata_set, k)}" for k in ("train_dataset", "val_dataset", "test_dataset")]
    assert audit_reports.main(["--set", *settings, "--split", "val", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 images, 2 distinct reports" in printed and "column 0 is the image's left" in printed
    assert json.loads(out.read_text())["images"] == 2
    assert audit_reports.main(["--set", *settings, "--split", "val", "--json", str(out)]) == 2  # not over a file
    assert "would be overwritten" in capsys.readouterr().err
    assert audit_reports.main(["--set", *settings, "--split", "val", "--json", str(out), "--overwrite"]) == 0
    assert audit_reports.main(["--set", f"test_dataset={folder}/Nowhere", "--split", "test"]) == 2
    assert "cannot be read" in capsys.readouterr().err
