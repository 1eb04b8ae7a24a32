"""Mirroring a report's position words (real QaTa, MosMed and demo phrasings, case and punctuation kept), and giving
images other reports' texts."""

import pytest
import torch

from utils.data.reports import POSITION_WORDS, mirror_report, report_cycle, text_derangement

QATA = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."


@pytest.mark.parametrize("report, left_right, up_down, expected", [
    (QATA, True, False, "Bilateral pulmonary infection, two infected areas, upper right lung and lower left lung."),
    (QATA, False, True, "Bilateral pulmonary infection, two infected areas, lower left lung and upper right lung."),
    (QATA, True, True, "Bilateral pulmonary infection, two infected areas, lower right lung and upper left lung."),
    (QATA, False, False, QATA),
    # Both sides named in one phrase: one pass, so neither side is swapped twice.
    ("Bilateral pulmonary infection, three infected areas, upper lower left lung and middle right lung.", True, True,
     "Bilateral pulmonary infection, three infected areas, lower upper right lung and middle left lung."),
    ("Unilateral pulmonary infection, one infected area, all left lung.", True, False,
     "Unilateral pulmonary infection, one infected area, all right lung."),
    # Case, punctuation and synonyms.
    ("Left apical opacity; RIGHT basal consolidation. Top/bottom: Superior, inferior.", True, True,
     "Right basal opacity; LEFT apical consolidation. Bottom/top: Inferior, superior."),
    # No position word: nothing changes; words that merely contain one are left alone.
    ("Pulmonary infection, no lesion. Leftover uppercase loweredness.", True, True,
     "Pulmonary infection, no lesion. Leftover uppercase loweredness."),
    ("", True, True, ""),
])
def test_mirror_report(report, left_right, up_down, expected):
    assert mirror_report(report, left_right, up_down) == expected


def test_mirroring_twice_gives_the_report_back():
    for flags in ((True, False), (False, True), (True, True)):
        assert mirror_report(mirror_report(QATA, *flags), *flags) == QATA


def test_position_words_include_every_swapped_word_and_middle():
    assert {"left", "right", "upper", "lower", "middle", "apical", "basal"} <= POSITION_WORDS
    assert "lung" not in POSITION_WORDS


def _same_text(reports, donor):
    return sum(reports[i] == reports[int(donor[i])] for i in range(len(reports)))


@pytest.mark.parametrize("n", [2, 7, 50])
def test_text_derangement_of_distinct_reports_is_the_plain_cycle(n):
    reports = [f"report {i}" for i in range(n)]
    donor, unchanged = text_derangement(reports, seed=5)
    assert torch.equal(donor, report_cycle(n, 5)) and unchanged == 0  # numbers quoted with the cycle still hold


@pytest.mark.parametrize("n, texts", [(12, 3), (61, 5), (200, 2)])
def test_text_derangement_gives_every_image_another_text_when_no_text_holds_the_majority(n, texts):
    reports = [f"text {i % texts}" for i in range(n)]
    assert _same_text(reports, report_cycle(n, 1)) > 0  # a plain cycle hands some images their own text
    donor, unchanged = text_derangement(reports, seed=1)
    assert sorted(donor.tolist()) == list(range(n))  # a permutation: every report is given once
    assert unchanged == 0 and _same_text(reports, donor) == 0
    again, _ = text_derangement(reports, seed=1)
    assert torch.equal(donor, again)  # the same every validation


def test_text_derangement_counts_the_images_it_cannot_change():
    reports = ["a"] * 7 + ["b"] * 3  # "a" holds 7 of 10: only 3 "a" images can read "b"
    donor, unchanged = text_derangement(reports, seed=0)
    assert unchanged == 4 == _same_text(reports, donor)
    assert sorted(donor.tolist()) == list(range(10))
    assert text_derangement(["x"], seed=0)[1] == 1
