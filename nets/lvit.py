"""LViT (``model="lvit"``): Li et al., "LViT: Language meets Vision Transformer in Medical Image Segmentation",
IEEE TMI 2023 (github HUANGLIZI/LViT, ``nets/LViT.py`` and ``nets/Vit.py``), at any size.

A U-Net whose four encoder levels each have a one-block ViT beside them. The report enters once: its token
features go through four Conv1d (tower width -> 8C -> 4C -> 2C -> C), and at the first level a Conv1d over the
token axis (``CTBN3``, tokens -> patches) adds them to the patch embeddings. Each deeper ViT embeds its level's
feature map and concatenates the shallower ViT's tokens; an up path of four more ViT blocks brings the deep tokens
back, and each level's tokens, upsampled to its map (``reconstruct*``), are added to the U-Net's skip before a
decoder with pixel-level attention.

Their code fixes the sizes to 224 px, ``base_channel`` 64 and 10 BERT tokens; here level ``k`` (0 to 3) has
``C * 2**k`` channels, the map ``img_size / 2**k`` and patches of ``16 / 2**k`` pixels, so every level has
``(img_size / 16)**2`` patches (196 at 224 px), and ``CTBN3`` takes ``token_len`` tokens. At their sizes the
parameter names and shapes are theirs (tests/data/lvit_state_dict.tsv, from their code), and so is the output on
the same weights (tests/data/lvit_reference.npz). Their modules that the forward pass never uses are kept, so that
their checkpoints load: each ViT's ``norm``, ``head`` and the ``CTBN``/``CTBN2``/``CTBN3`` it does not call, and the
network's ``pix_module1..4``.

The text: LViT reads BERT-base's token embeddings (768 wide) of the report, computed outside the network; here any
tower of the registry gives them (``text_encoder="hf"`` with a BERT folder is theirs; the CPU recipe uses the same
random frozen CLIP tower as RecLMIS), held as ``clip``. Their semi-supervised pseudo-label iteration is not
included. Their network ends in a sigmoid; this one returns the logits.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nets.interaction import ConvTransBN, Embeddings
from nets.models import ModelKind, register_model, with_built_tower
from nets.text_towers import ReportReader
from nets.unet import ConvBatchNorm, DownBlock, PixLevelModule, UpBlockAttention
from nets.unet_baseline import LVIT_LOSSES

LEVELS = 4


class MLP(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> GELU -> dropout (their GELU after fc2 too), Xavier weights, tiny biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(0.1)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.gelu(self.fc1(x)))
        return self.dropout(F.gelu(self.fc2(x)))


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` projection (with bias) and an output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"LViT's ViT width {dim} must be a multiple of its {heads} heads (base_channel)")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, c/h)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int = 8, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _across_tokens(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` over the channel axis of token features ``[B, N, C]`` (a Conv1d wants ``[B, C, N]``)."""
    return module(x.transpose(1, 2)).transpose(1, 2)


