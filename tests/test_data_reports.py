"""Mirroring a report's position words: real QaTa, MosMed and demo phrasings, case and punctuation kept."""

import pytest

from utils.data.reports import POSITION_WORDS, mirror_report

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
