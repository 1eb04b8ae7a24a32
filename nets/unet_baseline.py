"""U-Net, the image-only baseline of LViT's and RecLMIS's tables (``model="unet"``): the control for "does the
report help".

LViT's ``nets/UNet.py`` (Li et al., IEEE TMI 2023; github HUANGLIZI/LViT), at any width: ``base_channel`` C (theirs
is 64, fixed), four max-pool + two-conv encoder blocks (C, 2C, 4C, 8C, 8C), four decoder blocks that upsample with
a 2x2 transposed convolution, concatenate ``[upsampled, skip]`` (in that order, unlike RecLMIS's attention blocks)
and apply two convs, and a 1x1 output conv. The parameter names are theirs, so their checkpoints load
(tests/data/unet_state_dict.tsv, written from their code). Their network ends in a sigmoid; this one returns the
logits, ``sigmoid(logits)`` being their output for the same weights. The report is taken and ignored.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from nets.models import ModelKind, Network, register_model
from nets.unet import ConvBatchNorm, DownBlock, two_convs

# LViT trains both its networks with 0.5 * Dice + 0.5 * class-balanced BCE (its WeightedDiceBCE).
LVIT_LOSSES = {"dice": 0.5, "balanced_bce": 0.5}


class UpBlock(nn.Module):
    """2x2 transposed convolution of the deep input (its channels kept), concat ``[up, skip]``, two convs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels // 2, in_channels // 2, kernel_size=2, stride=2)
        self.nConvs = two_convs(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.nConvs(torch.cat([self.up(x), skip], dim=1))


class UNet(Network):
    """LViT's U-Net at ``base_channel`` width; reads ``n_channels``, ``base_channel``, ``img_size``, ``n_labels``."""

    def __init__(self, config, text_tower: nn.Module = None):
        super().__init__()
        config.validate()
        if text_tower is not None:
            raise ValueError("the U-Net reads no report: it takes no text tower")
        self.config = config
        c = config.base_channel
        self.inc = ConvBatchNorm(config.n_channels, c)
        self.down1 = DownBlock(c, 2 * c)
        self.down2 = DownBlock(2 * c, 4 * c)
        self.down3 = DownBlock(4 * c, 8 * c)
        self.down4 = DownBlock(8 * c, 8 * c)
        self.up4 = UpBlock(16 * c, 4 * c)
        self.up3 = UpBlock(8 * c, 2 * c)
        self.up2 = UpBlock(4 * c, c)
        self.up1 = UpBlock(2 * c, c)
        self.outc = nn.Conv2d(c, config.n_labels, kernel_size=1)

    def forward(self, images: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                return_aux: bool = None, return_weights: bool = False, text_clip=None) -> Dict[str, torch.Tensor]:
        """``{"logits": [B, 1, H, W]}``; the report arguments are checked and ignored."""
        self.check_inputs(images, text_tokens, text_mask)
        x1 = self.inc(images.float())  # (B, C, H, W)
        x2 = self.down1(x1)  # (B, 2C, H/2, W/2)
        x3 = self.down2(x2)  # (B, 4C, H/4, W/4)
        x4 = self.down3(x3)  # (B, 8C, H/8, W/8)
        x = self.down4(x4)  # (B, 8C, H/16, W/16)
        for name, skip in (("up4", x4), ("up3", x3), ("up2", x2), ("up1", x1)):
            x = getattr(self, name)(x, skip)
        return {"logits": self.outc(x)}


UNET = register_model(ModelKind(
    name="unet", folder="UNet", build=UNet, has_text_tower=False, losses=LVIT_LOSSES,
    paper="Ronneberger et al., MICCAI 2015, as LViT's code builds it (Li et al., IEEE TMI 2023)"))
