"""The reports' tokenizer: OpenAI CLIP's byte-pair encoding, as the authors use it.

The BPE is this project's own (:mod:`utils.data.bpe`, with CLIP's vocabulary file beside it), checked token for token
against open_clip's tokenizer in the tests; nothing is downloaded and open_clip is not needed at run time. The
rules follow the
authors' ``clip.tokenize(text, context_length=token_len, truncate=True)``: lower-cased, ftfy- and
whitespace-cleaned text, a start token, the BPE tokens, an end token, zeros after; a report longer than
``token_len`` is cut and its last token forced to the end token. ``text_mask`` is ``tokens != 0``.

Before tokenising, the authors' ``read_text`` pads reports of fewer than 9 words with " EOF XXX" until they have
9 (reference spec 1.2). Their padding relies on pandas chained assignment and silently does nothing under
pandas >= 3; here it is explicit, behind ``Config.pad_short_reports`` (on by default).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, Sequence, Union

import torch

from utils.data.bpe import ClipBPE

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

@functools.lru_cache(maxsize=1)
def clip_bpe() -> ClipBPE:
    """One :class:`utils.data.bpe.ClipBPE` per process: reading the vocabulary takes a fraction of a second."""
    return ClipBPE()


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
        self._bpe = clip_bpe()
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


@dataclass
class TokenizedSplit:
    """The reports of a split as the network reads them.

    Attributes:
        tokens: ``[N, L]`` int64 CLIP BPE ids, zero-padded (``L = token_len``).
        text_mask: ``[N, L]`` int64, 1 on the start token, the words and the end token.
        words_cut: ``[N]`` bool, True where the report's own words do not fit ``L`` and were cut. The authors'
            " EOF XXX" padding is cut whenever it does not fit too; that is by design and not counted here.
    """

    tokens: torch.Tensor
    text_mask: torch.Tensor
    words_cut: torch.Tensor


@functools.lru_cache(maxsize=8)
def _tokenizer(token_len: int, pad_short_reports: bool) -> ReportTokenizer:
    """One tokenizer per setting: building one loads the BPE vocabulary (a fraction of a second)."""
    return ReportTokenizer(token_len, pad_short_reports)


def tokenize_reports(reports: Sequence[str], token_len: int, pad_short_reports: bool) -> TokenizedSplit:
    """Tokenise reports with the network's tokenizer (:class:`utils.data.tokenizer.ReportTokenizer`).

    Args:
        reports: N report strings (any Unicode; empty is allowed).
        token_len: the context length ``L``.
        pad_short_reports: the authors' " EOF XXX" padding of reports under 9 words.

    Returns:
        Tokens, text mask and which reports lost words to the cut (:class:`TokenizedSplit`).
    """
    reports = list(reports)
    tokenized = _tokenizer(token_len, pad_short_reports)(reports) if reports else None
    if tokenized is None:
        empty = torch.zeros(0, token_len, dtype=torch.long)
        return TokenizedSplit(empty, empty.clone(), torch.zeros(0, dtype=torch.bool))
    if pad_short_reports:
        # With padding on, `truncated` also flags reports whose padding alone overflowed; the words fit iff the
        # unpadded report fits.
        words_cut = _tokenizer(token_len, False)(reports).truncated
    else:
        words_cut = tokenized.truncated
    return TokenizedSplit(tokenized.tokens, tokenized.text_mask, words_cut)
