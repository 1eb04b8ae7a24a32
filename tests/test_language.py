"""Text-reliance measures: the report derangement, the every-blob oracle and the interest-map shares."""

import cv2
import numpy as np
import pytest
import torch

from Load_Dataset import ImageToImage2D, ReportsSwapped
from utils.config import Config
from utils.data.demo import demo_cases, make_demo_dataset, render_demo_case
from utils.data.demo_layout import zone_boxes
from utils.data.reports import report_cycle
from utils.data.tokenizer import ReportTokenizer
from utils.inference.language import every_blob_logits, interest_shares, zone_coverage
from utils.metrics import SegmentationMeter


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_report_cycle_is_a_fixed_derangement(n):
    donor = report_cycle(n, seed=3)
    assert sorted(donor.tolist()) == list(range(n))  # a permutation ...
    assert all(donor[i] != i for i in range(n))  # ... in which no image keeps its own report
    assert torch.equal(donor, report_cycle(n, seed=3))  # the same every validation


def test_every_blob_oracle_scores_the_blobs_against_the_named_mask():
    case = next(c for c in (render_demo_case(np.random.default_rng([0, 0, i]), 64) for i in range(50))
                if c.distractors)
    logits = every_blob_logits(case.blobs, 64)
    assert logits.shape == (1, 1, 64, 64) and torch.equal(logits[0, 0] > 0, torch.from_numpy(case.blobs))
    meter = SegmentationMeter(strict=True, dice="paper")
    meter.update(logits, torch.from_numpy(case.mask > 0).long()[None])
    truth, blobs = case.mask > 0, case.blobs
    expected = 2 * (truth & blobs).sum() / (truth.sum() + blobs.sum() + 1e-5)
    assert meter.compute()["dice"] == pytest.approx(expected, abs=1e-6) and expected < 1


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    """A 64 px demo set whose test split has cases with and without distractors."""
    root = make_demo_dataset(tmp_path_factory.mktemp("data") / "Demo", n_train=1, n_val=1, n_test=12, img_size=64,
                             seed=0)
    cases = demo_cases(root, "test")
    assert any(not c.distractors for c in cases.values()) and any(c.distractors for c in cases.values())
    return root, cases


@pytest.mark.parametrize("size", [32, 48, 64])
def test_every_blob_oracle_is_resized_as_the_loader_resizes_the_true_mask(demo_set, size):
    root, cases = demo_set
    cfg = Config().replace(train_dataset=str(root / "Train_Folder"), val_dataset=str(root / "Val_Folder"),
                           test_dataset=str(root / "Test_Folder"), img_size=size)
    loader = ImageToImage2D(cfg, "test")
    thinner = 0
    for i, sample in enumerate(loader.samples):
        case = cases[sample.image_path.name]
        _, truth = loader.load_arrays(i)
        oracle = every_blob_logits(case.blobs, size)[0, 0] > 0
        if case.distractors:  # the oracle marks every named lesion, and more
            assert not (torch.from_numpy(truth.astype(bool)) & ~oracle).any()
            continue
        # Every blob named: the oracle is the true mask as the loader gives it, pixel for pixel (Dice 1).
        assert torch.equal(oracle, torch.from_numpy(truth.astype(bool))), sample.image_path.name
        meter = SegmentationMeter(strict=True, dice="paper")
        meter.update(every_blob_logits(case.blobs, size), torch.from_numpy(truth).long()[None])
        assert meter.compute()["dice"] == pytest.approx(1.0, abs=1e-6)
        # Resized from 0/1 instead, the blobs come out thinner below the generator's size.
        zero_one = cv2.resize(case.blobs.astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR) > 0
        thinner += zero_one.sum() < truth.sum()
    assert thinner > 0 if size < 64 else thinner == 0
    with pytest.raises(TypeError, match="bool"):
        every_blob_logits(case.mask, size)


def test_zone_coverage_counts_the_part_of_each_patch_inside_the_zones():
    coverage = zone_coverage([("upper", "left")], 64)
    assert coverage.shape == (4, 4) and 0 < coverage.max() <= 1
    y0, y1, x0, x1 = zone_boxes(64)[("upper", "left")]
    assert coverage.sum() * 256 == pytest.approx((y1 - y0) * (x1 - x0))  # areas add up, in pixels
    assert zone_coverage([], 64).sum() == 0


