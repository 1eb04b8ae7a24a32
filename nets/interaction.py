"""The conditioned interaction module (the authors' ``Interactor``).

The bottleneck feature map becomes patch tokens (1x1 conv, zero-initialised position embedding, dropout 0.1).
The report's tokens attend to the patches; the patches then attend to that attended text. Neither attention has
a residual, a norm or a key-padding mask, as in the authors' model. The attended text also goes through a
Conv1d-BatchNorm-ReLU over the token axis. The patch tokens returned here replace the U-Net bottleneck.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from nets.attention import MultiheadAttention


class Embeddings(nn.Module):
    """A feature map to tokens: a conv of ``patch_size`` and the same stride (1x1 for the bottleneck; LViT's levels
    use larger patches), its channels kept, plus a learned position embedding (zeros at start), dropout."""

    def __init__(self, channels: int, num_patches: int, dropout: float = 0.1, patch_size: int = 1):
        super().__init__()
        self.patch_embeddings = nn.Conv2d(channels, channels, kernel_size=patch_size, stride=patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches, channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Tokens taken from the map in the standard layout (a no-op unless it is channels-last): dropout draws its
        # mask in memory order, so both layouts then draw the same mask.
        x = self.patch_embeddings(x).contiguous().flatten(2).transpose(1, 2)  # (B, N, D)
        return self.dropout(x + self.position_embeddings)


class ConvTransBN(nn.Module):
    """Conv1d (k=3, padding 1) -> BatchNorm1d -> ReLU over the last axis of ``[B, C, L]``; ``out_channels`` defaults
    to ``channels``."""

    def __init__(self, channels: int, out_channels: int = None):
        super().__init__()
        out_channels = out_channels or channels
        self.conv = nn.Conv1d(channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm1d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


class Interactor(nn.Module):
    """Cross-modal interaction between the bottleneck and the report.

    Args:
        dim: width ``D`` of both the bottleneck channels and the text features.
        grid: side of the bottleneck (``img_size // 16``); ``grid**2`` patch tokens.
        num_heads: heads of both cross-attentions.
        dropout: of the patch embeddings and of both attentions' probabilities (the authors': 0.1).
    """

    def __init__(self, dim: int, grid: int, num_heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.grid = grid
        self.embeddings = Embeddings(dim, grid * grid, dropout)
        self.CTBN = ConvTransBN(dim)
        self.attn_text = MultiheadAttention(dim, num_heads, dropout=dropout)
        self.attn_img = MultiheadAttention(dim, num_heads, dropout=dropout)

    def forward(self, img: torch.Tensor, text: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            img: bottleneck ``[B, D, grid, grid]``.
            text: text features ``[B, L, D]``.

        Returns:
            ``(text_i [B, L, D], img_i [B, grid**2, D])``.
        """
        img_tok = self.embeddings(img)  # (B, N, D)
        text_x = self.attn_text(text, img_tok, img_tok)  # (B, L, D): words attend to patches
        img_i = self.attn_img(img_tok, text_x, text_x)  # (B, N, D): patches attend to the attended words
        text_i = self.CTBN(text_x.transpose(1, 2)).transpose(1, 2)  # (B, L, D)
        return text_i, img_i
