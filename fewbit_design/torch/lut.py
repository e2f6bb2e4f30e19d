"""Runtime step, lookup tables the fused forward kernel reads, built once per table tensor on its device.

padded    bounds32 padded with +inf for the binary search
code_lut  16-bit x: the code of every bit pattern (65536 uint8)
bracket   float32 x: per 16-bit prefix, the first interval of its values and how many bounds
          lie among them (65536 int16), so the kernel compares with those few bounds only
"""

from __future__ import annotations

import math

import torch

from .reference import encode
from .tables import cached

_COUNT_BITS = 4     # bracket entry = base << 4 | count in an int16: base < 2048, count < 16


def padded(bounds32: torch.Tensor) -> torch.Tensor:
    """bounds32 padded with +inf to 2^k - 1 entries for the binary search (cached)."""
    nb = bounds32.numel()
    size = (1 << nb.bit_length()) - 1
    if size == nb:
        return bounds32
    pad = (size - nb,)
    return cached(("padded",), (bounds32,), lambda: torch.cat(
        [bounds32, torch.full(pad, math.inf, dtype=torch.float32, device=bounds32.device)]))


def code_lut(bounds32: torch.Tensor, code_map: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(65536,) uint8: entry p is the torch path's code (reference.encode) of the `dtype` value
    with bit pattern p, so exact by construction; cached."""
    def build():
        # int16 i (pattern i mod 2^16) sits at position i + 2^15: roll by 2^15 to put it at its pattern
        ints = torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32, device=bounds32.device).to(torch.int16)
        return encode(ints.view(dtype), bounds32, None, code_map).roll(2 ** 15)

    return cached(("lut", dtype), (bounds32,) if code_map is None else (bounds32, code_map), build)


def _prefix_ends(device) -> tuple[torch.Tensor, torch.Tensor]:
    """(65536,) float32 lo, hi: the smallest and largest non-NaN float32 whose top 16 bits are p
    (NaN where there is none)."""
    p = torch.arange(1 << 16, dtype=torch.int64, device=device)
    first, last = p << 16, (p << 16) | 0xFFFF                     # uint32 patterns, in int64
    a, b = ((u - (u >> 31 << 32)).to(torch.int32).view(torch.float32) for u in (first, last))
    # the magnitude grows with the low bits: a negative prefix starts (in value order) at its last pattern
    neg = p >= 1 << 15
    lo, hi = torch.where(neg, b, a), torch.where(neg, a, b)
    # 0x7F80 is +inf and NaNs, 0xFF80 -inf and NaNs (the kernel sets NaN aside): take the inf
    return torch.where(lo.isnan(), hi, lo), torch.where(hi.isnan(), lo, hi)


def bracket(bounds32: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """(table, maxc) for float32 x; cached. Needs sorted bounds32 (TableConstants' are).

    For prefix p (the top 16 bits of x: sign, exponent, 7 mantissa bits), whose non-NaN values
    are those of [lo, hi]: base = interval(lo) = #{bounds <= lo} and count = #{bounds in (lo, hi]},
    table[p] = base << 4 | count, maxc = max count. For x in [lo, hi] the bounds
    bounds[base .. base + count - 1] are exactly those in (lo, hi], so
    interval(x) = base + #{j < count : !(x < bounds[base + j])}. Intervals are counted by
    torch.searchsorted(right=True), as the torch path counts them. table is None (use the search)
    where an entry does not fit: count >= 16 or 2048 bounds or more.
    """
    def build():
        lo, hi = _prefix_ends(bounds32.device)
        base = torch.searchsorted(bounds32, lo, right=True)
        count = torch.searchsorted(bounds32, hi, right=True) - base
        maxc = int(count.max())
        if maxc >= 1 << _COUNT_BITS or bounds32.numel() >= 1 << (15 - _COUNT_BITS):
            return None, maxc
        return ((base << _COUNT_BITS) | count).to(torch.int16), maxc

    return cached(("bracket", bounds32.device), (bounds32,), build)
