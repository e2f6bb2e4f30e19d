"""Runtime step, bit-plane packing of b-bit codes: exactly b bits per element, any b in 1..8.

Layout (n codes, b bits, B = ceil(n / 8) bytes per plane, b * B bytes in all)::

    plane p holds bit p of every code; byte k of a plane holds elements 8k .. 8k+7,
    element 8k+j in bit j (little-endian inside the byte); planes follow one another.

            byte 0 of plane p                          byte 1 of plane p
    bit:  7    6    5    4    3    2    1    0      7  ...  1    0
        [c7p][c6p][c5p][c4p][c3p][c2p][c1p][c0p]   [c15p] ... [c9p][c8p]      (cjp = bit p of code j)

    packed = [ plane 0: B bytes | plane 1: B bytes | ... | plane b-1: B bytes ]

Worked example, b = 3, n = 9, codes = [5, 3, 0, 7, 1, 6, 2, 4, 6] (B = 2; the tail is
zero-padded to 16 elements)::

    element j       0  1  2  3  4  5  6  7 | 8
    code            5  3  0  7  1  6  2  4 | 6
    bit 0           1  1  0  1  1  0  0  0 | 0   -> byte 0b00011011 = 0x1B, then 0x00
    bit 1           0  1  0  1  0  1  1  0 | 1   -> byte 0b01101010 = 0x6A, then 0x01
    bit 2           1  0  0  1  0  1  0  1 | 1   -> byte 0b10101001 = 0xA9, then 0x01

    packed = [0x1B, 0x00, 0x6A, 0x01, 0xA9, 0x01]

Why planes: a GPU program that owns a block of 8k elements writes (and later reads) k
consecutive bytes in each plane, so every plane is accessed in coalesced runs whatever b is;
no element straddles a byte. Size: b * ceil(n/8) <= ceil(n*b/8) + 7 bytes. The plain torch
code below handles 8 codes as one little-endian int64 word (torch runs little-endian only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..table import check_bits

__all__ = ["pack_codes", "unpack_codes", "packed_nbytes"]


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that `pack_codes` returns for `n` codes of `bits` bits: bits * ceil(n / 8)."""
    return bits * ((n + 7) // 8)


# 8 codes are handled as one little-endian int64 word (code j of the group in byte j);
# these masks move bit 0 of each byte into one byte (gather) and back (spread).
_GATHER = ((7, 0x0003000300030003), (14, 0x0000000F0000000F), (28, 0xFF))
_SPREAD = ((28, 0x0000000F0000000F), (14, 0x0003000300030003), (7, 0x0101010101010101))
_ONES = 0x0101010101010101


def _words(flat: torch.Tensor, nbytes: int) -> torch.Tensor:
    """(B,) int64 view of the codes zero-padded to 8 * B bytes.

    Always a fresh copy (offset 0, so the int64 view is aligned): no branch on the input's
    storage offset, which torch.compile cannot trace without a graph break.
    """
    return F.pad(flat, (0, 8 * nbytes - flat.numel())).view(torch.int64)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack b-bit codes into bit planes (layout in the module docstring).

    Parameters
    ----------
    codes : torch.Tensor
        uint8 tensor of any shape (read in row-major order), each value < 2**bits.
        Bits above `bits` are ignored.
    bits : int
        Code width b in 1..8.

    Returns
    -------
    torch.Tensor
        Contiguous uint8 tensor of shape (bits * ceil(n / 8),) on the same device.
    """
    bits = check_bits(bits)
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be a uint8 tensor, got {codes.dtype}")
    flat = codes.reshape(-1)
    nbytes = (flat.numel() + 7) // 8
    words = _words(flat, nbytes)                                               # (B,) 8 codes each
    out = torch.empty(bits, nbytes, dtype=torch.uint8, device=codes.device)   # (b, B)
    for p in range(bits):
        w = (words >> p) & _ONES  # bit p of code j -> bit 8j
        for shift, mask in _GATHER:  # bit 8j -> bit j
            w = (w | (w >> shift)) & mask
        out[p] = w
    return out.view(-1)


def unpack_codes(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_codes`: the first `n` codes as a (n,) uint8 tensor.

    Parameters
    ----------
    packed : torch.Tensor
        uint8 tensor of bits * ceil(n / 8) bytes, as returned by `pack_codes`.
    bits : int
        Code width b in 1..8.
    n : int
        Number of codes packed.
    """
    bits = check_bits(bits)
    nbytes = (n + 7) // 8
    if packed.dtype != torch.uint8 or packed.numel() != bits * nbytes:
        raise ValueError(f"packed must be {bits * nbytes} uint8 bytes for n={n}, bits={bits}; "
                         f"got {packed.numel()} {packed.dtype}")
    planes = packed.reshape(bits, nbytes)                                      # (b, B)
    words = torch.zeros(nbytes, dtype=torch.int64, device=packed.device)      # (B,) 8 codes each
    for p in range(bits):
        w = planes[p].to(torch.int64)
        for shift, mask in _SPREAD:  # bit j -> bit 8j
            w = (w | (w << shift)) & mask
        words |= w << p
    return words.view(torch.uint8)[:n]
