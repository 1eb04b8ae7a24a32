"""A BERT-family text tower from transformers (``text_encoder="hf"``): PubMedBERT, CXR-BERT, BioClinicalBERT, ...

The encoder's last hidden states ``[B, L, H]`` are projected to the model's width ``D`` (``text_embed_dim``) by a
learned linear layer, so every later block (interaction, reconstruction, contrastive loss, interest maps) works as
with CLIP. ``freeze_text_tower`` freezes the encoder (and the contrastive temperature, as for CLIP); the projection
always trains. Tokens come from the encoder's own tokenizer (:class:`utils.data.tokenizer.HFReportTokenizer`).

transformers is an optional dependency: only this tower needs it. docs/TEXT_ENCODERS.md says where to get each
encoder, its licence and its size.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from nets.text_encoder import TextTowerShape
from utils.misc import import_transformers
from utils.weights_io import first_line

logger = logging.getLogger(__name__)


class HFTextEncoder(nn.Module):
    """A transformers encoder whose hidden states are projected to ``embed_dim``.

    Args:
        encoder: a transformers model returning ``last_hidden_state`` (``AutoModel`` of a BERT-family checkpoint).
        embed_dim: the model's width ``D``.

    The interface is :class:`nets.text_encoder.CLIPTextEncoder`'s: ``shape``, ``logit_scale``, :meth:`freeze` and
    ``forward(tokens, text_mask) -> [B, L, D]``.
    """

    def __init__(self, encoder: nn.Module, embed_dim: int):
        super().__init__()
        cfg = encoder.config
        self.model = encoder
        self.proj = nn.Linear(cfg.hidden_size, embed_dim)
        # ln(100), the temperature of a released CLIP, so the contrastive loss is scaled as with CLIP.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        self.shape = TextTowerShape(width=cfg.hidden_size, layers=cfg.num_hidden_layers,
                                    heads=cfg.num_attention_heads, embed_dim=embed_dim,
                                    context_length=cfg.max_position_embeddings, vocab_size=cfg.vocab_size)

    def freeze(self, frozen: bool) -> None:
        """Freeze the encoder and the temperature (``freeze_text_tower``); the projection stays trainable."""
        self.model.requires_grad_(not frozen)
        self.logit_scale.requires_grad_(not frozen)
        self.proj.requires_grad_(True)

    def forward(self, tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            tokens: ``[B, L]`` token ids of the encoder's tokenizer.
            text_mask: ``[B, L]``, nonzero on real tokens ([CLS], words, [SEP]), zero on padding.

        Returns:
            ``[B, L, D]``: the projected hidden state of every position.
        """
        hidden = self.model(input_ids=tokens, attention_mask=text_mask.long()).last_hidden_state  # (B, L, H)
        return self.proj(hidden)  # (B, L, D); frozen encoder parameters build no graph, the projection does


def build_hf_text_encoder(source: str, embed_dim: int, pretrained: bool = True) -> HFTextEncoder:
    """The encoder of ``source`` (a folder written by transformers' ``save_pretrained``, or a hub name, which
    transformers downloads or takes from its cache), with a new projection to ``embed_dim``.

    Args:
        pretrained: load the encoder's weights; False builds it from its config alone, randomly initialised (a
            checkpoint of ours then provides every weight).

    Raises:
        ImportError: transformers is not installed.
        FileNotFoundError: ``source`` cannot be loaded; the message says what to check.
    """
    transformers = import_transformers()
    try:
        if pretrained:
            encoder = transformers.AutoModel.from_pretrained(source)
        else:
            encoder = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(source))
    except (OSError, ValueError) as error:
        first = first_line(error)
        raise FileNotFoundError(
            f"cannot load the text encoder hf_text_model={source!r} ({first}). Give a folder written by "
            "transformers' save_pretrained (config.json and the weights), or a hub name while online; "
            "docs/TEXT_ENCODERS.md lists the encoders and where to get them") from None
    if not hasattr(encoder.config, "hidden_size") or not hasattr(encoder.config, "max_position_embeddings"):
        raise ValueError(f"hf_text_model={source!r} is a {type(encoder).__name__}, not a BERT-family encoder "
                         "(no hidden_size or max_position_embeddings in its config)")
    logger.info("text encoder: %s (%s, hidden size %d)%s", source, type(encoder).__name__,
                encoder.config.hidden_size, "" if pretrained else ", weights from the checkpoint")
    return HFTextEncoder(encoder, embed_dim)
