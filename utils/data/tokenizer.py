"""The reports' tokenizers: OpenAI CLIP's byte-pair encoding, as the authors use it, or an hf encoder's own
(:class:`HFReportTokenizer`, ``text_encoder="hf"``); :func:`build_tokenizer` picks the one the config's text tower
reads (:data:`TOKENIZERS`, :data:`TOWER_TOKENIZERS`).

The BPE is this project's own (:mod:`utils.data.bpe`, with CLIP's vocabulary file beside it), checked token for token
against open_clip's tokenizer in the tests; nothing is downloaded and open_clip is not needed at run time. The
rules follow the
authors' ``clip.tokenize(text, context_length=token_len, truncate=True)``: lower-cased, ftfy- and
whitespace-cleaned text, a start token, the BPE tokens, an end token, zeros after; a report longer than
``token_len`` is cut and its last token forced to the end token. ``text_mask`` is ``tokens != 0``.

Before tokenising, the authors' ``read_text`` pads reports of fewer than 9 words with " EOF XXX" until they have
9 (docs/QUIRKS.md, A2). Their padding relies on pandas chained assignment and silently does nothing under
pandas >= 3; here it is explicit, behind ``Config.pad_short_reports`` (on by default).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from utils.data.bpe import ClipBPE
from utils.misc import import_transformers
from utils.weights_io import first_line

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
    """Reports as the network reads them.

    Attributes:
        tokens: ``[N, L]`` int64 token ids, padded (``L = token_len``).
        text_mask: ``[N, L]`` int64, 1 on the start token, the words and the end token.
        truncated: ``[N]`` bool, True where the text as tokenised (the authors' padding included) was cut to ``L``.
        words_cut: ``[N]`` bool, True where the report's own words do not fit ``L``; the authors' " EOF XXX"
            padding is cut whenever it does not fit, by design, and not counted here. Set by
            :func:`tokenize_reports`; None from a tokenizer call.
    """

    tokens: torch.Tensor
    text_mask: torch.Tensor
    truncated: torch.Tensor
    words_cut: Optional[torch.Tensor] = None

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


class HFReportTokenizer:
    """A transformers tokenizer (``text_encoder="hf"``, the encoder's own) behind :class:`ReportTokenizer`'s
    interface: ``[CLS]``, the word pieces, ``[SEP]``, padding to ``token_len``; a longer report is cut, its last
    token ``[SEP]``; ``text_mask`` is the attention mask. ``pad_short_reports`` applies the authors' padding too.

    Args:
        source: the encoder's folder (``save_pretrained``) or hub name: ``hf_text_model``.
        token_len: the context length ``L``, ``[CLS]`` and ``[SEP]`` included.
    """

    def __init__(self, source: str, token_len: int, pad_short_reports: bool = True):
        if token_len < 2:
            raise ValueError(f"token_len must be >= 2 ([CLS] and [SEP]), got {token_len}")
        auto_tokenizer = import_transformers().AutoTokenizer
        try:
            self._tokenizer = auto_tokenizer.from_pretrained(source)
        except (OSError, ValueError) as error:
            first = first_line(error)
            raise FileNotFoundError(f"cannot load the tokenizer of hf_text_model={source!r} ({first}); the folder "
                                    "needs the tokenizer files save_pretrained writes (docs/TEXT_ENCODERS.md)"
                                    ) from None
        if self._tokenizer.cls_token_id is None or self._tokenizer.sep_token_id is None:
            raise ValueError(f"the tokenizer of hf_text_model={source!r} has no [CLS]/[SEP] tokens: a BERT-family "
                             "tokenizer is expected")
        self.token_len = token_len
        self.pad_short_reports = pad_short_reports
        self.sot_token_id = self._tokenizer.cls_token_id
        self.eot_token_id = self._tokenizer.sep_token_id
        self.pad_token_id = self._tokenizer.pad_token_id or 0
        self.vocab_size = len(self._tokenizer)

    prepare = ReportTokenizer.prepare

    def token_strings(self, tokens: torch.Tensor) -> List[str]:
        """The word pieces at positions ``1..k`` of one report's ``[L]`` ids (``[SEP]`` at ``k + 1``), with the
        ``##`` of continued words dropped, for labelling per-token weights."""
        ids = []
        for token in tokens.tolist()[1:]:
            if token in (self.pad_token_id, self.eot_token_id):
                break
            ids.append(token)
        return [piece[2:] if piece.startswith("##") else piece for piece in self._tokenizer.convert_ids_to_tokens(ids)]

    def report_token_strings(self, tokens: torch.Tensor, report: str) -> List[str]:
        """:meth:`token_strings` without the authors' padding: the pieces of ``report``'s own words."""
        own = len(self._tokenizer.tokenize(report)) if isinstance(report, str) else 0
        return self.token_strings(tokens)[:own]

    def __call__(self, texts: Union[str, Sequence[str]]) -> TokenizedReports:
        if isinstance(texts, str):
            texts = [texts]
        tokens = torch.full((len(texts), self.token_len), self.pad_token_id, dtype=torch.long)
        text_mask = torch.zeros(len(texts), self.token_len, dtype=torch.long)
        truncated = torch.zeros(len(texts), dtype=torch.bool)
        encoded = self._tokenizer([self.prepare(text) for text in texts])["input_ids"] if texts else []
        for i, ids in enumerate(encoded):  # [CLS] pieces [SEP], uncut: cut as transformers' truncation does
            if len(ids) > self.token_len:
                ids = ids[: self.token_len - 1] + [self.eot_token_id]
                truncated[i] = True
            tokens[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            text_mask[i, : len(ids)] = 1
        return TokenizedReports(tokens=tokens, text_mask=text_mask, truncated=truncated)


Tokenizer = Union[ReportTokenizer, HFReportTokenizer]


@dataclass(frozen=True)
class TokenizerKind:
    """How to build one kind of tokenizer: ``build(token_len, pad_short_reports, **fields)``, where ``fields`` are
    the config fields it reads besides ``token_len`` and ``pad_short_reports``."""

    build: Callable[..., Tokenizer]
    fields: Tuple[str, ...] = ()


def require_hf_text_model(hf_text_model: Optional[str]) -> str:
    """``hf_text_model``, which ``text_encoder="hf"`` needs for its tower and its tokenizer; ``ValueError`` when
    unset."""
    if not hf_text_model:
        raise ValueError("text_encoder='hf' needs hf_text_model: a folder written by transformers' save_pretrained or "
                         "a hub name (docs/TEXT_ENCODERS.md)")
    return hf_text_model


def _hf_tokenizer(token_len: int, pad_short_reports: bool, hf_text_model: Optional[str] = None) -> Tokenizer:
    return HFReportTokenizer(require_hf_text_model(hf_text_model), token_len, pad_short_reports)


TOKENIZERS: Dict[str, TokenizerKind] = {
    "clip_bpe": TokenizerKind(ReportTokenizer),
    "hf": TokenizerKind(_hf_tokenizer, ("hf_text_model",)),
}
# Which tokenizer reads the reports of each text tower (``text_encoder``). The built-in towers are listed here so
# that the data layer works without the model; a new tower adds itself through nets.text_towers.register_text_tower.
TOWER_TOKENIZERS: Dict[str, str] = {"clip": "clip_bpe", "hf": "hf"}


def register_tower_tokenizer(tower: str, tokenizer: str) -> None:
    """Say that the text tower ``tower`` reads tokens of the tokenizer kind ``tokenizer`` (a :data:`TOKENIZERS`
    key)."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"no tokenizer kind {tokenizer!r}; there are {sorted(TOKENIZERS)}")
    if TOWER_TOKENIZERS.get(tower, tokenizer) != tokenizer:
        raise ValueError(f"text tower {tower!r} reads {TOWER_TOKENIZERS[tower]!r} tokens already")
    TOWER_TOKENIZERS[tower] = tokenizer


def tokenizer_kind(text_encoder: str) -> str:
    """The tokenizer kind of the text tower ``text_encoder``; ``ValueError`` names the towers there are."""
    try:
        return TOWER_TOKENIZERS[text_encoder]
    except KeyError:
        raise ValueError(f"text_encoder must be one of {sorted(TOWER_TOKENIZERS)}, got {text_encoder!r} (a new "
                         "tower registers itself when nets is imported: nets/text_towers.py)") from None


def tokenizer_fields(cfg) -> Dict[str, object]:
    """The config fields that decide ``cfg``'s tokenizer: the tower, ``token_len``, ``pad_short_reports`` and
    what the tokenizer kind reads (an hf encoder's folder). A data config scored with a model takes these from
    the model's config."""
    kind = TOKENIZERS[tokenizer_kind(cfg.text_encoder)]
    names = ("text_encoder", "token_len", "pad_short_reports") + kind.fields
    return {name: getattr(cfg, name) for name in names}


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(kind: str, fields: Tuple[Tuple[str, object], ...], token_len: int,
                      pad_short_reports: bool) -> Tokenizer:
    """One tokenizer per setting: building one reads a vocabulary (a fraction of a second)."""
    return TOKENIZERS[kind].build(token_len, pad_short_reports, **dict(fields))


def build_tokenizer(cfg, pad_short_reports: Optional[bool] = None) -> Tokenizer:
    """The tokenizer of ``cfg``'s text tower (:data:`TOWER_TOKENIZERS`), with ``cfg.token_len`` and
    ``cfg.pad_short_reports`` (or ``pad_short_reports`` when given)."""
    pad = cfg.pad_short_reports if pad_short_reports is None else pad_short_reports
    kind = tokenizer_kind(cfg.text_encoder)
    fields = tuple((name, getattr(cfg, name)) for name in TOKENIZERS[kind].fields)
    return _cached_tokenizer(kind, fields, cfg.token_len, pad)


def tokenize_reports(reports: Sequence[str], cfg, pad_short_reports: Optional[bool] = None) -> TokenizedReports:
    """Tokenise reports with the network's tokenizer (:func:`build_tokenizer`).

    Args:
        reports: N report strings (any Unicode; empty is allowed).
        cfg: the config naming the tokenizer, ``token_len`` (``L``) and ``pad_short_reports``.
        pad_short_reports: overrides the config's (the authors' " EOF XXX" padding of reports under 9 words).

    Returns:
        Tokens, text mask and which reports lost words to the cut (:class:`TokenizedReports` with ``words_cut``).
    """
    reports = list(reports)
    pad = cfg.pad_short_reports if pad_short_reports is None else pad_short_reports
    if not reports:
        empty = torch.zeros(0, cfg.token_len, dtype=torch.long)
        none = torch.zeros(0, dtype=torch.bool)
        return TokenizedReports(empty, empty.clone(), none, none.clone())
    tokenized = build_tokenizer(cfg, pad)(reports)
    if pad:
        # With padding on, `truncated` also flags reports whose padding alone overflowed; the words fit iff the
        # unpadded report fits.
        words_cut = build_tokenizer(cfg, False)(reports).truncated
    else:
        words_cut = tokenized.truncated
    return TokenizedReports(tokenized.tokens, tokenized.text_mask, tokenized.truncated, words_cut)
