"""The transformer shared by the benchmarks and the tests: a pre-LN block and a small GPT.

One definition, so the committed results (benchmarks/results/) and the tests run the same
model: for a seed and arguments, the parameters are drawn in one order and the forward and
backward are one computation.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)), a 4x MLP (GELU unless `act`)."""

    def __init__(self, dim: int, heads: int, act: nn.Module | None = None):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU() if act is None else act,
                                 nn.Linear(4 * dim, dim))

    def forward(self, x):                                                      # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)                     # (B, H, T, C/H)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token + position embeddings, `layers` GELU blocks, a final LayerNorm, logits over `vocab`.

    With `tied_head` the output head is the token embedding (logits = x @ tok.weight.T), and
    both embeddings start from GPT-2's N(0, 0.02): N(0, 1) rows would give large first logits.
    """

    def __init__(self, vocab: int, *, dim: int, layers: int, heads: int, context: int,
                 tied_head: bool = False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = None if tied_head else nn.Linear(dim, vocab)
        if tied_head:  # drawn after the blocks: the order the committed convergence runs used
            nn.init.normal_(self.tok.weight, std=0.02)
            nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, idx):                                                    # (B, T) token ids
        x = self.ln(self.blocks(self.tok(idx) + self.pos(torch.arange(idx.shape[1]))))
        return x @ self.tok.weight.T if self.head is None else self.head(x)    # (B, T, vocab)
