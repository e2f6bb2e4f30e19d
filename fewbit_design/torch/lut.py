"""Tables the fused forward kernel reads, built once per table tensor with torch ops on its device.

_padded   bounds32 padded with +inf for the binary search
_lut      16-bit x: the code of every bit pattern (65536 uint8)
"""

from __future__ import annotations

import math
import weakref

import torch

_CACHE_SIZE = 256   # padded bounds and LUTs kept (LUT: 64 KiB each)

_CACHE: dict = {}


def _cached(what: tuple, tensors: tuple, build):
    """build(), once per `what` and state of `tensors` (address, size, version and storage).

    Modules pass a fresh dtype view of a buffer on every call; it shares the buffer's storage
    object (torch keeps one per storage), and a weakref to that tells it from a freed one
    whose address was handed out again.
    """
    key = what + tuple((t.data_ptr(), t.numel(), t._version) for t in tensors)
    storages = tuple(t.untyped_storage() for t in tensors)
    hit = _CACHE.get(key)
    if hit is None or any(ref() is not st for ref, st in zip(hit[0], storages)):
        hit = _CACHE[key] = (tuple(weakref.ref(st) for st in storages), build())
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return hit[1]


def _padded(bounds32: torch.Tensor) -> torch.Tensor:
    """bounds32 padded with +inf to 2^k - 1 entries for the binary search (cached)."""
    nb = bounds32.numel()
    size = (1 << nb.bit_length()) - 1
    if size == nb:
        return bounds32
    pad = (size - nb,)
    return _cached(("padded",), (bounds32,), lambda: torch.cat(
        [bounds32, torch.full(pad, math.inf, dtype=torch.float32, device=bounds32.device)]))


def _lut(bounds32: torch.Tensor, code_map: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(65536,) uint8: entry p is the torch path's code (functional._encode) of the `dtype` value
    with bit pattern p, so exact by construction; cached."""
    def build():
        from .functional import _encode  # functional imports kernels, which imports this module

        # int16 i (pattern i mod 2^16) sits at position i + 2^15: roll by 2^15 to put it at its pattern
        ints = torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32, device=bounds32.device).to(torch.int16)
        return _encode(ints.view(dtype), bounds32, None, code_map).roll(2 ** 15)

    return _cached(("lut", dtype), (bounds32,) if code_map is None else (bounds32, code_map), build)
