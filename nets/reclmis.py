"""RecLMIS: cross-modal conditioned reconstruction for language-guided medical image segmentation.

Huang et al., IEEE TMI 2025 (arXiv 2404.02845). Inference path: CLIP text tower -> ``text_module4`` (Conv1d)
-> U-Net encoder -> conditioned interaction (whose patch tokens replace the bottleneck) -> U-Net decoder with
pixel-level attention -> logits. In training, two auxiliary branches shape the features: conditioned language
and vision reconstruction (mask the tokens the words/patches-of-interest heads weigh most, rebuild them from the
other modality) and the conditioned contrastive loss (computed from this model's outputs in
``utils/training/losses.py``).

Sizes: ``C = base_channel``, ``D`` = the text tower's output width (512 for ViT-B/32), ``G = img_size // 16``.
The deepest encoder block outputs ``D`` channels so that the bottleneck, the text and every auxiliary block share
one width; at the authors' sizes (``C = 64``, ``D = 512 = 8 C``) this is their ``down4`` (512 -> 512).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from nets.interaction import Interactor
from nets.models import ModelKind, register_model
from nets.reconstruction import DualTransformer, conditioned_mask
from nets.text_guide import TextGuide
from nets.text_towers import ReportReader
from nets.unet import ConvBatchNorm, DownBlock, UpBlockAttention


def _weight_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))


class RecLMIS(ReportReader):
    """The RecLMIS network for one :class:`utils.config.Config`.

    The output is **logits**: ``sigmoid(logits)`` equals the probabilities of the authors' model for the same
    weights, so their checkpoints give the same masks. Losses take logits (``utils/training/losses.py``).

    Args:
        config: reads ``img_size``, ``n_channels``, ``base_channel``, ``token_len``, ``text_encoder`` (and
            ``hf_text_model``), ``clip_*``, ``freeze_text_tower``,
            ``interact_heads``, ``interact_dropout``, ``rec_heads``, ``rec_trans_num_layers1``, ``rec_dropout``,
            the mask settings, ``dropout``/``dropout_value``, ``fix_img_causal_mask``, and the options beyond the
            authors, ``interact_residual`` and ``text_guide`` (off by default: then the parameters, their names
            and the outputs are the authors').
        text_encoder: an already built text tower to use instead of building one from the config.
    """

    def __init__(self, config, text_encoder: nn.Module = None):
        super().__init__()
        config.validate()
        self.config = config
        self.img_size = config.img_size
        self.grid = config.img_size // 16
        c = config.base_channel
        self.attach_text_tower(config, text_encoder)
        d = self.text_tower.shape.embed_dim
        self.dim = d

        self.inc = ConvBatchNorm(config.n_channels, c)
        self.down1 = DownBlock(c, 2 * c)
        self.down2 = DownBlock(2 * c, 4 * c)
        self.down3 = DownBlock(4 * c, 8 * c)
        self.down4 = DownBlock(8 * c, d)
        self.text_module4 = nn.Conv1d(d, d, kernel_size=3, padding=1)
        self.interact = Interactor(d, self.grid, num_heads=config.interact_heads, dropout=config.interact_dropout)
        self.up4 = UpBlockAttention(8 * c, d, 4 * c)
        self.up3 = UpBlockAttention(4 * c, 4 * c, 2 * c)
        self.up2 = UpBlockAttention(2 * c, 2 * c, c)
        self.up1 = UpBlockAttention(c, c, c)
        self.outc = nn.Conv2d(c, config.n_labels, kernel_size=1)
        self.interact_residual = config.interact_residual
        stage_channels = {"up4": 4 * c, "up3": 2 * c, "up2": c, "up1": c}  # each decoder stage's output width
        self.text_guides = nn.ModuleDict({stage: TextGuide(stage_channels[stage], d, config.interact_heads)
                                          for stage in config.guided_stages()})

        # Auxiliary branch: words/patches-of-interest heads and the two reconstruction heads.
        self.mlp_woi = _weight_head(d)
        self.mlp_visual = _weight_head(d)
        self.head_dropout = nn.Dropout(config.dropout_value if config.dropout else 0.0)
        image_causal = not config.fix_img_causal_mask
        layers = config.rec_trans_num_layers1
        # Language reconstruction: condition = image tokens (decoder1), target = masked text (decoder2).
        self.rec_text_trans1 = DualTransformer(d, config.rec_heads, layers, config.rec_dropout,
                                               causal1=image_causal, causal2=True)
        # Vision reconstruction: condition = text tokens (decoder1), target = masked image tokens (decoder2).
        self.rec_img_trans1 = DualTransformer(d, config.rec_heads, layers, config.rec_dropout,
                                              causal1=True, causal2=image_causal)

    def word_weights(self, text_i: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Words of interest ``[B, L]``: softmax over the valid tokens of ``mlp_woi``; exactly 0 on padding."""
        logits = self.mlp_woi(self.head_dropout(text_i)).squeeze(-1)
        return torch.softmax(logits.masked_fill(~text_mask.bool(), float("-inf")), dim=-1)

    def patch_weights(self, img_i: torch.Tensor) -> torch.Tensor:
        """Patches of interest ``[B, G*G]``: softmax over the patches of ``mlp_visual``."""
        return torch.softmax(self.mlp_visual(self.head_dropout(img_i)).squeeze(-1), dim=-1)

    def forward(self, images: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                return_aux: bool = None, return_weights: bool = False,
                text_clip: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """
        Args:
            images: ``[B, n_channels, img_size, img_size]`` float.
            text_tokens: ``[B, L]`` int64 CLIP token ids.
            text_mask: ``[B, L]``, nonzero on real tokens.
            return_aux: run the auxiliary branch and return what its losses need. Defaults to
                ``self.training``. The logits do not depend on it.
            return_weights: also return ``word_weights`` ``[B, L]`` and ``patch_weights`` ``[B, G*G]``.
            text_clip: :meth:`encode_text`'s output for these tokens, computed earlier (a cache of the frozen
                tower's features, :class:`utils.inference.speed.TextFeatureCache`); None computes it.

        Returns:
            dict with ``logits`` ``[B, 1, H, W]``; with ``return_aux`` also ``text_feat`` ``[B, L, D]`` and
            ``img_feat`` ``[B, G*G, D]`` (pre-interaction tokens), ``text_mask``, ``word_weights``,
            ``patch_weights``, ``logit_scale`` (exp'd), ``text_rec``/``text_target`` ``[B, L, D]`` and
            ``img_rec``/``img_target`` ``[B, G*G, D]``.
        """
        self.check_inputs(images, text_tokens, text_mask)
        if return_aux is None:
            return_aux = self.training
        if text_clip is None:
            text_clip = self.encode_text(text_tokens, text_mask)  # (B, L, D)
        elif text_clip.shape[:2] != text_tokens.shape:
            raise ValueError(f"text_clip {list(text_clip.shape)} must be [B, L, D] for text_tokens "
                             f"{list(text_tokens.shape)}")
        text_feat = self.text_module4(text_clip.transpose(1, 2)).transpose(1, 2)  # (B, L, D)

        x1 = self.inc(images.float())  # (B, C, H, W)
        e1 = self.down1(x1)  # (B, 2C, H/2, W/2)
        e2 = self.down2(e1)  # (B, 4C, H/4, W/4)
        e3 = self.down3(e2)  # (B, 8C, H/8, W/8)
        e4 = self.down4(e3)  # (B, D, G, G)
        text_i, img_i = self.interact(e4, text_feat)  # (B, L, D), (B, G*G, D)

        bottleneck = img_i.transpose(1, 2).reshape(-1, self.dim, self.grid, self.grid)  # (B, D, G, G)
        if self.interact_residual:
            bottleneck = bottleneck + e4
        d = bottleneck
        for name, skip in (("up4", e3), ("up3", e2), ("up2", e1), ("up1", x1)):
            d = getattr(self, name)(d, skip)  # up4: (B, 4C, H/8, W/8) ... up1: (B, C, H, W)
            if name in self.text_guides:
                d = self.text_guides[name](d, text_feat, text_mask)
        out: Dict[str, torch.Tensor] = {"logits": self.outc(d)}  # (B, 1, H, W)

        if return_aux or return_weights:
            out["word_weights"] = self.word_weights(text_i, text_mask)
            out["patch_weights"] = self.patch_weights(img_i)
        if return_aux:
            out.update(self._reconstruct(text_clip, text_feat, text_mask, e4, img_i,
                                         out["word_weights"], out["patch_weights"]))
        return out

    def _reconstruct(self, text_clip, text_feat, text_mask, e4, img_i, word_w, patch_w) -> Dict[str, torch.Tensor]:
        cfg = self.config
        img_tok = e4.flatten(2).transpose(1, 2)  # (B, G*G, D): the bottleneck before interaction
        all_patches = torch.ones(img_tok.shape[:2], dtype=torch.bool, device=img_tok.device)
        img_masked = conditioned_mask(patch_w, all_patches, cfg.img_mask_rate, cfg.mask_mode,
                                      cfg.mask_mode_dist_random)
        text_masked = conditioned_mask(word_w, text_mask.bool(), cfg.text_mask_rate, cfg.mask_mode,
                                       cfg.mask_mode_dist_random)
        # Vision reconstruction: the masked bottleneck, conditioned on the words weighted by interest.
        img_rec = self.rec_img_trans1(text_feat, img_tok.masked_fill(img_masked[..., None], 0.0), word_w)
        # Language reconstruction: the masked words, conditioned on the patches weighted by interest.
        text_rec = self.rec_text_trans1(img_tok, text_feat.masked_fill(text_masked[..., None], 0.0), patch_w)
        return {
            "text_feat": text_feat,
            "img_feat": img_tok,
            "text_mask": text_mask,
            "logit_scale": self.text_tower.logit_scale.exp(),
            "text_rec": text_rec,
            "text_target": text_clip,
            "img_rec": img_rec,
            "img_target": img_i,
        }


RECLMIS = register_model(ModelKind(
    name="reclmis", folder="RecLMIS", build=lambda config, text_tower=None: RecLMIS(config, text_encoder=text_tower),
    losses=None,
    paper="Huang et al., Cross-Modal Conditioned Reconstruction for Language-guided Medical Image Segmentation, "
          "IEEE TMI 2025"))
