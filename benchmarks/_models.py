"""Small models shared by the timing and memory benchmarks."""

import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + fc2(act(fc1(ln(x)))), a 4x MLP."""

    def __init__(self, dim: int, heads: int, act: nn.Module):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), act, nn.Linear(4 * dim, dim)

    def forward(self, x):                                                      # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)                     # (B, H, T, C/H)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))
