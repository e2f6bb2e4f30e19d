"""Runtime step, the plain torch path (the reference): f(x) with torch's own ops, and the b-bit encoder.

Everything else in the runtime is checked against this module: the fused kernels' y and
codes, the prefix and lookup tables of lut.py (built by calling `encode`), and the tests.
It imports nothing else of the runtime, so every other module may import it.

encode: x -> uint8 code per element, by the table's interval convention (number of
boundaries <= x): NaN lands in the last interval, -inf in the first, +inf in the last.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..activations import REGISTRY

__all__ = ["TORCH_FORWARD", "FLOAT_DTYPES", "torch_activation", "encode"]

# registry name -> f(x, **params) with torch's own ops (bit for bit what torch.nn computes)
TORCH_FORWARD = {spec.name: functools.partial(spec.torch_forward, F)
                 for spec in REGISTRY.values() if spec.torch_forward is not None}


_TORCH_COMPARE_INTERVALS = 16  # up to this many intervals, m-1 compares beat torch.searchsorted on CPU


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def torch_activation(name: str, x: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """f(x) for a registry activation, computed with torch's own op (the native reference)."""
    fn = TORCH_FORWARD.get(name)
    if fn is None:
        raise ValueError(f"activation {name!r} has no torch implementation in fewbit_design.torch")
    return fn(x, **(params or {}))


def encode(x: torch.Tensor, bounds32, bounds64, code_map) -> torch.Tensor:
    """(n,) uint8 code of each element of x (row-major), per the table's intervals."""
    flat = x.reshape(-1)
    if flat.dtype == torch.float64:
        bounds = bounds64
    else:
        # fp16/bf16 -> fp32 is exact; bounds32 are rounded up so x >= b32 <=> x >= b
        flat, bounds = flat.float(), bounds32
    m = bounds.shape[0] + 1
    if m <= _TORCH_COMPARE_INTERVALS:
        # interval = #(b <= x) = (m-1) - #(x < b): NaN compares false, so it lands last
        below = torch.zeros(flat.shape, dtype=torch.uint8, device=x.device)
        for i in range(m - 1):
            below += flat < bounds[i]
        interval = (m - 1) - below
    else:
        # same count by binary search (upper bound): NaN also lands last
        interval = torch.searchsorted(bounds, flat, right=True, out_int32=True)
    if code_map is None:
        return interval.to(torch.uint8)
    return code_map.index_select(0, interval.int())
