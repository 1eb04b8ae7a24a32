"""The CLIP text tower (ViT-B/32's by default), and loading its weights from any form CLIP is published in.

Only the text half of CLIP is built: token and positional embeddings, pre-LN residual attention blocks with
QuickGELU, the final LayerNorm, the text projection and ``logit_scale``. Parameter names match OpenAI's, so the
tower sits under ``clip.`` in the RecLMIS state dict exactly where the authors' full CLIP put its text half.

The authors' ``encode_text`` differs from stock CLIP in one respect: its attention mask combines the causal mask
with a key-padding mask (a padded key is hidden from every query). Outputs differ from stock CLIP only at padded
positions, which later blocks do use (the interaction attends to them, ``text_module4`` convolves over them).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from nets.attention import MultiheadAttention
from utils.weights_io import read_tensors, sha256_of

logger = logging.getLogger(__name__)

VIT_B32_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
VIT_B32_URL = f"https://openaipublic.azureedge.net/clip/models/{VIT_B32_SHA256}/ViT-B-32.pt"
# Keys OpenAI's archives carry that are not tensors of the text tower.
_NON_TEXT_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class TextTowerShape:
    width: int = 512
    layers: int = 12
    heads: int = 8
    embed_dim: int = 512  # output width, after text_projection
    context_length: int = 77
    vocab_size: int = 49408

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor], prefix: str = "") -> "TextTowerShape":
        """Read the tower's shape off its tensors (OpenAI names, under ``prefix``), as CLIP's loader does."""
        width = state[prefix + "ln_final.weight"].shape[0]
        blocks = {k[len(prefix):].split(".")[2] for k in state if k.startswith(prefix + "transformer.resblocks.")}
        return cls(
            width=width,
            layers=len(blocks),
            heads=max(width // 64, 1),
            embed_dim=state[prefix + "text_projection"].shape[1],
            context_length=state[prefix + "positional_embedding"].shape[0],
            vocab_size=state[prefix + "token_embedding.weight"].shape[0],
        )


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                         ("c_proj", nn.Linear(width * 4, width))])
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class CLIPTextEncoder(nn.Module):
    """CLIP's text tower, returning the projected hidden state of every token.

    Args:
        shape: the tower's sizes (:class:`TextTowerShape`); ViT-B/32's by default.
    """

    def __init__(self, shape: TextTowerShape = TextTowerShape()):
        super().__init__()
        self.shape = shape
        # Given an empty weight, nn.Embedding skips its own normal_ init: _init_weights below does it. (On the
        # meta device normal_ would pull in torch's Python meta kernels: +160 MB resident.)
        self.token_embedding = nn.Embedding(shape.vocab_size, shape.width,
                                            _weight=torch.empty(shape.vocab_size, shape.width))
        self.positional_embedding = nn.Parameter(torch.empty(shape.context_length, shape.width))
        self.transformer = Transformer(shape.width, shape.layers, shape.heads)
        self.ln_final = nn.LayerNorm(shape.width)
        self.text_projection = nn.Parameter(torch.empty(shape.width, shape.embed_dim))
        # ln(100): the temperature the released CLIP weights carry, so a random tower scales CCL like a real one.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        if not self.positional_embedding.is_meta:  # a meta-device build takes its weights from a file
            self._init_weights()

    def freeze(self, frozen: bool) -> None:
        """Freeze the whole tower (``freeze_text_tower``, the authors' setting), its temperature included."""
        self.requires_grad_(not frozen)

    def _init_weights(self) -> None:
        """CLIP's initialisation (only used when no weights are loaded)."""
        width, layers = self.shape.width, self.shape.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def forward(self, tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            tokens: ``[B, L]`` int64 token ids, ``L <= context_length``.
            text_mask: ``[B, L]``, nonzero on real tokens (SOT, words, EOT), zero on padding.

        Returns:
            ``[B, L, embed_dim]``: ``ln_final(x) @ text_projection`` at every position, padded ones included.
        """
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # (B, L, W)
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        # (B, 1, L, L): query i sees key j when j <= i and j is not padding.
        attn_mask = causal[None, None] & text_mask.bool()[:, None, None, :]
        x = self.transformer(x, attn_mask)
        return self.ln_final(x) @ self.text_projection


def missing_weights_message(path: str) -> str:
    return (
        f"CLIP weights not found at {path!r}. Any form of OpenAI's CLIP ViT-B/32 works; where to get one today: "
        "(1) the Hugging Face hub's openai/clip-vit-base-patch32, a folder "
        "(huggingface-cli download openai/clip-vit-base-patch32 --local-dir nets/clip-vit-base-patch32, then "
        "--set clip_weights=nets/clip-vit-base-patch32); (2) open_clip's ViT-B-32 'openai' weights (its "
        "open_clip_pytorch_model.bin or .safetensors); (3) as a last resort OpenAI's archive "
        f"({VIT_B32_URL}, sha256 {VIT_B32_SHA256}; reported to answer 404 since 2025), saved as nets/ViT-B-32.pt. "
        "clip_weights=None builds a randomly initialised text tower instead (for tests and the demo); "
        "an authors' RecLMIS checkpoint already holds the text tower and needs no separate file."
    )


HF_PREFIX = "text_model."  # transformers' CLIPModel and CLIPTextModelWithProjection
# The files a transformers or open_clip folder (save_pretrained, the hub's layout) may hold, in order of preference.
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_HF_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
CLIP_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial logit scale, for files that do not carry one


def hf_clip_to_openai(state: Dict[str, torch.Tensor], path: str, p: str = HF_PREFIX) -> Dict[str, torch.Tensor]:
    """transformers' CLIP text tensors (``text_model.*``, ``text_projection.weight``; ``p`` is the prefix of the
    text model's own tensors) in OpenAI's names.

    q, k and v projections, kept apart there, are stacked into ``in_proj_weight``/``in_proj_bias``; the projection,
    a Linear there (``[embed, width]``), is transposed into OpenAI's matrix (``[width, embed]``).
    """
    if "text_projection.weight" not in state:
        raise ValueError(f"{path} holds transformers' CLIP text tower without its projection (text_projection.weight):"
                         " save CLIPModel or CLIPTextModelWithProjection, not CLIPTextModel")
    out = {"token_embedding.weight": state[p + "embeddings.token_embedding.weight"],
           "positional_embedding": state[p + "embeddings.position_embedding.weight"],
           "ln_final.weight": state[p + "final_layer_norm.weight"],
           "ln_final.bias": state[p + "final_layer_norm.bias"],
           "text_projection": state["text_projection.weight"].t().contiguous(),
           "logit_scale": state.get("logit_scale", torch.tensor(CLIP_LOGIT_SCALE))}
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith(p + "encoder.layers.")})
    for i in layers:
        hf, ours = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{ours}attn.in_proj_{kind}"] = torch.cat(
                [state[f"{hf}self_attn.{name}_proj.{kind}"] for name in ("q", "k", "v")])
            for theirs, mine in _HF_LAYER.items():
                out[f"{ours}{mine}.{kind}"] = state[f"{hf}{theirs}.{kind}"]
    return out


def _unwrap(state, path: str) -> Dict[str, torch.Tensor]:
    """The tensor dict of a loaded file: a ``state_dict`` or ``model`` wrapper and a ``module.`` prefix removed."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a CLIP state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _folder_file(path: str) -> str:
    """The weights file of a transformers or open_clip folder, checking transformers' activation."""
    config_path = os.path.join(path, "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
        text = config.get("text_config", config)
        act = text.get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise ValueError(f"{config_path}: the text tower uses hidden_act={act!r}; this CLIP tower is OpenAI's, "
                             "with quick_gelu (openai/clip-vit-base-patch32 and its siblings)")
        width, heads = text.get("hidden_size"), text.get("num_attention_heads")
        if width and heads and heads != max(width // 64, 1):
            raise ValueError(f"{config_path}: the text tower has {heads} attention heads, but CLIP's towers have "
                             f"width / 64 heads, which is how the heads are read off the tensors (width {width} / 64 "
                             f"= {max(width // 64, 1)}); this is not a CLIP text tower we can rebuild")
    for name in FOLDER_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f"{path} is a folder without CLIP weights: expected one of {', '.join(FOLDER_FILES)} "
                            "(as transformers' save_pretrained or the hub writes them)")


def load_clip_text_state(path: str, check_hash: bool = True) -> Dict[str, torch.Tensor]:
    """Read the text-tower tensors (OpenAI names, fp32) from a CLIP file or folder, its form detected:

    - OpenAI's TorchScript archive (``ViT-B-32.pt``; its tensors read from the zip without the JIT,
      :func:`utils.weights_io.read_torchscript_tensors`, which runs no code from the file);
    - a state dict in OpenAI's names (``.pt``, ``.bin`` or ``.safetensors``; open_clip's checkpoint of
      ``ViT-B-32``/``openai``), with or without the vision tensors, a ``state_dict``/``model`` wrapper or a
      ``module.`` prefix;
    - transformers' ``CLIPModel`` or ``CLIPTextModelWithProjection`` (a ``save_pretrained`` folder, or its
      ``model.safetensors``/``pytorch_model.bin``), converted to OpenAI's names (:func:`hf_clip_to_openai`).

    Pickled files are read with ``weights_only=True``. The vision tower's tensors are dropped.

    Raises:
        FileNotFoundError: ``path`` does not exist; the message says where to get the file.
        ValueError: the file holds no CLIP text tower; the message says what it found and what was expected.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(missing_weights_message(path))
    if os.path.isdir(path):
        path = _folder_file(path)
    if check_hash and os.path.basename(path) == "ViT-B-32.pt":
        actual = sha256_of(path)
        if actual != VIT_B32_SHA256:
            logger.warning("%s has sha256 %s, not the published %s: it may be corrupt or another model",
                           path, actual, VIT_B32_SHA256)
    state = read_tensors(path)  # safetensors, the TorchScript archive without the JIT, or weights_only
    state = _unwrap(state, path)
    for prefix in (HF_PREFIX, ""):  # CLIPModel and ...WithProjection; a bare CLIPTextModel saves without a prefix
        if prefix + "final_layer_norm.weight" in state and prefix + "embeddings.token_embedding.weight" in state:
            state = hf_clip_to_openai(state, path, prefix)
            break
    if "ln_final.weight" not in state:
        found = ", ".join(sorted(state)[:4]) or "no tensors"
        raise ValueError(f"{path} holds no CLIP text tower: found {found}{', ...' if len(state) > 4 else ''}; "
                         "expected OpenAI's names (ln_final.weight, transformer.resblocks.*) as in OpenAI's "
                         "ViT-B-32.pt or open_clip's checkpoint, or transformers' (text_model.final_layer_norm.weight)"
                         " as in openai/clip-vit-base-patch32")
    return {k: v.float() for k, v in state.items() if not k.startswith("visual.") and k not in _NON_TEXT_KEYS}


def build_text_encoder(clip_weights: Optional[str], random_shape: TextTowerShape) -> CLIPTextEncoder:
    """The text tower with weights from ``clip_weights``, or randomly initialised with ``random_shape``."""
    if clip_weights is None:
        return CLIPTextEncoder(random_shape)
    state = load_clip_text_state(clip_weights)
    encoder = CLIPTextEncoder(TextTowerShape.from_state_dict(state))
    encoder.load_state_dict(state, strict=True)
    logger.info("loaded the CLIP text tower from %s", clip_weights)
    return encoder
