"""JAX runtime, bit-plane packing of b-bit codes, written from the layout in the table-format
docs (README "Table files" and the layout drawn in ``fewbit_design/torch/packing.py``).

n codes of b bits, B = ceil(n / 8) bytes per plane, b * B bytes in all: plane p holds bit p
of every code; byte k of a plane holds elements 8k .. 8k+7, element 8k+j in bit j; the
planes follow one another; the last byte of each plane is zero-padded.

    codes = [5, 3, 0, 7, 1, 6, 2, 4, 6], b = 3  ->  [0x1B, 0x00, 0x6A, 0x01, 0xA9, 0x01]
"""

from __future__ import annotations

import jax.numpy as jnp

from ..table import check_bits

__all__ = ["pack_codes", "unpack_codes", "packed_nbytes"]

_SHIFTS = jnp.arange(8, dtype=jnp.uint8)     # element 8k+j sits in bit j of byte k


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that `pack_codes` returns for `n` codes of `bits` bits: bits * ceil(n / 8)."""
    return check_bits(bits) * ((n + 7) // 8)


def pack_codes(codes, bits: int):
    """(n,) uint8 codes < 2**bits -> (bits * ceil(n/8),) uint8 bit planes."""
    bits = check_bits(bits)
    n = codes.shape[0]
    nbytes = (n + 7) // 8
    groups = jnp.pad(codes.astype(jnp.uint8), (0, 8 * nbytes - n)).reshape(nbytes, 8)   # (B, 8)
    planes = [(((groups >> p) & 1) << _SHIFTS).sum(axis=1, dtype=jnp.uint8) for p in range(bits)]
    return jnp.concatenate(planes) if planes else jnp.zeros((0,), jnp.uint8)            # (b*B,)


def unpack_codes(packed, bits: int, n: int):
    """Inverse of `pack_codes`: (bits * ceil(n/8),) uint8 -> (n,) uint8 codes."""
    bits = check_bits(bits)
    nbytes = (n + 7) // 8
    planes = packed.reshape(bits, nbytes, 1)                                   # (b, B, 1)
    bit = (planes >> _SHIFTS) & 1                                              # (b, B, 8)
    weights = (jnp.uint8(1) << jnp.arange(bits, dtype=jnp.uint8)).reshape(bits, 1, 1)
    return (bit * weights).sum(axis=0, dtype=jnp.uint8).reshape(-1)[:n]        # (n,)
