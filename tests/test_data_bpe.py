"""Our CLIP BPE (utils/data/bpe.py) gives open_clip's tokens, token for token, on many kinds of report."""

import itertools

import numpy as np
import pytest
from open_clip.tokenizer import SimpleTokenizer

from utils.data.bpe import ClipBPE, byte_characters
from utils.data.demo import demo_report
from utils.data.demo_layout import ZONES

REPORTS = [
    "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
    "Unilateral pulmonary infection, one infected area, all left lung.",
    "Bilateral pulmonary infection, three infected areas, upper lower left lung and middle right lung.",
    "Bilateral pulmonary infection, four infected areas, middle lower left lung and upper middle right lung.",
    "The nuclei are evenly distributed. EOF XXX EOF XXX EOF XXX EOF XXX",
    "No lesion.", "", " ", "\n\t", "x",
    "Ground-glass opacity (GGO) 3.5 cm x 2 cm, 25% of the lobe; CT-severity 2/4.",
    "lungâ€™s opacity &amp; &lt;nodule&gt; &#39;quoted&#39;",  # mojibake and HTML entities
    "Ünïcödé — 肺部感染, 左肺上叶 😷 x² ½ ﬁbrosis Ⅻ",
    "I'm sure they're fine; we've seen it'll be what he'd said. 'S 'T",
    "<start_of_text>hello<end_of_text>",
    "   many    spaces   and\nnew\nlines   ",
    "a" * 500,
    "Pneumonia " * 200,
    "UPPER LEFT LUNG, Lower Right Lung!!!???",
]


@pytest.fixture(scope="module")
def tokenizers():
    return ClipBPE(), SimpleTokenizer()


def _reports():
    yield from REPORTS
    for k in (1, 2, 3):
        for zones in itertools.combinations(ZONES, k):
            yield demo_report(zones)
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 ,.;:'\"!?-()/%&#<>é€中😷ß\t\n")
    for _ in range(300):
        yield "".join(rng.choice(alphabet, size=int(rng.integers(0, 60))))


def test_same_tokens_as_open_clip(tokenizers):
    ours, reference = tokenizers
    count = 0
    for report in _reports():
        assert ours.encode(report) == reference.encode(report), report
        count += 1
    assert count > 350


def test_vocabulary_and_special_tokens_match(tokenizers):
    ours, reference = tokenizers
    assert ours.vocab_size == 49408 == len(reference.encoder)
    assert ours.encoder == reference.encoder
    assert (ours.sot_token_id, ours.eot_token_id) == (49406, 49407)


def test_decode_gives_the_cleaned_text_back(tokenizers):
    ours, _ = tokenizers
    assert ours.decode(ours.encode("Upper  LEFT lung.")) == "upper left lung ."
    assert ours.decode(ours.encode("肺部 😷")) == "肺部 😷"


def test_every_byte_has_a_printable_stand_in():
    table = byte_characters()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert not any(char.isspace() for char in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == chr(256 + 32)


def test_a_missing_vocabulary_file_says_how_to_restore_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="git checkout"):
        ClipBPE(str(tmp_path / "nope.txt.gz"))
