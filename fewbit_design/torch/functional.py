"""Runtime step, the autograd function: exact forward, b-bit saved codes, table backward.

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

import warnings

import torch
from torch._functorch.utils import unwrap_dead_wrappers

from ..table import Table
from . import kernels
from .packing import pack_codes, unpack_codes
from .reference import FLOAT_DTYPES, TORCH_FORWARD, encode
from .tables import canonical_params, table_constants

try:
    from . import cpu     # numba kernels for CPU tensors
except ImportError:       # numba unusable: the torch path serves CPU tensors too
    cpu = None

__all__ = ["fewbit_activation", "FewbitFunction"]


def _use_kernels(t: torch.Tensor) -> bool:
    """The fused Triton kernels serve CUDA tensors of 16/32-bit floats when Triton is there."""
    return t.is_cuda and t.dtype in (torch.float16, torch.bfloat16, torch.float32) and kernels.triton_available(t.device)


_DOUBLE_BACKWARD = (
    "double backward through a few-bit activation ({name}) is not supported: only a b-bit code "
    "of x was kept, so the f''(x) term of the second derivative cannot be computed (the "
    "table's q is piecewise constant). For gradient penalties, Hessian-vector products or "
    "gradgradcheck, use the torch.nn activation there (fewbit_design.torch.unconvert(model)).")


class _NoDoubleBackward(torch.autograd.Function):
    """grad_x, tied to x through `anchor`; differentiating it raises (create_graph=True only)."""

    @staticmethod
    def forward(grad_x, anchor, name):
        return grad_x.view_as(grad_x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.name = inputs[2]

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(_DOUBLE_BACKWARD.format(name=ctx.name))


class FewbitFunction(torch.autograd.Function):
    """y = f(x) exactly; saves only the packed b-bit codes; grad_x = grad_y * levels[code].

    forward returns (y, packed, anchor) (a forward without ctx plus setup_context is the form
    torch.func transforms need): packed is non-differentiable and saved; anchor is an empty
    differentiable output, saved so that a gradient made with create_graph=True depends on x
    through it, and a second backward reaches `_NoDoubleBackward` and raises instead of
    dropping the f'' term (whether or not grad_y itself requires grad).
    """

    @staticmethod
    def forward(x, bounds32, bounds64, code_map, levels, name, params, bits):
        if _use_kernels(x) and x.is_contiguous():
            # one pass over x: f(x) where the kernel's f is bit for bit torch's, codes, packing
            exact = name in kernels.FUSED_ACTIVATIONS and kernels.fused_y_exact(name, x.dtype, x.device, params)
            y, packed = kernels.fused_forward(x, bounds32, code_map, bits, name if exact else None, params)
            if y is None:
                y = TORCH_FORWARD[name](x, **params)
        elif cpu is not None and cpu.serves(x):
            packed = cpu.encode(x, bounds32, code_map, bits)          # same bytes, one numba pass
            y = TORCH_FORWARD[name](x, **params)
        else:
            y = TORCH_FORWARD[name](x, **params)
            packed = pack_codes(encode(x, bounds32, bounds64, code_map), bits)  # (bits*ceil(n/8),)
        return y, packed, x.new_empty(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, _, _, levels, name, _, bits = inputs
        _, packed, anchor = output
        ctx.mark_non_differentiable(packed)
        ctx.save_for_backward(packed, anchor)
        ctx.levels = levels  # a constant shared by every call (module buffer / per-device cache)
        ctx.name, ctx.bits, ctx.shape, ctx.dtype = name, bits, x.shape, x.dtype

    @staticmethod
    def backward(ctx, grad_y, _grad_packed, _grad_anchor):
        packed, anchor = ctx.saved_tensors
        if _use_kernels(grad_y) and ctx.dtype != torch.float64:   # same bytes on either path
            grad_x = kernels.fused_backward(packed, grad_y, ctx.levels, ctx.bits, dtype=ctx.dtype)
        elif (cpu is not None and cpu.serves(grad_y) and grad_y.dtype == ctx.dtype
                and packed.device.type == "cpu" and not torch.is_grad_enabled()):   # create_graph: torch path
            grad_x = cpu.decode(packed, grad_y, ctx.levels, ctx.bits)          # same values, one numba pass
        else:
            codes = unpack_codes(packed, ctx.bits, grad_y.numel())            # (n,) uint8
            scale = ctx.levels.index_select(0, codes.int()).view(ctx.shape)  # float32, x's shape
            grad_x = (grad_y.float() * scale).to(ctx.dtype)
        if torch.is_grad_enabled():  # create_graph=True (or a torch.func transform)
            grad_x = _NoDoubleBackward.apply(grad_x, anchor, ctx.name)
        return grad_x, None, None, None, None, None, None, None


_APPLY = super(torch.autograd.Function, FewbitFunction).apply   # torch's C++ apply, bound to FewbitFunction

_EXPORT_WARNING = ("torch.export does not carry a few-bit backward: the exported program computes "
                   "f(x) with torch's op, and if it is trained, torch's exact f' (keeping x)")


def fewbit_apply(x: torch.Tensor, name: str, params: dict, bits: int, bounds32, bounds64, code_map, levels):
    if not (torch.is_grad_enabled() and x.requires_grad):
        return TORCH_FORWARD[name](x, **params)  # nothing to save
    if torch.compiler.is_exporting():
        # export inlines an autograd.Function's forward and drops its backward: say so, and
        # export the plain op rather than a coding and packing whose result nothing reads
        warnings.warn(_EXPORT_WARNING, stacklevel=3)
        return TORCH_FORWARD[name](x, **params)
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return FewbitFunction.apply(x, bounds32, bounds64, code_map, levels, name, params, bits)[0]
    # eager: what Function.apply does, minus binding the arguments to forward's signature through
    # inspect (tens of microseconds a call; every argument here is already positional)
    x = unwrap_dead_wrappers((x,))[0]
    return _APPLY(x, bounds32, bounds64, code_map, levels, name, params, bits)[0]


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
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"fewbit activations take a floating tensor, got {x.dtype}")
    c = table_constants(table, x.device)
    return fewbit_apply(x, table.activation, canonical_params(table.activation, table.params), c.bits,
                  c.bounds32, c.bounds64, c.code_map, c.levels)
