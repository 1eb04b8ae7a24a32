"""The text-tower registry: each kind of text tower, by the name ``Config.text_encoder`` gives it.

A kind says how its tower is built for a new model, which tokenizer reads its reports, how a checkpoint rebuilds
it, whether a latest checkpoint may leave it out (to be rebuilt from a weights file), and how the log names it.
The two built-in kinds are registered at the end of this module: ``clip`` (:mod:`nets.text_encoder`, the authors')
and ``hf`` (:mod:`nets.hf_encoder`, a BERT-family encoder). A new tower is one module that defines the tower and
calls :func:`register_text_tower` once, imported by ``nets/__init__.py`` (tests/test_text_towers.py registers a
tiny one and trains, tests and predicts with it).

Whatever the kind, the model holds its tower under the authors' attribute name ``clip`` (their checkpoints'
``clip.*`` keys); :attr:`nets.reclmis.RecLMIS.text_tower` is the same module by a name that says what it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from nets.hf_encoder import build_hf_text_encoder
from nets.models import Network, no_check
from nets.text_encoder import TextTowerShape, build_text_encoder
from nets.weights import text_tower_shape
from utils.data.tokenizer import register_tower_tokenizer, require_hf_text_model


def _never(config) -> bool:
    return False


@dataclass(frozen=True)
class TextTowerKind:
    """One kind of text tower.

    Attributes:
        name: the ``text_encoder`` value that selects it.
        tokenizer: the tokenizer kind that reads its reports (:data:`utils.data.tokenizer.TOKENIZERS`).
        build: ``build(config) -> tower``, with pretrained weights where the config names them. A tower has
            ``shape`` (:class:`nets.text_encoder.TextTowerShape`), ``logit_scale``, ``freeze(frozen)`` and
            ``forward(tokens, text_mask) -> [B, L, D]``.
        rebuild: ``rebuild(config, state, saved_config) -> (config, tower or None)`` for a checkpoint whose tensors
            are ``state``: the config made to fit the tensors, and a tower built on the CPU, or None when the whole
            model can be built on the meta device and take every tensor from the file. ``saved_config``: the
            checkpoint saved its config (else it is the authors' and ``config`` a guess).
        describe: one line naming the tower for the log (paths absolute).
        omitted_from_latest: whether a latest checkpoint may leave the frozen tower out, because ``build``
            rebuilds it bit for bit from a file the config names (checked by digest on resume).
        check: raises ``ValueError`` naming the field when the config cannot build this tower (called before a
            run starts, so the error comes before any work).
    """

    name: str
    tokenizer: str
    build: Callable[[object], nn.Module]
    rebuild: Callable[[object, Mapping, bool], Tuple[object, Optional[nn.Module]]]
    describe: Callable[[object], str]
    omitted_from_latest: Callable[[object], bool] = _never
    check: Callable[[object], None] = no_check


TEXT_TOWERS: Dict[str, TextTowerKind] = {}


def register_text_tower(kind: TextTowerKind) -> TextTowerKind:
    """Add ``kind`` to the registry (and its tokenizer to the data layer's); a second kind of the same name is
    refused."""
    if kind.name in TEXT_TOWERS and TEXT_TOWERS[kind.name] is not kind:
        raise ValueError(f"a text tower named {kind.name!r} is registered already")
    register_tower_tokenizer(kind.name, kind.tokenizer)  # first: a refused tokenizer leaves nothing registered
    TEXT_TOWERS[kind.name] = kind
    return kind


def text_tower_kind(name: str) -> TextTowerKind:
    """The registered kind called ``name``; ``ValueError`` lists the kinds there are."""
    try:
        return TEXT_TOWERS[name]
    except KeyError:
        raise ValueError(f"text_encoder must be one of {sorted(TEXT_TOWERS)}, got {name!r}") from None


class ReportReader(Network):
    """A network that reads reports through a text tower of the registry, held under the authors' name ``clip``.

    :meth:`attach_text_tower` builds (or takes) the tower and freezes it as ``freeze_text_tower`` says; a frozen
    tower stays in eval mode whatever mode the network is put in.
    """

    def attach_text_tower(self, config, tower: Optional[nn.Module] = None) -> None:
        """Register ``tower`` (None: the one ``config.text_encoder`` names, built) as ``clip`` and freeze it; a
        ``token_len`` beyond the tower's context length is refused."""
        self.clip = tower if tower is not None else text_tower_kind(config.text_encoder).build(config)
        if config.token_len > self.clip.shape.context_length:
            raise ValueError(f"token_len {config.token_len} exceeds the text tower's context length "
                             f"{self.clip.shape.context_length}")
        self.freeze_text_tower = config.freeze_text_tower
        self.clip.freeze(config.freeze_text_tower)

    @property
    def text_tower(self) -> nn.Module:
        """The text tower (CLIP, or whichever kind ``text_encoder`` names); registered as ``clip``, the name the
        authors' RecLMIS checkpoints carry."""
        return self.clip

    def train(self, mode: bool = True) -> "ReportReader":
        """Set train/eval mode; a frozen text tower always stays in eval mode."""
        super().train(mode)
        if self.freeze_text_tower:
            self.clip.eval()
        return self

    def encode_text(self, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The text tower's hidden states ``[B, L, D]``. No graph is built through frozen parameters (the tokens are
        integers), so a frozen CLIP tower costs no backward, and an hf tower's projection still trains."""
        return self.clip(text_tokens, text_mask)


# ---- the built-in kinds ----

def random_tower_shape(config) -> TextTowerShape:
    """The shape of a randomly initialised CLIP tower (``clip_weights=None``) from the config's ``clip_*`` fields."""
    return TextTowerShape(width=config.clip_width, layers=config.clip_layers, heads=config.clip_heads,
                          embed_dim=config.text_embed_dim, context_length=config.clip_context_length,
                          vocab_size=config.clip_vocab_size)


def _build_clip(config) -> nn.Module:
    return build_text_encoder(config.clip_weights, random_tower_shape(config))


def _rebuild_clip(config, state: Mapping, saved_config: bool):
    shape = text_tower_shape(state)
    # Heads leave no trace in the tensors: a saved config knows them; else CLIP's rule (width / 64) holds.
    heads = config.clip_heads if saved_config else shape.heads
    config = config.replace(clip_weights=None, clip_width=shape.width, clip_layers=shape.layers, clip_heads=heads,
                            text_embed_dim=shape.embed_dim, clip_context_length=shape.context_length,
                            clip_vocab_size=shape.vocab_size)
    return config, None  # every tensor is in the file: the model can be built on the meta device


def _describe_clip(config) -> str:
    return f"CLIP {os.path.abspath(config.clip_weights)}" if config.clip_weights else "none (random CLIP tower)"


def _check_hf(config) -> None:
    require_hf_text_model(config.hf_text_model)


def _build_hf(config) -> nn.Module:
    _check_hf(config)
    return build_hf_text_encoder(config.hf_text_model, config.text_embed_dim)


def _rebuild_hf(config, state: Mapping, saved_config: bool):
    # Built from its own config (hf_text_model's config.json) on the CPU, the meta device being no use for it:
    # transformers keeps some buffers out of the state dict, so the file cannot fill them.
    _check_hf(config)
    return config, build_hf_text_encoder(config.hf_text_model, config.text_embed_dim, pretrained=False)


CLIP = register_text_tower(TextTowerKind(
    name="clip", tokenizer="clip_bpe", build=_build_clip, rebuild=_rebuild_clip, describe=_describe_clip,
    omitted_from_latest=lambda config: config.clip_weights is not None))
HF = register_text_tower(TextTowerKind(
    name="hf", tokenizer="hf", build=_build_hf, rebuild=_rebuild_hf, check=_check_hf,
    describe=lambda config: f"hf encoder {config.hf_text_model}"))
