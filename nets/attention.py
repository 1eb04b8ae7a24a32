"""Multi-head attention with packed input projections, as in CLIP, torch and fairseq.

One module serves the CLIP text tower, the interaction module and the reconstruction decoders. Its parameters
are named as in ``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so the
authors' checkpoints load unchanged. All tensors are batch-first ``[B, S, D]``.

Without key weights it runs ``F.scaled_dot_product_attention`` (a fused kernel where one exists). With key
weights (the reconstruction decoders' "gauss weight"), it computes the probabilities explicitly, in fp32 as
fairseq's softmax does, multiplies them by ``weight + 1e-10`` per key and renormalises each row.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class MultiheadAttention(nn.Module):
    """Attention of ``query`` over ``key``/``value``.

    Args:
        embed_dim: model width ``D``; must be divisible by ``num_heads``.
        num_heads: number of heads.
        dropout: dropout on the attention probabilities, in training only.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, -1).transpose(1, 2)  # (B, nh, S, hd)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        key_weight: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: ``[B, T, D]``.
            key, value: ``[B, S, D]``.
            attn_mask: boolean, True where a query may attend to a key; broadcastable to ``[B, nh, T, S]``.
            key_weight: ``[B, S]`` weights that modulate the attention probabilities per key (renormalised).

        Returns:
            ``[B, T, D]``.
        """
        d = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:
            q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
        else:
            q = F.linear(query, w[:d], b[:d])
            k = F.linear(key, w[d : 2 * d], b[d : 2 * d])
            v = F.linear(value, w[2 * d :], b[2 * d :])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        dropout_p = self.dropout if self.training else 0.0
        if key_weight is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        else:
            out = self._weighted_attention(q, k, v, attn_mask, key_weight, dropout_p)
        bsz, _, tgt_len, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, d))

    @staticmethod
    def _weighted_attention(q, k, v, attn_mask, key_weight, dropout_p):
        scale = q.shape[-1] ** -0.5
        logits = torch.matmul(q * scale, k.transpose(-2, -1)).float()  # (B, nh, T, S), fp32 softmax
        if attn_mask is not None:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        probs = probs * (key_weight.float()[:, None, None, :] + 1e-10)
        probs = probs / probs.sum(dim=-1, keepdim=True)
        probs = F.dropout(probs, p=dropout_p, training=dropout_p > 0)
        return torch.matmul(probs.to(v.dtype), v)
