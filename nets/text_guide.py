"""Text guidance at a decoder stage (``text_guide``; not in the authors' model).

In the authors' model the report reaches the segmentation only through the bottleneck; the skip connections bring
the whole image to every other scale, so the decoder can segment every lesion-like region without reading. This
block lets the pixels of a higher-resolution decoder stage read the report themselves, as LViT and GuideDecoder
guide at several scales:

1. each pixel's query is a 1x1 conv of its features and of its normalised ``(y, x)`` position (so "upper left"
   can be matched to where the pixel is);
2. it attends over the report's valid tokens (padding hidden);
3. the attended text gives a per-pixel, per-channel scale and shift (FiLM): ``x * (1 + gamma) + beta``.

The last projection starts at zero, so a new block is the identity and training decides how much to read.
"""

from __future__ import annotations

import torch
from torch import nn

from nets.attention import MultiheadAttention


class TextGuide(nn.Module):
    """Pixels of a decoder feature map attend to the report's words and are scaled and shifted by what they read.

    Args:
        channels: ``C``, channels of the decoder feature map.
        text_dim: ``D``, width of the text features (also the attention width).
        num_heads: attention heads (``D`` must be divisible by it).
    """

    def __init__(self, channels: int, text_dim: int, num_heads: int = 4):
        super().__init__()
        self.query = nn.Conv2d(channels + 2, text_dim, kernel_size=1)
        self.attn = MultiheadAttention(text_dim, num_heads)
        self.film = nn.Conv2d(text_dim, 2 * channels, kernel_size=1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    @staticmethod
    def coordinates(x: torch.Tensor) -> torch.Tensor:
        """``[B, 2, H, W]``: each pixel's ``y`` and ``x`` in [-1, 1] (top left = (-1, -1))."""
        b, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, H, W)
        return grid.expand(b, -1, -1, -1)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: decoder features ``[B, C, H, W]``.
            text: text features ``[B, L, D]``.
            text_mask: ``[B, L]``, nonzero on valid tokens (each row needs at least one).

        Returns:
            ``[B, C, H, W]``: ``x * (1 + gamma) + beta``, with ``gamma``, ``beta`` ``[B, C, H, W]`` from the words.
        """
        b, c, h, w = x.shape
        query = self.query(torch.cat([x, self.coordinates(x)], dim=1)).flatten(2).transpose(1, 2)  # (B, HW, D)
        keep = text_mask.bool()[:, None, None, :]  # (B, 1, 1, L): True where a pixel may attend
        read = self.attn(query, text, text, attn_mask=keep)  # (B, HW, D)
        read = read.transpose(1, 2).reshape(b, -1, h, w)  # (B, D, H, W)
        gamma, beta = self.film(read).chunk(2, dim=1)  # (B, C, H, W) each
        return x * (1.0 + gamma) + beta
