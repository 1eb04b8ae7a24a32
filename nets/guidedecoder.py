"""GuideDecoder (``model="guidedecoder"``): Zhong et al., "Ariadne's Thread: Using Text Prompts to Improve
Segmentation of Infectious Areas from Chest X-ray images", MICCAI 2023 (github
Junelin2333/LanGuideMedSeg-MICCAI2023, ``utils/model.py`` and ``utils/layers.py``).

A ConvNeXt-Tiny image encoder (transformers' ``ConvNextModel``, as their code loads ``facebook/convnext-tiny-224``)
gives four maps (strides 4, 8, 16, 32; widths 96, 192, 384, 768). Three guided decoder stages go up from the deepest:
each lets the map's tokens attend to themselves and then to the report's token features (projected to the stage's
width and length), then upsamples 2x with a transposed convolution, concatenates the encoder's map of that size and
applies two conv-BN-LeakyReLU layers (MONAI's ``UnetrUpBlock``). A sub-pixel convolution (MONAI's
``SubpixelUpsample``: conv, pixel shuffle by 4, pad and 4x4 average pool) and a 1x1 conv give the mask.

The parameter names are theirs (``encoder.model.*``, ``decoder16``, ``decoder8``, ``decoder4``, ``decoder1``,
``out``; tests/data/guidedecoder_state_dict.tsv, from their code), and so is the output on the same weights and the
same text features (tests/data/guidedecoder_reference.npz). What differs:

- The report: their code runs CXR-BERT-specialized (frozen) inside the network and feeds its last hidden states
  (768 wide, 24 tokens) to the stages. Here the tower is the registry's (``text_encoder``; ``"hf"`` with a BERT
  folder, plus the hf tower's trained projection), held as ``clip`` like every report reader, and the stages take
  ``token_len`` tokens of the tower's width. CXR-BERT-specialized is transformers custom code, which the hf tower
  does not run; its BERT body (``text_encoder.model.bert.*`` in their checkpoints) has CXR-BERT-general's shape.
- Their two projection heads (``encoder.project_head``, ``text_encoder.project_head``) feed nothing that the
  segmentation uses, and are left out.
- ConvNeXt-Tiny's weights come from ``convnext_weights`` (a folder of transformers' ``save_pretrained``, or a hub
  name); without it the encoder starts from random weights, and the log says so (their recipe starts from
  ImageNet weights: a random ConvNeXt is at a disadvantage).
- The loss: theirs is MONAI's ``DiceCELoss()`` on the sigmoid output: Dice (not squared) plus
  ``BCEWithLogitsLoss`` applied to the probabilities, which never reach 0 or 1 as logits (a loss that cannot fall
  below about 0.31). Here it is Dice plus BCE on the logits, both weight 1: the loss they meant.
- Sizes that are not a multiple of 32 (the CPU recipe's 112 px) are zero-padded at the bottom and right to the next
  multiple, and the logits cropped back; at a multiple of 32 nothing changes.

Their network ends in a sigmoid; this one returns the logits.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nets.models import ModelKind, register_model, with_built_tower
from nets.text_towers import ReportReader
from utils.misc import import_transformers

logger = logging.getLogger(__name__)

# In their checkpoints CXR-BERT (a BertForMaskedLM with a projection head) sits under text_encoder.model: its BERT
# body under .bert goes into the hf tower; its masked-language and projection heads feed nothing here.
_CXR_BERT_HEADS = ("text_encoder.model.cls.", "text_encoder.model.cls_projection_head.")
WIDTHS = (96, 192, 384, 768)  # ConvNeXt-Tiny's stage widths, strides 4, 8, 16, 32
GUIDED_TOKENS = {"decoder16": 24, "decoder8": 12, "decoder4": 9}  # the report's length in each stage (theirs)
STRIDE = 32


class PositionalEncoding(nn.Module):
    """Sinusoidal position codes added to a sequence ``[B, N, C]`` (a buffer of ``max_len`` positions, as theirs)."""

    def __init__(self, channels: int, max_len: int = 5000):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, channels, 2) * -(math.log(10000.0) / channels))
        pe = torch.zeros(max_len, channels)
        pe[:, 0::2] = torch.sin(position * frequency)
        pe[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, :x.shape[1]]


class GuideDecoderLayer(nn.Module):
    """Self-attention of the map's tokens, then cross-attention to the report, both pre-normed; the cross-attention's
    output is scaled by a learnt ``scale`` (1.421 at the start, theirs).

    Args:
        channels: the map's width; out_tokens: the report's length here; in_tokens: ``token_len``;
        text_width: the text tower's width.
    """

    def __init__(self, channels: int, out_tokens: int, in_tokens: int, text_width: int):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(channels)
        self.cross_attn_norm = nn.LayerNorm(channels)
        self.self_attn = nn.MultiheadAttention(channels, num_heads=1, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(channels, num_heads=4, batch_first=True)
        self.text_project = nn.Sequential(nn.Conv1d(in_tokens, out_tokens, kernel_size=1), nn.GELU(),
                                          nn.Linear(text_width, channels), nn.LeakyReLU())
        self.vis_pos = PositionalEncoding(channels)
        self.txt_pos = PositionalEncoding(channels, max_len=out_tokens)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)
        self.scale = nn.Parameter(torch.tensor(1.421))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: ``[B, N, C]`` map tokens; text: ``[B, L, D]`` the tower's features."""
        text = self.text_project(text)  # (B, out_tokens, C): the token axis as Conv1d channels, then the width
        y = self.norm1(x)
        q = self.vis_pos(y)
        x = x + self.self_attn_norm(self.self_attn(q, q, value=y)[0])
        y = self.norm2(x)
        y = self.cross_attn(query=self.vis_pos(y), key=self.txt_pos(text), value=text)[0]
        return x + self.scale * self.cross_attn_norm(y)


