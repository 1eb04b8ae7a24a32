"""The report tokenizer: CLIP BPE with the authors' context length, truncation and padding rules."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from utils.data.tokenizer import (
    ReportTokenizer,
    pad_report,
    register_tower_tokenizer,
    tokenizer_fields,
    tokenizer_kind,
)

SOT, EOT = 49406, 49407


def test_pad_report_adds_eof_xxx_until_nine_words():
    assert pad_report("The nuclei are evenly distributed.") == (
        "The nuclei are evenly distributed. EOF XXX EOF XXX EOF XXX EOF XXX")
    nine = "one two three four five six seven eight nine"
    assert pad_report(nine) == nine
    assert pad_report("") == " EOF XXX" * 9


def test_exact_length_report_fills_the_context():
    # Spec 1.5: this QaTa sentence is exactly 18 tokens with SOT and EOT.
    text = "Bilateral pulmonary infection, two infected areas, upper left lung and upper right lung."
    out = ReportTokenizer(18)(text)
    assert out.tokens.shape == (1, 18) and out.tokens.dtype == torch.int64
    assert out.tokens[0, 0] == SOT and out.tokens[0, -1] == EOT
    assert out.text_mask.sum() == 18 and not out.truncated[0]


def test_long_report_is_cut_with_eot_last():
    text = "Bilateral pulmonary infection, two infected areas, middle left lung and upper lower right lung."
    out = ReportTokenizer(18)(text)
    assert out.truncated[0] and out.tokens[0, -1] == EOT and (out.tokens[0] != 0).all()


def test_short_report_is_padded_with_zeros_and_masked():
    out = ReportTokenizer(18, pad_short_reports=False)(["No infection."])
    tokens, mask = out.tokens[0], out.text_mask[0]
    length = int(mask.sum())
    assert tokens[0] == SOT and tokens[length - 1] == EOT
    assert (tokens[length:] == 0).all() and torch.equal(mask, (tokens != 0).long())


def test_padding_switch_changes_what_is_tokenised():
    padded = ReportTokenizer(10)(["The nuclei are evenly distributed."])
    plain = ReportTokenizer(10, pad_short_reports=False)(["The nuclei are evenly distributed."])
    assert padded.truncated[0] and padded.text_mask.sum() == 10  # docs/QUIRKS.md, A4: 21 tokens, cut to 10
    assert not plain.truncated[0] and plain.text_mask.sum() == 9


def test_cleaning_is_case_and_whitespace_insensitive():
    tok = ReportTokenizer(18)
    assert torch.equal(tok("Upper  LEFT lung.").tokens, tok("upper left lung.").tokens)


def test_non_string_report_is_refused():
    with pytest.raises(TypeError, match="must be a str"):
        ReportTokenizer(18)([3.0])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tokenizer_does_not_import_the_open_clip_package():
    code = ("import sys; from utils.data.tokenizer import ReportTokenizer; "
            "t = ReportTokenizer(18)('No infection.'); assert t.tokens[0, 0] == 49406; "
            "print('open_clip' in sys.modules, 'torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_the_tokenizer_follows_the_tower_and_a_model_config_lends_its_fields():
    clip = SimpleNamespace(text_encoder="clip", token_len=12, pad_short_reports=False, hf_text_model="ignored")
    assert tokenizer_kind("clip") == "clip_bpe" and tokenizer_kind("hf") == "hf"
    assert tokenizer_fields(clip) == {"text_encoder": "clip", "token_len": 12, "pad_short_reports": False}
    hf = SimpleNamespace(**{**vars(clip), "text_encoder": "hf", "hf_text_model": "folder"})
    assert tokenizer_fields(hf)["hf_text_model"] == "folder"
    with pytest.raises(ValueError, match="text_encoder must be one of"):
        tokenizer_kind("bert")
    with pytest.raises(ValueError, match="reads 'clip_bpe' tokens already"):
        register_tower_tokenizer("clip", "hf")
