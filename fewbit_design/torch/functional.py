"""Few-bit activations: exact forward, b-bit saved codes, table backward.

forward:  y = f(x) with torch's own op;  code = codes[interval(x)] packed to b bits (saved)
backward: grad_x = (grad_y.float() * levels[code]).to(x.dtype)

Special inputs follow the table's interval convention (number of boundaries <= x):
-inf gets the first interval's level, +inf and NaN the last interval's level, so their
gradient is grad_y * level (finite for a finite grad_y; torch autograd usually gives NaN
for a NaN input).

Autocast: forward runs under the caller's autocast state, so f(x) has exactly the dtype
that the torch op has there (e.g. CUDA autocast runs softplus in float32); the gradient
is returned in the dtype of x. Levels are applied in float32 for every input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..table import Table
from . import kernels
from .packing import pack_codes, unpack_codes
from .tables import canonical_params, table_constants

try:
    from . import cpu     # numba kernels for CPU tensors
except ImportError:       # numba unusable: the torch path serves CPU tensors too
    cpu = None

__all__ = ["fewbit_activation", "torch_activation", "TORCH_FORWARD"]

_QUICK_GELU_K = 1.702


def _squared_relu(x):
    return torch.square(F.relu(x))


# registry name -> f(x, **params) with torch's own ops (bit for bit what torch.nn computes)
TORCH_FORWARD = {
    "relu": lambda x: F.relu(x),
    "leaky_relu": lambda x, negative_slope: F.leaky_relu(x, negative_slope),
    "elu": lambda x, alpha: F.elu(x, alpha),
    "celu": lambda x, alpha: F.celu(x, alpha),
    "selu": lambda x: F.selu(x),
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": lambda x: F.silu(x),
    "mish": lambda x: F.mish(x),
    "softplus": lambda x, beta, threshold: F.softplus(x, beta, threshold),
    "sigmoid": lambda x: torch.sigmoid(x),
    "tanh": lambda x: torch.tanh(x),
    "hardtanh": lambda x, min_val, max_val: F.hardtanh(x, min_val, max_val),
    "hardsigmoid": lambda x: F.hardsigmoid(x),
    "hardswish": lambda x: F.hardswish(x),
    "relu6": lambda x: F.relu6(x),
    "softsign": lambda x: F.softsign(x),
    "logsigmoid": lambda x: F.logsigmoid(x),
    "tanhshrink": lambda x: F.tanhshrink(x),
    "quick_gelu": lambda x: x * torch.sigmoid(_QUICK_GELU_K * x),
    "squared_relu": _squared_relu,
}

_COMPARE_MAX = 16  # up to this many intervals, m-1 compares beat torch.searchsorted on CPU
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def torch_activation(name: str, x: torch.Tensor, params: dict | None = None) -> torch.Tensor:
    """f(x) for a registry activation, computed with torch's own op (the native reference)."""
    fn = TORCH_FORWARD.get(name)
    if fn is None:
        raise ValueError(f"activation {name!r} has no torch implementation in fewbit_design.torch")
    return fn(x, **(params or {}))


def _encode(x: torch.Tensor, bounds32, bounds64, code_map) -> torch.Tensor:
    """(n,) uint8 code of each element of x (row-major), per the table's intervals."""
    flat = x.reshape(-1)
    if flat.dtype == torch.float64:
        bounds = bounds64
    else:
        # fp16/bf16 -> fp32 is exact; bounds32 are rounded up so x >= b32 <=> x >= b
        flat, bounds = flat.float(), bounds32
    m = bounds.shape[0] + 1
    if m <= _COMPARE_MAX:
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


def _use_kernels(t: torch.Tensor) -> bool:
    """The fused Triton kernels serve CUDA tensors of 16/32-bit floats when Triton is there."""
    return t.is_cuda and t.dtype in (torch.float16, torch.bfloat16, torch.float32) and kernels.triton_available(t.device)


class FewbitFunction(torch.autograd.Function):
    """y = f(x) exactly; saves only the packed b-bit codes; grad_x = grad_y * levels[code]."""

    @staticmethod
    def forward(ctx, x, bounds32, bounds64, code_map, levels, name, params, bits):
        if _use_kernels(x) and x.is_contiguous():
            # one pass over x: f(x) where the kernel's f is bit for bit torch's, codes, packing
            exact = name in kernels.FUSED_ACTIVATIONS and kernels.fused_y_exact(name, x.dtype, x.device, params)
            y, packed = kernels.fused_forward(x, bounds32, code_map, bits, name if exact else None, params)
            if y is None:
                y = TORCH_FORWARD[name](x, **params)
        else:
            y = TORCH_FORWARD[name](x, **params)
            if cpu is not None and cpu.serves(x):
                packed = cpu.encode(x, bounds32, code_map, bits)      # same bytes, one numba pass
            else:
                packed = pack_codes(_encode(x, bounds32, bounds64, code_map), bits)  # (bits*ceil(n/8),)
        ctx.save_for_backward(packed)
        ctx.levels = levels  # a constant shared by every call (module buffer / per-device cache)
        ctx.bits, ctx.shape, ctx.dtype = bits, x.shape, x.dtype
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (packed,) = ctx.saved_tensors
        if _use_kernels(grad_y) and ctx.dtype != torch.float64:   # same bytes on either path
            grad_x = kernels.fused_backward(packed, grad_y, ctx.levels, ctx.bits, dtype=ctx.dtype)
            return grad_x, None, None, None, None, None, None, None
        if (cpu is not None and cpu.serves(grad_y) and grad_y.dtype == ctx.dtype
                and packed.device.type == "cpu" and not torch.is_grad_enabled()):   # no double backward
            return cpu.decode(packed, grad_y, ctx.levels, ctx.bits), None, None, None, None, None, None, None
        n = grad_y.numel()
        codes = unpack_codes(packed, ctx.bits, n)                      # (n,) uint8
        scale = ctx.levels.index_select(0, codes.int()).view(ctx.shape)  # float32, x's shape
        grad_x = (grad_y.float() * scale).to(ctx.dtype)
        return grad_x, None, None, None, None, None, None, None


def _apply(x: torch.Tensor, name: str, params: dict, bits: int, bounds32, bounds64, code_map, levels):
    if not (torch.is_grad_enabled() and x.requires_grad):
        return TORCH_FORWARD[name](x, **params)  # nothing to save
    return FewbitFunction.apply(x, bounds32, bounds64, code_map, levels, name, params, bits)


def fewbit_activation(x: torch.Tensor, table: Table) -> torch.Tensor:
    """Apply the table's activation with a few-bit backward.

    Parameters
    ----------
    x : torch.Tensor
        float16, bfloat16, float32 or float64 input of any shape and strides.
    table : Table
        The activation (name and parameters) and its b-bit derivative table.

    Returns
    -------
    torch.Tensor
        f(x), bit for bit what the torch op returns. When x needs a gradient, only
        ceil(n / 8) * b bytes of codes are kept for backward, which returns
        grad_y * q(x) with q(x) = table.q(x) in float32, cast to x's dtype.
        NaN and +inf inputs take the last interval's level, -inf the first.
    """
    if not isinstance(table, Table):
        raise TypeError(f"table must be a fewbit_design Table, got {type(table).__name__}")
    if table.activation not in TORCH_FORWARD:
        raise ValueError(f"activation {table.activation!r} has no torch implementation in fewbit_design.torch")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"fewbit activations take a floating tensor, got {x.dtype}")
    c = table_constants(table, x.device)
    return _apply(x, table.activation, canonical_params(table.activation, table.params), c.bits,
                  c.bounds32, c.bounds64, c.code_map, c.levels)
