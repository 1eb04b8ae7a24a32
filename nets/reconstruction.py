"""Conditioned masking and the reconstruction decoders (CLR and CVR).

``conditioned_mask`` picks the tokens to hide, with the words/patches-of-interest weights as the condition:
in ``'dist'`` mode it samples ``n = max(floor(valid * rate), 1)`` tokens per sample without replacement with
probability proportional to the weight (so important tokens are hidden more often), in ``'topk'`` mode it takes
the ``n`` heaviest. It is vectorised over the batch and runs on the weights' device with torch's RNG, with no
host synchronisation: sampling without replacement is done with Gumbel keys (the top-``n`` of
``log p + Gumbel`` is a draw of ``n`` items without replacement with probability ~ p, the same law as the
authors' ``np.random.choice(..., replace=False, p=p)``).

``DualTransformer`` is the authors' pair of post-LN decoder stacks (fairseq style, no fairseq needed): the first
stack runs self-attention over the conditioning sequence, the second reconstructs the masked sequence with
self-attention and cross-attention to the first stack's output. Attention over the conditioning tokens is
modulated by their weights (multiply, renormalise).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nets.attention import MultiheadAttention


def mask_counts(valid_len: torch.Tensor, rate: float) -> torch.Tensor:
    """Tokens to mask per sample: ``max(int(valid * rate), 1)``, and 0 where nothing is valid (the authors' rule).

    The product is taken in float64, as Python's ``int(l * rate)`` does: ``int(18 * 0.3) == 5``.
    """
    n = torch.floor(valid_len.to(torch.float64) * rate).long().clamp_min(1)
    return torch.where(valid_len > 0, n, torch.zeros_like(n))


def conditioned_mask(
    weights: torch.Tensor,
    valid: torch.Tensor,
    rate: float,
    mode: str = "dist",
    dist_random: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Choose the tokens to mask.

    Args:
        weights: ``[B, S]`` non-negative weights (softmaxed, zero on padding). Not differentiated through.
        valid: ``[B, S]`` bool, True on tokens that may be masked (padding is never picked).
        rate: share of valid tokens to mask.
        mode: ``'dist'`` (sample ~ weight without replacement) or ``'topk'`` (the heaviest).
        dist_random: in ``'dist'`` mode, when fewer than ``n`` valid tokens have a positive weight, top up with
            valid zero-weight tokens drawn uniformly (the authors' ``mask_mode_dist_random``); else mask fewer.
        generator: optional torch generator on ``weights.device``.

    Returns:
        ``[B, S]`` bool, True where a token is masked.
    """
    if weights.shape != valid.shape:
        raise ValueError(f"weights {tuple(weights.shape)} and valid {tuple(valid.shape)} must have one shape")
    weights = weights.detach().float()
    valid = valid.bool()
    n = mask_counts(valid.sum(dim=1), rate)  # (B,)
    positive = valid & (weights > 0)
    if mode == "dist":
        u = torch.rand(weights.shape, device=weights.device, generator=generator).clamp_(1e-20, 1.0 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        # Positive weights: log p + Gumbel. Zero weights: Gumbel alone, which only orders them among themselves:
        # the tier below ranks every positive weight first.
        key = torch.where(positive, torch.log(weights.clamp_min(1e-45)) + gumbel, gumbel)
        tier = positive.long() * 2 + (valid & ~positive & dist_random).long()
    elif mode == "topk":
        key = weights
        tier = valid.long()
    else:
        raise ValueError(f"mask mode must be 'dist' or 'topk', got {mode!r}")
    # Order by (tier, key), both descending: sort by key, then stably by tier.
    by_key = torch.argsort(key, dim=1, descending=True, stable=True)  # ties: lower index first, any batch size
    by_tier = torch.argsort(tier.gather(1, by_key), dim=1, descending=True, stable=True)
    order = by_key.gather(1, by_tier)  # token index at each rank
    ranks = torch.arange(weights.shape[1], device=weights.device)
    take = (ranks[None, :] < n[:, None]) & (tier.gather(1, order) > 0)
    return torch.zeros_like(valid).scatter(1, order, take)


class TransformerDecoderLayer(nn.Module):
    """Post-LN decoder layer: self-attention, optional cross-attention, ReLU FFN (x2 width); dropout after each."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.encoder_attn = MultiheadAttention(d_model, num_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_model * 2)
        self.fc2 = nn.Linear(d_model * 2, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)
        for attn in (self.self_attn, self.encoder_attn):
            nn.init.xavier_uniform_(attn.out_proj.weight)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, p=self.dropout, training=self.training)

    def forward(self, x, self_mask=None, self_weight=None, memory=None, memory_weight=None):
        attended = self.self_attn(x, x, x, attn_mask=self_mask, key_weight=self_weight)
        x = self.self_attn_layer_norm(x + self._drop(attended))
        if memory is not None:
            attended = self.encoder_attn(x, memory, memory, key_weight=memory_weight)
            x = self.encoder_attn_layer_norm(x + self._drop(attended))
        return self.final_layer_norm(x + self._drop(self.fc2(F.relu(self.fc1(x)))))


class TransformerDecoder(nn.Module):
    """A stack of :class:`TransformerDecoderLayer`, with an optional causal mask on its self-attention.

    Args:
        causal: mask future positions in self-attention (the authors do so for every stack, image tokens
            included; ``fix_img_causal_mask`` turns it off for image tokens).
    """

    def __init__(self, num_layers: int, d_model: int, num_heads: int, dropout: float, causal: bool = True):
        super().__init__()
        self.causal = causal
        self.decoder_layers = nn.ModuleList(
            [TransformerDecoderLayer(d_model, num_heads, dropout) for _ in range(num_layers)]
        )

    def forward(self, x, self_weight=None, memory=None, memory_weight=None):
        length = x.shape[1]
        mask = None
        if self.causal:
            mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        for layer in self.decoder_layers:
            x = layer(x, mask, self_weight, memory, memory_weight)
        return x


class DualTransformer(nn.Module):
    """Reconstruct a masked sequence conditioned on another one (the authors' ``decoding=2`` path).

    ``decoder1`` encodes the condition ``src1`` by weighted self-attention; ``decoder2`` decodes the masked
    ``src2`` with self-attention and weighted cross-attention to that encoding. ``decoder1``'s cross-attention is
    built but unused, as in the authors' model.

    Args:
        causal1, causal2: causal self-attention in ``decoder1`` / ``decoder2``.
    """

    def __init__(self, d_model: int, num_heads: int, num_layers: int, dropout: float,
                 causal1: bool = True, causal2: bool = True):
        super().__init__()
        self.decoder1 = TransformerDecoder(num_layers, d_model, num_heads, dropout, causal=causal1)
        self.decoder2 = TransformerDecoder(num_layers, d_model, num_heads, dropout, causal=causal2)

    def forward(self, src1: torch.Tensor, src2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """
        Args:
            src1: condition ``[B, S1, D]``.
            src2: masked sequence ``[B, S2, D]``.
            weight: ``[B, S1]`` weights of the condition's tokens.

        Returns:
            the reconstruction of ``src2``, ``[B, S2, D]``.
        """
        memory = self.decoder1(src1, self_weight=weight)
        return self.decoder2(src2, memory=memory, memory_weight=weight)
