"""The model registry: each segmentation network, by the name ``Config.model`` gives it.

A kind says how its network is built, the folder its sessions go to (``<output_root>/<task_name>/<folder>/``, and
its best checkpoint ``best_model-<folder>.pth.tar``, as LViT's code names it), whether it has a text tower, the
losses it trains with, what sizes it accepts, and how a checkpoint of its authors' code becomes its state dict.
Everything else (data, augmentation, checkpoints, training, ``test.py``, ``predict``, ``tools.compare``) is
shared.

Every network follows one contract, RecLMIS's: ``forward(images, text_tokens, text_mask, return_aux=None,
return_weights=False, text_clip=None)`` returns a dict whose ``logits`` is ``[B, 1, H, W]``; ``text_tower`` is the
text tower (None for an image-only model), ``encode_text`` its features (cached at inference). A network that does
not read the report takes the same arguments and ignores them. A network with interest maps (RecLMIS) returns
``word_weights`` and ``patch_weights`` when asked; the others leave them out, and figures do without them.

A new model is one module that defines the network and calls :func:`register_model` once, imported by
``nets/__init__.py``. The built-in kinds: ``reclmis`` (:mod:`nets.reclmis`, the default), ``unet``
(:mod:`nets.unet_baseline`, LViT's image-only U-Net), ``lvit`` (:mod:`nets.lvit`) and ``guidedecoder``
(:mod:`nets.guidedecoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import nn


def no_check(config) -> None:
    """The check of a kind that accepts every config (models and text towers alike)."""
    return None


@dataclass(frozen=True)
class ModelKind:
    """One kind of segmentation network.

    Attributes:
        name: the ``model`` value that selects it.
        folder: its sessions' folder under the task, and the tail of its best checkpoint's name.
        build: ``build(config, text_tower=None) -> model``; ``text_tower`` an already built tower to use (a
            checkpoint's rebuild), None builds the one the config names.
        has_text_tower: whether it reads the report, through a text tower of the registry held as ``clip``
            (False: the image-only control).
        losses: the loss terms and their weights (``{"dice": 0.5, "balanced_bce": 0.5}``; the names of
            :mod:`utils.training.losses`), or None for RecLMIS's losses with the config's ``loss_weight_*``.
        check: raises ``ValueError`` naming the field when the config's sizes cannot build this network (called
            before a run starts and in the constructor).
        paper: where the network comes from, for the log and the docs.
        authors_state: ``authors_state(state, model) -> state``: a checkpoint written by the peer's own code (one
            that saved no config) made into this network's state dict, ``model`` being this network built from the
            config with its text tower's weights; None: their names are ours as they are.
    """

    name: str
    folder: str
    build: Callable[..., nn.Module]
    has_text_tower: bool = True
    losses: Optional[Mapping[str, float]] = None
    check: Callable[[object], None] = no_check
    paper: str = ""
    authors_state: Optional[Callable[[Mapping, nn.Module], Dict[str, torch.Tensor]]] = None


MODELS: Dict[str, ModelKind] = {}


def register_model(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry; a second kind of the same name or folder is refused."""
    for other in MODELS.values():
        if other is not kind and (other.name == kind.name or other.folder == kind.folder):
            raise ValueError(f"a model named {kind.name!r} or with the folder {kind.folder!r} is registered already")
    MODELS[kind.name] = kind
    return kind


def model_kind(name: str) -> ModelKind:
    """The registered kind called ``name``; ``ValueError`` lists the kinds there are."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}") from None


class Network(nn.Module):
    """What every network has: its ``config``, ``text_tower`` (None here: a network that reads reports has one,
    :class:`nets.text_towers.ReportReader`) and :meth:`check_inputs`."""

    text_tower = None

    def check_inputs(self, images: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor) -> None:
        """Raise ``ValueError`` naming what is wrong with a batch for this network (:func:`check_batch`)."""
        tower = self.text_tower
        check_batch(self.config, images, text_tokens, text_mask,
                    None if tower is None else tower.shape.context_length)


def with_built_tower(state: Mapping[str, torch.Tensor], model: nn.Module,
                     file_prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A peer's own state dict completed with ``model``'s text tower, for networks whose own code runs the text
    encoder outside the network (LViT) or holds it under another name (GuideDecoder's ``text_encoder.model.``).

    The tower's tensors come from ``model`` (built from the config's weights) unless the file holds them under
    ``file_prefix``, which is renamed to the tower's encoder (``clip.model.``). Their networks read the encoder's
    hidden states as they are, so an hf tower's projection becomes the identity (``text_embed_dim`` must then be
    the encoder's width). Every other tensor is the file's.
    """
    tower = {f"clip.{name}": tensor for name, tensor in model.text_tower.state_dict().items()}
    converted = dict(tower)
    for name, tensor in state.items():
        if file_prefix and name.startswith(file_prefix):
            name = "clip.model." + name[len(file_prefix):]
        converted[name] = tensor
    if "clip.proj.weight" in tower:
        weight = tower["clip.proj.weight"]
        if weight.shape[0] != weight.shape[1]:
            raise ValueError(f"a checkpoint of the peer's own code reads the text encoder's {weight.shape[1]}-wide "
                             f"hidden states as they are: set text_embed_dim={weight.shape[1]} (not "
                             f"{weight.shape[0]})")
        converted["clip.proj.weight"] = torch.eye(weight.shape[0], dtype=weight.dtype)
        converted["clip.proj.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return converted


def check_batch(config, images: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                context_length: Optional[int] = None) -> None:
    """Raise ``ValueError`` naming what is wrong with a batch for a network built from ``config``.

    Args:
        context_length: the text tower's, when the network has one (more tokens than it are refused).
    """
    expected = (config.n_channels, config.img_size, config.img_size)
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must be [B, {expected[0]}, {expected[1]}, {expected[2]}] (img_size="
                         f"{config.img_size}), got {list(images.shape)}")
    if text_tokens.dim() != 2 or text_tokens.shape[0] != images.shape[0]:
        raise ValueError(f"text_tokens must be [B, L] with B = {images.shape[0]} images, got "
                         f"{list(text_tokens.shape)}")
    if context_length is not None and text_tokens.shape[1] > context_length:
        raise ValueError(f"text_tokens has {text_tokens.shape[1]} tokens, more than the text tower's context "
                         f"length {context_length}")
    if text_mask.shape != text_tokens.shape:
        raise ValueError(f"text_mask {list(text_mask.shape)} must have the shape of text_tokens "
                         f"{list(text_tokens.shape)}")
    if text_tokens.is_floating_point():
        raise ValueError(f"text_tokens must hold integer token ids, got {text_tokens.dtype}")
