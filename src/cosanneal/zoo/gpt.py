"""A small character-level GPT (decoder-only transformer) that trains on 2 CPU cores.

Bytes in, next-byte logits out: ``(B, T)`` integer ids in ``[0, 256)`` to ``(B, T, 256)`` logits.
Pre-norm blocks of causal multi-head self-attention (``scaled_dot_product_attention`` with
``is_causal``) and a 4x GELU MLP; learned position embeddings; the output head shares the input
embedding's weights. Initialisation follows GPT-2 (normal(0, 0.02); residual projections scaled by
``1/sqrt(2 * layers)``), from torch's global generator: the same seed builds the same model.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> model = CharGPT(layers=2, heads=2, width=32, block=16)
    >>> model(torch.zeros(3, 16, dtype=torch.long)).shape
    torch.Size([3, 16, 256])
    >>> sum(p.numel() for p in model.parameters())
    34176
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

VOCAB = 256  # bytes


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        attn = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.dropout(self.proj(attn.transpose(1, 2).reshape(b, t, c)))
        out: Tensor = x + self.dropout(self.mlp(self.norm2(x)))
        return out


class CharGPT(nn.Module):
    """A byte-level GPT: ``layers`` blocks of width ``width`` with ``heads`` heads, context ``block``.

    Raises:
        ValueError: a size below 1, ``width`` not divisible by ``heads``, or dropout outside [0, 1).
    """

    def __init__(
        self, layers: int = 3, heads: int = 4, width: int = 128, block: int = 64, dropout: float = 0.0
    ) -> None:
        from cosanneal.zoo.models import OPTION_CHECKS
        from cosanneal.zoo.options import raise_value_error

        raise_value_error(
            OPTION_CHECKS, layers=layers, heads=heads, width=width, block=block, dropout=dropout
        )
        if width % heads:
            raise ValueError(f"width: {width} must be divisible by heads ({heads})")
        super().__init__()
        self.block = block
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Embedding(block, width)
        self.blocks = nn.ModuleList(_Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = (
                    0.02 / math.sqrt(2 * layers)
                    if name.endswith("proj.weight") or name.endswith("mlp.2.weight")
                    else 0.02
                )
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: Tensor) -> Tensor:
        """Next-byte logits ``(B, T, 256)`` for ``(B, T)`` byte ids (``T <= block``)."""
        t = ids.shape[1]
        if t > self.block:
            raise ValueError(
                f"block: sequences of {t} bytes are longer than the model's block ({self.block})"
            )
        x = self.dropout(self.embed(ids) + self.position(torch.arange(t, device=ids.device)))
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.norm(x) @ self.embed.weight.t()
        return logits


__all__ = ["VOCAB", "CharGPT"]