class ConvOnly(nn.Module):
    """One convolution under the attribute ``conv`` (MONAI's ``Convolution`` with no norm or activation)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs (no bias), each followed by BatchNorm and LeakyReLU(0.01) (MONAI's ``UnetBasicBlock``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvOnly(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))
        self.conv2 = ConvOnly(nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False))
        self.lrelu = nn.LeakyReLU(0.01)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrelu(self.norm1(self.conv1(x)))
        return self.lrelu(self.norm2(self.conv2(x)))


class UpBlock(nn.Module):
    """2x2 transposed conv (stride 2, no bias) to the skip's width, concat ``[up, skip]``, :class:`BasicBlock`
    (MONAI's ``UnetrUpBlock`` without its residual option)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.transp_conv = ConvOnly(nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False))
        self.conv_block = BasicBlock(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.transp_conv(x), skip], dim=1))


class GuideDecoder(nn.Module):
    """One guided stage: :class:`GuideDecoderLayer` on the deep tokens, then :class:`UpBlock` with the skip map."""

    def __init__(self, in_channels: int, out_channels: int, out_tokens: int, in_tokens: int, text_width: int):
        super().__init__()
        self.guide_layer = GuideDecoderLayer(in_channels, out_tokens, in_tokens, text_width)
        self.decoder = UpBlock(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: ``[B, C, h, w]``; skip: ``[B, C/2, 2h, 2w]``; returns ``[B, C/2, 2h, 2w]``."""
        b, c, h, w = x.shape
        tokens = self.guide_layer(x.flatten(2).transpose(1, 2), text)  # (B, h*w, C)
        return self.decoder(tokens.transpose(1, 2).reshape(b, c, h, w), skip)


class SubpixelUpsample(nn.Module):
    """3x3 conv to ``out * 16`` channels (ICNR-initialised, as MONAI's), pixel shuffle by 4, then zero padding of 3
    at the top and left and a 4x4 average pool of stride 1 (MONAI's ``SubpixelUpsample`` with ``apply_pad_pool``)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 4):
        super().__init__()
        self.scale = scale
        self.conv_block = nn.Conv2d(in_channels, out_channels * scale ** 2, 3, padding=1)
        with torch.no_grad():  # ICNR: each group of scale**2 output channels starts equal, so no checkerboard
            kernel = nn.init.kaiming_normal_(torch.zeros(out_channels, in_channels, 3, 3))
            self.conv_block.weight.copy_(kernel.repeat_interleave(scale ** 2, dim=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pixel_shuffle(self.conv_block(x), self.scale)
        x = F.pad(x, (self.scale - 1, 0, self.scale - 1, 0))
        return F.avg_pool2d(x, self.scale, stride=1)


class VisionModel(nn.Module):
    """ConvNeXt-Tiny from transformers under ``model``: pretrained from ``weights`` when given, else random."""

    def __init__(self, weights: Optional[str]):
        super().__init__()
        transformers = import_transformers("model='guidedecoder' (its ConvNeXt-Tiny encoder)")
        if weights:
            try:
                self.model = transformers.ConvNextModel.from_pretrained(weights)
            except (OSError, ValueError) as error:
                raise FileNotFoundError(
                    f"cannot load convnext_weights={weights!r} ({str(error).splitlines()[0]}). Give a folder written "
                    "by transformers' save_pretrained of facebook/convnext-tiny-224, or its hub name while "
                    "online") from None
            logger.info("GuideDecoder: ConvNeXt-Tiny weights from %s", weights)
        else:
            self.model = transformers.ConvNextModel(transformers.ConvNextConfig())
            logger.warning("GuideDecoder: ConvNeXt-Tiny starts from random weights (convnext_weights is not set); "
                           "its authors start from ImageNet weights")
        if tuple(self.model.config.hidden_sizes) != WIDTHS:
            raise ValueError(f"convnext_weights={weights!r} is not ConvNeXt-Tiny (stage widths "
                             f"{tuple(self.model.config.hidden_sizes)}, not {WIDTHS})")

    def forward(self, images: torch.Tensor):
        """The four stage maps, strides 4 to 32."""
        return self.model(images, output_hidden_states=True).hidden_states[1:]


class LanGuideMedSeg(ReportReader):
    """GuideDecoder at the config's sizes: ``img_size`` (padded to a multiple of 32 inside), ``n_channels`` (1 is
    repeated to 3, as theirs), ``token_len``, the text tower, ``convnext_weights``."""

    def __init__(self, config, text_tower: nn.Module = None):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = VisionModel(config.convnext_weights)
        self.attach_text_tower(config, text_tower)
        d, n = self.text_tower.shape.embed_dim, config.token_len
        self.decoder16 = GuideDecoder(WIDTHS[3], WIDTHS[2], GUIDED_TOKENS["decoder16"], n, d)
        self.decoder8 = GuideDecoder(WIDTHS[2], WIDTHS[1], GUIDED_TOKENS["decoder8"], n, d)
        self.decoder4 = GuideDecoder(WIDTHS[1], WIDTHS[0], GUIDED_TOKENS["decoder4"], n, d)
        self.decoder1 = SubpixelUpsample(WIDTHS[0], 24, 4)
        self.out = ConvOnly(ConvOnly(nn.Conv2d(24, config.n_labels, kernel_size=1)))  # MONAI's UnetOutBlock

    def forward(self, images: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                return_aux: bool = None, return_weights: bool = False,
                text_clip: torch.Tensor = None) -> Dict[str, torch.Tensor]:
        """``{"logits": [B, 1, H, W]}``; ``text_clip``: :meth:`encode_text`'s output, computed earlier."""
        self.check_inputs(images, text_tokens, text_mask)
        if text_clip is None:
            text_clip = self.encode_text(text_tokens, text_mask)  # (B, L, D)
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = x.shape[-1]
        pad = -size % STRIDE
        x = F.pad(x, (0, pad, 0, pad))
        s4, s8, s16, s32 = self.encoder(x)
        y = self.decoder16(s32, s16, text_clip)
        y = self.decoder8(y, s8, text_clip)
        y = self.decoder4(y, s4, text_clip)  # (B, 96, S/4, S/4)
        logits = self.out(self.decoder1(y))
        return {"logits": logits[..., :size, :size]}


def check_guidedecoder(config) -> None:
    """GuideDecoder needs transformers (its ConvNeXt) and an input of 3 channels or 1."""
    import_transformers("model='guidedecoder' (its ConvNeXt-Tiny encoder)")
    if config.n_channels not in (1, 3):
        raise ValueError(f"model='guidedecoder' reads 3-channel images (or 1, repeated), got n_channels "
                         f"{config.n_channels}")


GUIDEDECODER = register_model(ModelKind(
    name="guidedecoder", folder="GuideDecoder", build=LanGuideMedSeg,
    losses={"dice_plain": 1.0, "bce": 1.0}, check=check_guidedecoder,
    authors_state=lambda state, model: with_built_tower(
        {k: v for k, v in state.items() if ".project_head." not in k and not k.startswith(_CXR_BERT_HEADS)}, model,
        "text_encoder.model.bert."),
    paper="Zhong et al., Ariadne's Thread: Using Text Prompts to Improve Segmentation of Infectious Areas from "
          "Chest X-ray images, MICCAI 2023"))
