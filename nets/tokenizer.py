"""The reports' tokenizer: OpenAI CLIP's byte-pair encoding, as the authors use it.

The BPE vocabulary comes from ``open-clip-torch``, which ships it and needs no network. The rules follow the
authors' ``clip.tokenize(text, context_length=token_len, truncate=True)``: lower-cased, ftfy- and
whitespace-cleaned text, a start token, the BPE tokens, an end token, zeros after; a report longer than
``token_len`` is cut and its last token forced to the end token. ``text_mask`` is ``tokens != 0``.

Before tokenising, the authors' ``read_text`` pads reports of fewer than 9 words with " EOF XXX" until they have
9 (reference spec 1.2). Their padding relies on pandas chained assignment and silently does nothing under
pandas >= 3; here it is explicit, behind ``Config.pad_short_reports`` (on by default).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import List, Sequence, Union

import torch

PAD_WORD = " EOF XXX"
MIN_REPORT_WORDS = 9


def pad_report(text: str, min_words: int = MIN_REPORT_WORDS) -> str:
    """Append " EOF XXX" to ``text`` once per missing whitespace-separated word, up to ``min_words``.

    >>> pad_report("The nuclei are evenly distributed.")
    'The nuclei are evenly distributed. EOF XXX EOF XXX EOF XXX EOF XXX'
    """
    missing = min_words - len(text.split())
    return text + PAD_WORD * missing if missing > 0 else text


@dataclass
class TokenizedReports:
    """Token ids ``[N, L]`` (int64), ``text_mask`` ``[N, L]`` (int64, 1 on SOT, words and EOT), and for each
    report whether it was cut to fit ``L`` (``truncated`` ``[N]``, bool)."""

    tokens: torch.Tensor
    text_mask: torch.Tensor
    truncated: torch.Tensor

_TOKENIZER_MODULE = "_reclmis_open_clip_tokenizer"


def simple_tokenizer_class():
    """open_clip's ``SimpleTokenizer`` (CLIP's BPE and vocabulary), loaded from ``open_clip/tokenizer.py`` alone.

    ``import open_clip.tokenizer`` would first run ``open_clip/__init__.py``, which imports torchvision and every
    model definition: 2.7 s and 230 MB of resident memory that tokenising never uses. The tokenizer module
    imports nothing from its package, so it is loaded on its own from the installed file.

    Raises:
        ImportError: open-clip-torch is not installed.
    """
    module = sys.modules.get(_TOKENIZER_MODULE)
    if module is None:
        spec = importlib.util.find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the CLIP tokenizer comes from open-clip-torch: pip install -r requirements.txt")
        path = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.py")
        file_spec = importlib.util.spec_from_file_location(_TOKENIZER_MODULE, path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        sys.modules[_TOKENIZER_MODULE] = module
    return module.SimpleTokenizer


class ReportTokenizer:
    """CLIP BPE tokenizer for reports, with the authors' context length, truncation and padding rules.

    Args:
        token_len: the context length ``L`` (18 for QaTa-COV19 and MosMedData+, 10 for MoNuSeg).
        pad_short_reports: apply :func:`pad_report` before tokenising (the authors' behaviour).
    """

    def __init__(self, token_len: int, pad_short_reports: bool = True):
        if token_len < 2:
            raise ValueError(f"token_len must be >= 2 (start and end token), got {token_len}")
        self.token_len = token_len
        self.pad_short_reports = pad_short_reports
        self._bpe = simple_tokenizer_class()(context_length=token_len)
        self.sot_token_id = self._bpe.sot_token_id
        self.eot_token_id = self._bpe.eot_token_id
        self.vocab_size = self._bpe.vocab_size

    def prepare(self, text: str) -> str:
        """The text as it is tokenised: padded when ``pad_short_reports`` is on."""
        if not isinstance(text, str):
            raise TypeError(f"a report must be a str, got {type(text).__name__} {text!r}")
        return pad_report(text) if self.pad_short_reports else text

    def token_strings(self, tokens: torch.Tensor) -> List[str]:
        """The text of the tokens at positions ``1..k`` of one report's ``[L]`` ids, ``k + 1`` being the end token:
        BPE pieces as words (CLIP's end-of-word marker dropped), for labelling per-token weights."""
        pieces = []
        for token in tokens.tolist()[1:]:
            if token in (0, self.eot_token_id):
                break
            text = self._bpe.decoder[token].replace("</w>", "")
            pieces.append(bytearray(self._bpe.byte_decoder[c] for c in text).decode("utf-8", errors="replace"))
        return pieces

    def report_token_strings(self, tokens: torch.Tensor, report: str) -> List[str]:
        """:meth:`token_strings` without the authors' " EOF XXX" padding: the tokens of ``report``'s own words (as
        many as fit), for figures that label a weight per word."""
        own = len(self._bpe.encode(report)) if isinstance(report, str) else 0
        return self.token_strings(tokens)[:own]

    def __call__(self, texts: Union[str, Sequence[str]]) -> TokenizedReports:
        if isinstance(texts, str):
            texts = [texts]
        tokens = torch.zeros(len(texts), self.token_len, dtype=torch.long)
        truncated = torch.zeros(len(texts), dtype=torch.bool)
        for i, text in enumerate(texts):
            ids = [self.sot_token_id, *self._bpe.encode(self.prepare(text)), self.eot_token_id]
            if len(ids) > self.token_len:
                ids = ids[: self.token_len]
                ids[-1] = self.eot_token_id
                truncated[i] = True
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return TokenizedReports(tokens=tokens, text_mask=(tokens != 0).long(), truncated=truncated)
