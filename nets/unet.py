"""The U-Net blocks of RecLMIS (inherited from LViT): encoder, and decoder with pixel-level attention."""

from __future__ import annotations

import torch
from torch import nn


class ConvBatchNorm(nn.Module):
    """Conv 3x3 (padding 1) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)))


def two_convs(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(ConvBatchNorm(in_channels, out_channels), ConvBatchNorm(out_channels, out_channels))


class DownBlock(nn.Module):
    """MaxPool 2x2, then two ConvBatchNorm: halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.maxpool = nn.MaxPool2d(2)
        self.nConvs = two_convs(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nConvs(self.maxpool(x))


class PixLevelModule(nn.Module):
    """Pixel-level attention on a skip connection.

    Two 1x1 convs (no bias) + ReLU give a channel mean ``a`` and a channel max ``m``; a small MLP over
    ``[a, m, a + m]`` at every pixel gives one weight per pixel, which multiplies every channel. The weight has
    no sigmoid. ``conv_sig`` is built but never used, as in the authors' model: it exists so their checkpoints
    load.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv_avg = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.conv_max = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.relu = nn.ReLU()
        self.bottleneck = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1))
        self.conv_sig = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.relu(self.conv_avg(x)).mean(dim=1, keepdim=True)  # (B, 1, H, W)
        mx = self.relu(self.conv_max(x)).amax(dim=1, keepdim=True)  # (B, 1, H, W)
        stats = torch.cat([avg, mx, avg + mx], dim=1).permute(0, 2, 3, 1)  # (B, H, W, 3)
        weight = self.bottleneck(stats).permute(0, 3, 1, 2)  # (B, 1, H, W)
        return weight * x


class UpBlockAttention(nn.Module):
    """Nearest 2x upsampling of the deep input, pixel attention on the skip, concat ``[skip, up]``, two convs.

    Args:
        skip_channels: channels of the skip connection (the pixel-attention width).
        up_channels: channels of the deeper input.
        out_channels: output channels.
    """

    def __init__(self, skip_channels: int, up_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pixModule = PixLevelModule(skip_channels)
        self.nConvs = two_convs(skip_channels + up_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.nConvs(torch.cat([self.pixModule(skip), self.up(x)], dim=1))