def test_interest_shares_known_answers():
    words = ["bilateral", "pulmonary", "infection", ",", "upper", "left", "lung"]
    word_weights = torch.zeros(18)
    word_weights[5] = 0.25  # "upper" (position 5 = words[4])
    word_weights[6] = 0.25  # "left"
    word_weights[7] = 0.5  # "lung"
    coverage = zone_coverage([("upper", "left")], 64).flatten()
    on_zone = torch.zeros(16)
    on_zone[int(coverage.argmax())] = 1.0
    shares = interest_shares(words, word_weights, on_zone, [("upper", "left")], 64)
    assert shares["woi_position"] == pytest.approx(0.5)
    assert shares["poi_in_zones"] == pytest.approx(float(coverage.max()))
    uniform = interest_shares(words, word_weights, torch.full((16,), 1 / 16), [("upper", "left")], 64)
    assert uniform["poi_in_zones"] == pytest.approx(uniform["poi_chance"]) and uniform["poi_chance"] > 0


def test_swapped_reports_keep_image_and_mask_and_take_the_donors_report(qata_set):
    val = ImageToImage2D(qata_set, "val")
    donor = report_cycle(len(val), 0)
    swapped = ReportsSwapped(val, donor)
    for i in range(len(val)):
        a, b = val[i], swapped[i]
        j = int(donor[i])
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) and a["name"] == b["name"]
        assert b["text"] == val.samples[j].report and torch.equal(b["text_token"], val.text_tokens[j])
    with pytest.raises(ValueError, match="unaugmented"):
        ReportsSwapped(ImageToImage2D(qata_set, "train"), report_cycle(4, 0))


def test_report_geometry_tokenises_the_mirrored_report(qata_set):
    train = ImageToImage2D(qata_set.replace(geometry="report"), "train")
    tokenizer = ReportTokenizer(qata_set.token_len, qata_set.pad_short_reports)
    mirrored = 0
    for epoch in range(6):
        train.set_epoch_seed(epoch)
        for i in range(len(train)):
            item = train[i]
            assert torch.equal(item["text_token"], tokenizer([item["text"]]).tokens[0])
            mirrored += item["text"] != train.samples[i].report
    assert mirrored > 0  # "upper left lung" became "upper right", "lower left" or "lower right" sometimes


@pytest.mark.parametrize("size", [64, 112])
def test_interest_shares_follow_a_varied_cases_own_zones(size):
    case = render_demo_case(np.random.default_rng([0, 2, 5]), 64, "varied")  # drawn at 64 px, scored at `size`
    regions = case.layout.zone_regions(size)
    coverage = zone_coverage(case.zones, size, case.layout)
    assert coverage.shape == (size // 16, size // 16)
    inside = sum(regions[z].sum() for z in case.zones)
    assert float(coverage.sum()) * 256 == pytest.approx(inside)  # areas add up, in pixels
    assert not torch.allclose(coverage, zone_coverage(case.zones, size))  # not the fixed layout's boxes
    flat = coverage.flatten()
    words = ["unilateral", "pulmonary", "infection", ",", "upper", "left", "lung"]
    word_weights = torch.zeros(18)
    word_weights[5] = 1.0  # "upper"
    on_zone = torch.zeros(flat.numel())
    on_zone[int(flat.argmax())] = 1.0
    shares = interest_shares(words, word_weights, on_zone, case.zones, size, case.layout)
    assert shares["woi_position"] == pytest.approx(1.0)
    assert shares["poi_in_zones"] == pytest.approx(float(flat.max())) and flat.max() > 0.5
    off_zone = torch.zeros(flat.numel())
    off_zone[0] = 1.0  # the top-left patch lies outside both lungs
    assert interest_shares(words, word_weights, off_zone, case.zones, size, case.layout)["poi_in_zones"] == 0
    uniform = interest_shares(words, word_weights, torch.full((flat.numel(),), 1 / flat.numel()), case.zones, size,
                              case.layout)
    assert uniform["poi_in_zones"] == pytest.approx(uniform["poi_chance"])
    assert uniform["poi_chance"] == pytest.approx(inside / size ** 2)
