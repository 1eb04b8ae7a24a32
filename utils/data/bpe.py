"""CLIP's byte-level byte-pair encoding, written for this project (no open_clip at run time).

The vocabulary file ``bpe_simple_vocab_16e6.txt.gz`` beside this module is OpenAI CLIP's (MIT licence; the copy
that open-clip-torch ships, credited in NOTICE). The rules are CLIP's, and ``tests/test_data_tokenizer.py`` checks them
token for token against open_clip's tokenizer on many reports:

1. text is repaired with ftfy, HTML entities are unescaped (twice), whitespace runs become one space, and the text
   is lower-cased;
2. it is split into pieces: the special tokens, the English contractions ('s, 't, 're, 've, 'm, 'll, 'd), runs of
   letters, single digits, and runs of other non-space characters;
3. each piece's UTF-8 bytes are mapped to printable characters (one per byte), the last one marked as a word end
   (``</w>``), and the pair of neighbours with the best (lowest) merge rank is merged, again and again, until no
   neighbouring pair has a rank;
4. each resulting symbol is looked up in the vocabulary: the 256 byte characters, the same with ``</w>``, the
   merges in rank order, then ``<start_of_text>`` and ``<end_of_text>`` (49,408 ids).
"""

from __future__ import annotations

import functools
import gzip
import html
import os
import re
from typing import Dict, List, Tuple

import ftfy
import regex

VOCAB_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
N_MERGES = 49152 - 256 - 2  # the merges CLIP uses: its vocabulary is 49,408 ids in all
START, END = "<start_of_text>", "<end_of_text>"
WORD_END = "</w>"
_PIECES = regex.compile(r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
                        regex.IGNORECASE)


@functools.lru_cache(maxsize=1)
def byte_characters() -> Dict[int, str]:
    """Byte value -> a printable character standing for it.

    The printable Latin-1 bytes ("!" to "~", "¡" to "¬", "®" to "ÿ") stand for themselves; the 68 others (space,
    control codes, ...) take the characters from U+0100 on, in byte order, so no byte maps to whitespace.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clean(text: str) -> str:
    """CLIP's text normalisation: ftfy repair, HTML unescaping, single spaces, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


class ClipBPE:
    """The tokenizer proper: ``encode(text) -> ids`` and the tables to turn ids back into text.

    Args:
        vocab_file: the gzipped merge list (the first line is a header).

    Raises:
        FileNotFoundError: the vocabulary file is missing (it is part of the repository).
    """

    def __init__(self, vocab_file: str = VOCAB_FILE):
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"CLIP's BPE vocabulary {vocab_file!r} is missing; it is part of this repository "
                                    "(utils/data/bpe_simple_vocab_16e6.txt.gz): restore it with git checkout")
        with gzip.open(vocab_file, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")[1:N_MERGES + 1]
        merges: List[Tuple[str, str]] = [tuple(line.split()) for line in lines]
        self.byte_encoder = byte_characters()
        self.byte_decoder = {char: b for b, char in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + WORD_END for s in symbols] + ["".join(pair) for pair in merges] + [START, END]
        self.encoder: Dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.decoder: Dict[int, str] = dict(enumerate(vocab))
        self.ranks: Dict[Tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self.sot_token_id = self.encoder[START]
        self.eot_token_id = self.encoder[END]
        self.vocab_size = len(vocab)
        self._cache: Dict[str, List[str]] = {}

    def merge(self, piece: str) -> List[str]:
        """The BPE symbols of one piece (its bytes already mapped to characters)."""
        if piece in self._cache:
            return self._cache[piece]
        symbols = list(piece[:-1]) + [piece[-1] + WORD_END]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._cache[piece] = symbols
        return symbols

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` (no start or end token added)."""
        ids: List[int] = []
        for piece in _PIECES.findall(clean(text)):
            if piece in (START, END):
                ids.append(self.encoder[piece])
                continue
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.merge(mapped))
        return ids

    def decode(self, ids: List[int]) -> str:
        """The text of ``ids``: word ends become spaces; bytes that are not valid UTF-8 become U+FFFD."""
        raw = bytearray()
        for token in (self.decoder[i] for i in ids):
            if token in (START, END):
                raw += token.encode() + b" "
                continue
            word_end = token.endswith(WORD_END)
            raw += bytes(self.byte_decoder[char] for char in (token[:-len(WORD_END)] if word_end else token))
            if word_end:
                raw += b" "
        return raw.decode("utf-8", errors="replace").strip()