class VisionTransformer(nn.Module):
    """One level's ViT branch: a one-block transformer, used once on the way down and once on the way up.

    Args:
        level: 0 (full resolution) to 3; the first level takes the report, the last starts the way up.
        channels: the level's width (``C * 2**level``).
        patch_size: ``16 / 2**level``; n_patches: the same at every level.
        n_tokens: the report's token count (``token_len``).
    """

    def __init__(self, level: int, channels: int, patch_size: int, n_patches: int, n_tokens: int):
        super().__init__()
        self.first, self.last = level == 0, level == LEVELS - 1
        self.embeddings = Embeddings(channels, n_patches, dropout=0.1, patch_size=patch_size)
        self.norm = nn.LayerNorm(channels)  # unused, as in their code
        self.Encoder_blocks = nn.Sequential(Block(channels))
        self.head = nn.Linear(channels, 1)  # unused, as in their code
        self.CTBN = ConvTransBN(channels, channels // 2)
        self.CTBN2 = ConvTransBN(2 * channels, channels)
        self.CTBN3 = ConvTransBN(n_tokens, n_patches)

    def forward(self, x: torch.Tensor, other: Optional[torch.Tensor], text: Optional[torch.Tensor] = None,
                up: bool = False) -> torch.Tensor:
        """:meth:`down` (``other``: the shallower level's tokens) or, with ``up``, :meth:`up` (``other``: the
        deeper level's); a call, so that hooks see each use."""
        return self.up(x, other) if up else self.down(x, other, text)

    def down(self, x: torch.Tensor, shallower: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The way down: the level's map ``[B, C, h, w]`` -> tokens ``[B, N, C]``; the first level adds the report
        (``text`` ``[B, L, C]``), the others halve their width and concatenate the shallower level's tokens."""
        x = self.embeddings(x)
        if self.first:
            return self.Encoder_blocks(x + self.CTBN3(text))  # CTBN3: tokens as channels -> patches
        x = _across_tokens(self.CTBN, self.Encoder_blocks(x))  # (B, N, C/2)
        return torch.cat([x, shallower], dim=2)  # (B, N, C)

    def up(self, x: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        """The way up: the level's tokens through the block, plus the deeper level's tokens narrowed to this
        width (the last level has none)."""
        x = self.Encoder_blocks(x)
        if self.last:
            return x
        return x + _across_tokens(self.CTBN2, deeper)


class Reconstruct(nn.Module):
    """Tokens ``[B, N, C]`` -> map: nearest upsampling by ``scale``, 1x1 conv, BatchNorm, ReLU."""

    def __init__(self, channels: int, scale: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.norm = nn.BatchNorm2d(channels)
        self.activation = nn.ReLU()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side = math.isqrt(n)
        x = x.transpose(1, 2).reshape(b, c, side, side)
        x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return self.activation(self.norm(self.conv(x)))


def check_lvit(config) -> None:
    """LViT's widths: ``base_channel`` a multiple of 8 (its first ViT level has 8 heads)."""
    if config.base_channel % 8:
        raise ValueError(f"model='lvit' needs base_channel to be a multiple of 8 (its first ViT level has 8 "
                         f"attention heads), got {config.base_channel}")


class LViT(ReportReader):
    """LViT at the config's sizes: ``img_size``, ``n_channels``, ``base_channel``, ``token_len``, the text tower
    (``text_encoder``, ``clip_*`` or ``hf_text_model``, ``freeze_text_tower``); ``text_tower`` an already built one."""

    def __init__(self, config, text_tower: nn.Module = None):
        super().__init__()
        config.validate()
        check_lvit(config)
        self.config = config
        self.attach_text_tower(config, text_tower)
        c, size = config.base_channel, config.img_size
        n_patches = (size // 16) ** 2
        self.inc = ConvBatchNorm(config.n_channels, c)
        widths = [c * 2 ** level for level in range(LEVELS)]
        names = ["", "1", "2", "3"]  # their attribute names: downVit, downVit1, ...
        for way in ("down", "up"):
            for level, (name, width) in enumerate(zip(names, widths)):
                setattr(self, f"{way}Vit{name}", VisionTransformer(level, width, 16 // 2 ** level, n_patches,
                                                                   config.token_len))
        self.down1 = DownBlock(c, 2 * c)
        self.down2 = DownBlock(2 * c, 4 * c)
        self.down3 = DownBlock(4 * c, 8 * c)
        self.down4 = DownBlock(8 * c, 8 * c)
        self.up4 = UpBlockAttention(8 * c, 8 * c, 4 * c)
        self.up3 = UpBlockAttention(4 * c, 4 * c, 2 * c)
        self.up2 = UpBlockAttention(2 * c, 2 * c, c)
        self.up1 = UpBlockAttention(c, c, c)
        self.outc = nn.Conv2d(c, config.n_labels, kernel_size=1)
        for level, width in enumerate(widths):
            setattr(self, f"reconstruct{level + 1}", Reconstruct(width, 16 // 2 ** level))
        for level, width in enumerate(widths):
            setattr(self, f"pix_module{level + 1}", PixLevelModule(width))  # unused, as in their code
        d = self.text_tower.shape.embed_dim
        self.text_module4 = nn.Conv1d(d, 8 * c, kernel_size=3, padding=1)
        self.text_module3 = nn.Conv1d(8 * c, 4 * c, kernel_size=3, padding=1)
        self.text_module2 = nn.Conv1d(4 * c, 2 * c, kernel_size=3, padding=1)
        self.text_module1 = nn.Conv1d(2 * c, c, kernel_size=3, padding=1)

    def forward(self, images: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                return_aux: bool = None, return_weights: bool = False,
                text_clip: torch.Tensor = None) -> Dict[str, torch.Tensor]:
        """``{"logits": [B, 1, H, W]}``. ``text_clip``: :meth:`encode_text`'s output for these tokens, computed
        earlier (an inference cache); None computes it."""
        self.check_inputs(images, text_tokens, text_mask)
        if text_clip is None:
            text_clip = self.encode_text(text_tokens, text_mask)  # (B, L, D)
        text4 = _across_tokens(self.text_module4, text_clip)  # (B, L, 8C)
        text3 = _across_tokens(self.text_module3, text4)
        text2 = _across_tokens(self.text_module2, text3)
        text1 = _across_tokens(self.text_module1, text2)  # (B, L, C)

        x1 = self.inc(images.float())  # (B, C, H, W)
        y1 = self.downVit(x1, None, text1)  # (B, N, C)
        x2 = self.down1(x1)
        y2 = self.downVit1(x2, y1)  # (B, N, 2C)
        x3 = self.down2(x2)
        y3 = self.downVit2(x3, y2)
        x4 = self.down3(x3)
        y4 = self.downVit3(x4, y3)  # (B, N, 8C)
        x5 = self.down4(x4)  # (B, 8C, H/16, W/16)
        y4 = self.upVit3(y4, None, up=True)
        y3 = self.upVit2(y3, y4, up=True)
        y2 = self.upVit1(y2, y3, up=True)
        y1 = self.upVit(y1, y2, up=True)
        x1 = self.reconstruct1(y1) + x1
        x2 = self.reconstruct2(y2) + x2
        x3 = self.reconstruct3(y3) + x3
        x4 = self.reconstruct4(y4) + x4
        x = self.up4(x5, x4)
        x = self.up3(x, x3)
        x = self.up2(x, x2)
        x = self.up1(x, x1)
        return {"logits": self.outc(x)}


LVIT = register_model(ModelKind(
    name="lvit", folder="LViT", build=LViT, losses=LVIT_LOSSES,
    check=check_lvit, authors_state=with_built_tower,
    paper="Li et al., LViT: Language meets Vision Transformer in Medical Image Segmentation, IEEE TMI 2023"))
