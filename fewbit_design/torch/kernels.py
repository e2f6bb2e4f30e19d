"""Runtime step, fused Triton kernels: activation + coding + bit-plane packing forward, unpack + lookup backward.

forward:  y = f(x) (optional);  code = code_map[#{bounds32 <= x}];  packed planes (packing.py layout)
          (16-bit x at bits >= config.lut_min_bits: code = lut[bit pattern of x], the same codes;
          float32 x at bits >= config.lut32_min_bits: the count starts from a table indexed by the top
          16 bits of x and compares x only with the bounds inside that prefix's range)
backward: grad_in = grad_out * levels[code]   (fp32 math, stored in grad_out's dtype)

Each program owns BYTES consecutive bytes of every plane, i.e. the BLOCK = 8 * BYTES elements
8k .. 8k + BLOCK - 1, held as a (BYTES, 8) tile: row r is byte r of each plane, column j is
bit j. The bytes equal ``pack_codes(codes, bits)`` exactly; the plain torch path (reference.py) is
the oracle in the tests.

Inputs are float16, bfloat16 or float32 (fp16/bf16 -> fp32 is exact, so comparing against the
float32 bounds, rounded up, gives the table's interval); float64 stays on the torch path.
f(x) follows torch's CUDA formulas; `fused_y_exact` checks, once per activation, dtype and
device, that it is bit for bit torch's. On CPU the kernels run only under TRITON_INTERPRET=1
(tests), with numpy's math.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import torch

from .lut import bracket, code_lut, padded
from ..table import check_bits
from .packing import packed_nbytes
from .reference import TORCH_FORWARD

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # torch without Triton: the module imports, triton_available() is False
    triton = tl = libdevice = None

__all__ = ["fused_forward", "fused_backward", "fused_y_exact", "triton_available", "FUSED_ACTIVATIONS",
           "KernelConfig", "DEFAULT_CONFIG"]

# activation name -> ACT id of the forward kernel (0: y is computed by torch, not here)
FUSED_ACTIVATIONS = {"relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4, "sigmoid": 5, "tanh": 6,
                     "leaky_relu": 7}
# ACT ids whose formula calls libdevice (erf, exp, tanh, div_rn)
_LIBDEVICE_ACTS = (2, 3, 4, 5, 6)
# the one float parameter an activation passes to the kernel
_ACT_PARAM = {"leaky_relu": "negative_slope"}

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LUT_DTYPES = (torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """How the fused kernels launch and find codes: a value passed in, never a global to assign.

    The defaults (DEFAULT_CONFIG) are measured on an H200; python -m benchmarks.gpu_kernels --tune times
    others. A config changes speed only: every choice gives the same bytes and gradients.

    Attributes
    ----------
    lut_min_bits : float16 / bfloat16 x from this many bits: one gather from the 65536-entry
        table of codes instead of the search. H200, bf16 GELU, 2^28, search / LUT forward:
        496 / 563 us at 1 bit, 562 / 564 at 2, 620 / 536 at 3, 1026 / 571 at 8.
    lut32_min_bits : float32 x from this many bits: one gather from the prefix table
        (lut.bracket), then compares with the rare bounds inside the prefix, instead of the
        search. H200, fp32 GELU, 2^28, search / table forward: 577 / 794 us at 1 bit, 718 / 840
        at 4, 873 / 947 at 6, 946 / 880 at 7, 1171 / 888 at 8 (native 518): the 128 KiB table
        costs more than a short search. 9 turns a table off.
    block_bytes, num_warps : on the GPU, bytes of each plane per program (8 * block_bytes
        elements: 1024 measured best on an H200) and warps per program.
    linear_max : up to this many bounds, compare with each; else binary search.
    interp_max_bytes : the interpreter is fastest with few, large programs: bytes per program
        there, at most.
    """

    lut_min_bits: int = 3
    lut32_min_bits: int = 7
    block_bytes: int = 128
    num_warps: int = 4
    linear_max: int = 1
    interp_max_bytes: int = 1024

    def __post_init__(self):
        for name in ("lut_min_bits", "lut32_min_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 9:
                raise ValueError(f"KernelConfig.{name} must be an integer in 1..9 (9: never), got {v!r}")
        for name in ("block_bytes", "num_warps", "interp_max_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v & (v - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two, got {v!r}")
        if isinstance(self.linear_max, bool) or not isinstance(self.linear_max, int) or self.linear_max < 0:
            raise ValueError(f"KernelConfig.linear_max must be an integer >= 0, got {self.linear_max!r}")


DEFAULT_CONFIG = KernelConfig()


def _jit(fn):
    return fn if triton is None else triton.jit(fn)


# ------------------------------------------------------------------------------- kernels

@_jit
def _erf(x, INTERP: tl.constexpr):
    if INTERP:  # libdevice is GPU-only; the interpreter's math is numpy's
        return tl.math.erf(x)
    else:
        return libdevice.erf(x)


@_jit
def _exp(x, INTERP: tl.constexpr):
    if INTERP:
        return tl.math.exp(x)
    else:
        return libdevice.exp(x)  # expf; tl.exp is ex2.approx on the GPU


@_jit
def _tanh(x, INTERP: tl.constexpr):
    if INTERP:
        # tanh|x| = (1 - e) / (1 + e), e = exp(-2|x|): no overflow, no cancellation near 0
        e = tl.math.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x < 0.0, -t, t)
    else:
        return libdevice.tanh(x)


@_jit
def _div_rn(a, b, INTERP: tl.constexpr):
    if INTERP:
        return a / b
    else:
        return libdevice.div_rn(a, b)  # IEEE division; fp32 `/` is div.full (approximate)


@_jit
def _cast(y, dtype: tl.constexpr, INTERP: tl.constexpr):
    # fp32 -> dtype, rounding to nearest even (cvt.rn on the GPU)
    if INTERP:
        if dtype == tl.bfloat16:
            # the interpreter truncates fp32 -> bf16: round by hand, bf16 = top 16 bits of
            # (u + 0x7FFF + lsb), lsb = bit 16 of u (ties to even); NaN stays a quiet NaN
            u = y.to(tl.uint32, bitcast=True)
            r = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            r = tl.where(y != y, 0x7FC0, r)
            return r.to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            return y.to(dtype)
    else:
        return y.to(dtype)


@_jit
def _upcast(x, INTERP: tl.constexpr):
    # x's dtype -> fp32, exact; the interpreter mangles bf16 subnormals, so there a bf16 is
    # widened by its bits (it is the top half of an fp32)
    if INTERP:
        if x.dtype == tl.bfloat16:
            x = (x.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return x.to(tl.float32)


@_jit
def _activation(x, param, ACT: tl.constexpr, INTERP: tl.constexpr):
    # fp32 x -> fp32 f(x), written as torch's CUDA kernels write it (opmath float);
    # python float constants round to float32 as nvcc rounds the constexpr opmath_t values
    if ACT == 1:
        # relu = clamp_min(x, 0): NaN propagates
        y = tl.where(x != x, x, tl.maximum(x, 0.0))
    elif ACT == 2:
        # gelu = x * 0.5 * (1 + erf(x * M_SQRT1_2))
        y = x * 0.5 * (1.0 + _erf(x * 0.7071067811865476, INTERP))
    elif ACT == 3:
        # gelu_tanh = 0.5 * x * (1 + tanh(beta * (x + kappa * x^3))), nvcc contracts to an fma;
        # beta = M_SQRT2 * M_2_SQRTPI * 0.5 in double = 0.7978845608028654, kappa = 0.044715
        x_cube = x * x * x
        inner = 0.7978845608028654 * tl.fma(0.044715, x_cube, x)
        y = 0.5 * x * (1.0 + _tanh(inner, INTERP))
    elif ACT == 4:
        # silu = x / (1 + exp(-x))
        y = _div_rn(x, 1.0 + _exp(-x, INTERP), INTERP)
    elif ACT == 5:
        # sigmoid = 1 / (1 + exp(-x))
        y = _div_rn(tl.full(x.shape, 1.0, tl.float32), 1.0 + _exp(-x, INTERP), INTERP)
    elif ACT == 6:
        # tanh = tanhf(x)
        y = _tanh(x, INTERP)
    else:
        # leaky_relu = x > 0 ? x : x * negative_slope   (negative_slope rounded to float32)
        y = tl.where(x > 0.0, x, x * param)
    return y


@_jit
def _tile(n, nbytes, BYTES: tl.constexpr, EVEN: tl.constexpr, I64: tl.constexpr):
    # this program's bytes of each plane (rows), and its elements 8 * row + bit (offs)
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    rows = pid * BYTES + tl.arange(0, BYTES)                        # (BYTES,) byte of each plane
    cols = tl.arange(0, 8)                                          # (8,) bit in the byte
    offs = rows[:, None] * 8 + cols[None, :]                        # (BYTES, 8) element 8k + j
    if EVEN:  # n is a multiple of 8 * BYTES: constant masks, folded away
        mask = tl.full((BYTES, 8), 1, tl.int1)
        rmask = tl.full((BYTES,), 1, tl.int1)
    else:
        mask = offs < n
        rmask = rows < nbytes
    return rows, cols, offs, mask, rmask


@_jit
def _pack_nibble(code, SHIFT: tl.constexpr, cols):
    # four planes at once: bit q of c = (code >> SHIFT) & 15 moves to bit 8q (c * 0x204081 has
    # no carries), element j of the row to bit j of each byte; the 8 elements hold disjoint
    # bits, so their sum is their OR. Byte q of the result is plane SHIFT + q.
    spread = (((code >> SHIFT) & 15) * 0x204081) & 0x01010101       # (BYTES, 8)
    return tl.sum(spread << cols[None, :], axis=1)                  # (BYTES,)


@_jit
def _unpack_nibble(word, cols):
    # inverse of _pack_nibble: bit j of each byte -> bits 0, 8, 16, 24 of t; the product
    # t * 0x01020408 gathers them, without carries, at bits 24..27
    t = (word[:, None] >> cols[None, :]) & 0x01010101               # (BYTES, 8)
    return ((t * 0x01020408) >> 24) & 15


@_jit
def _search_code(x, bounds_ptr, code_map_ptr, BYTES: tl.constexpr, NB: tl.constexpr, LOG2: tl.constexpr,
                 LINEAR: tl.constexpr, LEVELSET: tl.constexpr):
    # interval = #{i : bounds[i] <= x}, tested as !(x < b) the way torch.searchsorted(right=True)
    # tests it, so NaN passes every test and lands in the last interval
    pos = tl.zeros((BYTES, 8), dtype=tl.int32)
    if LINEAR:
        # few bounds: compare with each (scalar loads), no gathers
        for i in tl.static_range(NB):
            pos += tl.where(x < tl.load(bounds_ptr + i), 0, 1)
    else:
        # greedy binary search over 2^LOG2 - 1 bounds (padded with +inf); NaN and +inf pass the
        # padding too, hence the final min. Steps 1 and 2 have one and two candidate bounds:
        # scalar loads instead of gathers
        half: tl.constexpr = 1 << (LOG2 - 1)
        quarter: tl.constexpr = half >> 1
        upper = ~(x < tl.load(bounds_ptr + (half - 1)))
        pos = tl.where(upper, half, 0)
        b = tl.where(upper, tl.load(bounds_ptr + (half + quarter - 1)), tl.load(bounds_ptr + (quarter - 1)))
        pos = tl.where(x < b, pos, pos + quarter)
        for s in tl.static_range(2, LOG2):
            idx = pos + ((1 << (LOG2 - 1 - s)) - 1)
            pos = tl.where(x < tl.load(bounds_ptr + idx), pos, idx + 1)
        pos = tl.minimum(pos, NB)
    if LEVELSET:
        code = tl.load(code_map_ptr + pos).to(tl.int32)
    else:
        code = pos
    return code


@_jit
def _bracket_code(x, x_raw, bracket_ptr, bounds_ptr, NB: tl.constexpr, MAXC: tl.constexpr):
    # float32 x, prefix p = top 16 bits of x (sign, exponent, 7 mantissa bits), entry[p] =
    # base << 4 | count (lut._bracket): interval = base + #{j < count : !(x < bounds[base + j])},
    # in MAXC = max count steps; a step reads a bound only where j < count, and count is 0 for
    # nearly every prefix, so mostly one gather from a 128 KiB table instead of log2(#bounds)
    entry = tl.load(bracket_ptr + (x_raw.to(tl.uint32, bitcast=True) >> 16).to(tl.int32)).to(tl.int32)
    base = entry >> 4
    count = entry & 15
    pos = base
    for j in tl.static_range(MAXC):
        inside = j < count
        b = tl.load(bounds_ptr + base + j, mask=inside, other=0.0)
        pos += tl.where(inside & ~(x < b), 1, 0)
    # NaN: the last interval, as in the search (prefix 0xFF80 holds -inf and NaNs; its entry is -inf's)
    return tl.where(x != x, NB, pos)


@_jit
def _fewbit_forward_kernel(x_ptr, y_ptr, packed_ptr, bounds_ptr, code_map_ptr, lut_ptr, param, n, nbytes,
                           ACT: tl.constexpr, BITS: tl.constexpr, NB: tl.constexpr, LOG2: tl.constexpr,
                           LINEAR: tl.constexpr, LEVELSET: tl.constexpr, LUT: tl.constexpr,
                           MAXC: tl.constexpr, BYTES: tl.constexpr, EVEN: tl.constexpr,
                           I64: tl.constexpr, INTERP: tl.constexpr):
    rows, cols, offs, mask, rmask = _tile(n, nbytes, BYTES, EVEN, I64)
    x_raw = tl.load(x_ptr + offs, mask=mask, other=0.0)
    x = _upcast(x_raw, INTERP)

    if ACT != 0:
        y = _activation(x, param, ACT, INTERP)
        tl.store(y_ptr + offs, _cast(y, x_raw.dtype, INTERP), mask=mask)

    if LUT == 16:
        # 16-bit x: code = lut[bit pattern of x], the torch path's code of each of the 65536
        # values (NaN, +-inf, +-0 and subnormals included): one gather from a 64 KiB table
        # that stays in cache, instead of the search's log2(#bounds) gathers and code_map
        code = tl.load(lut_ptr + x_raw.to(tl.uint16, bitcast=True).to(tl.int32)).to(tl.int32)
    elif LUT == 32:
        code = _bracket_code(x, x_raw, lut_ptr, bounds_ptr, NB, MAXC)
        if LEVELSET:
            code = tl.load(code_map_ptr + code).to(tl.int32)
    else:
        code = _search_code(x, bounds_ptr, code_map_ptr, BYTES, NB, LOG2, LINEAR, LEVELSET)
    code = tl.where(mask, code, 0)   # the tail past n packs as zero bits

    # plane p, byte k = sum_j (bit p of code 8k+j) << j
    word = _pack_nibble(code, 0, cols)
    for p in tl.static_range(4):
        if p < BITS:
            tl.store(packed_ptr + p * nbytes + rows, ((word >> (8 * p)) & 255).to(tl.uint8), mask=rmask)
    if BITS > 4:
        word = _pack_nibble(code, 4, cols)
        for p in tl.static_range(4, BITS):
            tl.store(packed_ptr + p * nbytes + rows, ((word >> (8 * (p - 4))) & 255).to(tl.uint8),
                     mask=rmask)


@_jit
def _fewbit_backward_kernel(packed_ptr, grad_out_ptr, grad_in_ptr, levels_ptr, n, nbytes,
                            BITS: tl.constexpr, BYTES: tl.constexpr, EVEN: tl.constexpr,
                            I64: tl.constexpr, INTERP: tl.constexpr):
    rows, cols, offs, mask, rmask = _tile(n, nbytes, BYTES, EVEN, I64)

    # code of element 8k+j = sum_p (bit j of plane p, byte k) << p; planes 4q..4q+3 are read
    # as the bytes of one word
    word = tl.zeros((BYTES,), dtype=tl.int32)
    for p in tl.static_range(4):
        if p < BITS:
            byte = tl.load(packed_ptr + p * nbytes + rows, mask=rmask, other=0).to(tl.int32)
            word = word | (byte << (8 * p))
    code = _unpack_nibble(word, cols)
    if BITS > 4:
        word = tl.zeros((BYTES,), dtype=tl.int32)
        for p in tl.static_range(4, BITS):
            byte = tl.load(packed_ptr + p * nbytes + rows, mask=rmask, other=0).to(tl.int32)
            word = word | (byte << (8 * (p - 4)))
        code = code | (_unpack_nibble(word, cols) << 4)

    # grad_in = grad_out * levels[code], in fp32 (code < len(levels); 0 past n)
    level = tl.load(levels_ptr + code)
    g_raw = tl.load(grad_out_ptr + offs, mask=mask, other=0.0)
    g = g_raw.to(tl.float32) * level
    tl.store(grad_in_ptr + offs, _cast(g, grad_in_ptr.dtype.element_ty, INTERP), mask=mask)


# ------------------------------------------------------------------------------- launchers

def interpreted() -> bool:
    """Whether the kernels run in the Triton interpreter (TRITON_INTERPRET=1 when they were decorated)."""
    return triton is not None and type(_fewbit_forward_kernel).__name__ == "InterpretedFunction"


def triton_available(device) -> bool:
    """Whether the fused kernels can run for tensors on `device`.

    True for CUDA devices when Triton imports, and for CPU only under TRITON_INTERPRET=1
    (the interpreter: slow, for tests).
    """
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreted()


def _options(act_id: int, config: KernelConfig) -> dict:
    """Launch options beside the grid: num_warps, and on the GPU the float semantics of torch's
    CUDA build (nvcc's defaults): fma contraction on, no flush-to-zero inside libdevice, and the
    libdevice of the toolkit torch was built with where it is installed."""
    if interpreted():
        return {"INTERP": True}
    opts = {"INTERP": False, "num_warps": config.num_warps, "enable_fp_fusion": True}
    if "enable_reflect_ftz" in _cuda_option_names():
        opts["enable_reflect_ftz"] = False
    lib = torch_libdevice() if act_id in _LIBDEVICE_ACTS else None
    if lib is not None:
        opts["extern_libs"] = {"libdevice": lib}
    return opts


@functools.lru_cache(maxsize=None)
def _cuda_option_names() -> frozenset:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(CUDAOptions))


@functools.lru_cache(maxsize=None)
def torch_libdevice() -> str | None:
    """libdevice.10.bc of the CUDA toolkit torch was built with, if installed here.

    Triton bundles its own libdevice, maybe of another CUDA version: on an H200 with torch
    2.11+cu130 and Triton 3.6, its erff differed from torch's by an ulp on ~7 % of inputs, and
    linking the toolkit's 13.0 libdevice made GELU bit for bit torch's. TRITON_LIBDEVICE_PATH,
    when set, is left to Triton.
    """
    want = torch.version.cuda
    if not want or os.environ.get("TRITON_LIBDEVICE_PATH"):
        return None
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), f"/usr/local/cuda-{want}",
             f"/usr/local/cuda-{want.split('.')[0]}", "/usr/local/cuda"]
    for root in filter(None, roots):
        path = os.path.join(root, "nvvm", "libdevice", "libdevice.10.bc")
        try:  # the toolkit's major.minor from version.json, else from the folder's name
            with open(os.path.join(root, "version.json"), encoding="utf-8") as fh:
                version = ".".join(json.load(fh)["cuda"]["version"].split(".")[:2])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            version = os.path.basename(os.path.realpath(root)).removeprefix("cuda-")
        if version == want and os.path.isfile(path):
            return path
    return None


def _grid(n: int, config: KernelConfig) -> tuple[int, bool, bool, tuple]:
    """BYTES per program (8 * BYTES elements), EVEN (no tail), I64 (int64 offsets), grid."""
    nbytes = (n + 7) // 8
    if interpreted():
        block = min(triton.next_power_of_2(nbytes), config.interp_max_bytes)
    else:
        block = config.block_bytes
    return block, n % (8 * block) == 0, n + 8 * block >= 2 ** 31, (triton.cdiv(nbytes, block),)


def _check_tensor(t: torch.Tensor, what: str) -> None:
    if t.dtype not in _FUSED_DTYPES:
        raise TypeError(f"{what} must be float16, bfloat16 or float32 for the fused kernels, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{what} must be contiguous for the fused kernels")


def fused_forward(x: torch.Tensor, bounds32: torch.Tensor, code_map: torch.Tensor | None, bits: int,
                  act: str | None = None, params: dict | None = None, *,
                  config: KernelConfig = DEFAULT_CONFIG):
    """f(x) (optional) and the packed b-bit codes of x, in one pass over x.

    Parameters
    ----------
    x : torch.Tensor
        Contiguous float16, bfloat16 or float32 tensor, any shape (row-major order).
    bounds32 : torch.Tensor
        (m-1,) float32 boundaries rounded up to float32 (TableConstants.bounds32), same device.
    code_map : torch.Tensor or None
        (m,) uint8 interval -> code, or None when code = interval (contiguous table).
    bits : int
        Code width b in 1..8.
    act : str or None
        A key of FUSED_ACTIVATIONS to compute y = f(x) in the kernel; None computes only codes.
    params : dict, optional
        The activation's parameters (leaky_relu: negative_slope).
    config : KernelConfig, optional
        Launch settings and the bits from which a table replaces the search (same bytes).

    Returns
    -------
    (y, packed)
        y : f(x) in x's dtype and shape (None when act is None);
        packed : (bits * ceil(n / 8),) uint8, byte for byte ``pack_codes(codes, bits)``.

    Notes
    -----
    float16 / bfloat16 x at bits >= config.lut_min_bits looks its codes up in a 65536-entry table,
    built by the first call per (bounds32, code_map, dtype); float32 x at bits >= config.lut32_min_bits
    starts from a 65536-entry prefix table built per bounds32: make the first call outside
    CUDA graph capture.
    """
    bits = check_bits(bits)
    _check_tensor(x, "x")
    if act is not None and act not in FUSED_ACTIVATIONS:
        raise ValueError(f"activation {act!r} has no fused kernel; choose one of {sorted(FUSED_ACTIVATIONS)}")
    if bounds32.dtype != torch.float32 or (code_map is not None and code_map.dtype != torch.uint8):
        raise TypeError("bounds32 must be float32 and code_map uint8")
    n = x.numel()
    nbytes = (n + 7) // 8
    packed = torch.empty(packed_nbytes(n, bits), dtype=torch.uint8, device=x.device)
    y = torch.empty_like(x, memory_format=torch.contiguous_format) if act is not None else None
    if n == 0:
        return y, packed
    act_id = FUSED_ACTIVATIONS[act] if act is not None else 0
    param = float((params or {}).get(_ACT_PARAM.get(act, ""), 0.0))
    block, even, i64, grid = _grid(n, config)
    nb = bounds32.numel()
    cmap = code_map if code_map is not None else packed  # never read when contiguous
    kind, lut, maxc = 0, packed, 0                        # kind 0: the search (lut never read)
    if x.dtype in _LUT_DTYPES and bits >= config.lut_min_bits:
        kind, lut = 16, code_lut(bounds32, code_map, x.dtype)
    elif x.dtype == torch.float32 and bits >= config.lut32_min_bits:
        table, most = bracket(bounds32)
        if table is not None:  # None where bounds crowd into one prefix's range: the search
            kind, lut, maxc = 32, table, most
    if kind == 16:
        # no search: its arguments fixed (never read), one compiled kernel per dtype, bits, ACT
        bounds, cmap, nb = lut, lut, 0
    elif kind == 32:
        bounds = bounds32 if nb else x                    # x: never read (every count is 0)
    else:
        bounds = x if nb == 0 else bounds32 if nb <= config.linear_max else padded(bounds32)  # x: never read
    _fewbit_forward_kernel[grid](
        x, y if y is not None else x, packed, bounds, cmap, lut, param, n, nbytes, ACT=act_id, BITS=bits,
        NB=nb, LOG2=nb.bit_length(), LINEAR=nb <= config.linear_max, LEVELSET=code_map is not None and kind != 16,
        LUT=kind, MAXC=maxc, BYTES=block, EVEN=even, I64=i64, **_options(act_id, config))
    return y, packed


def fused_backward(packed: torch.Tensor, grad_out: torch.Tensor, levels: torch.Tensor, bits: int,
                   *, dtype: torch.dtype | None = None, config: KernelConfig = DEFAULT_CONFIG) -> torch.Tensor:
    """grad_out * levels[code] for the codes in `packed`, in one pass.

    Parameters
    ----------
    packed : torch.Tensor
        (bits * ceil(n / 8),) uint8 from fused_forward or pack_codes, n = grad_out.numel().
    grad_out : torch.Tensor
        float16, bfloat16 or float32 gradient of y (made contiguous here if it is not).
    levels : torch.Tensor
        (L,) float32 code -> derivative value (TableConstants.levels).
    bits : int
        Code width b in 1..8.
    dtype : torch.dtype, optional
        dtype of the result (default grad_out's); the product is formed in float32.
    config : KernelConfig, optional
        Launch settings (block_bytes, num_warps).

    Returns
    -------
    torch.Tensor
        (grad_out.float() * levels[code]).to(dtype), grad_out's shape, contiguous.
    """
    bits = check_bits(bits)
    grad_out = grad_out.contiguous()
    _check_tensor(grad_out, "grad_out")
    n = grad_out.numel()
    nbytes = (n + 7) // 8
    if packed.dtype != torch.uint8 or packed.numel() != packed_nbytes(n, bits):
        raise ValueError(f"packed must be {packed_nbytes(n, bits)} uint8 bytes for n={n}, bits={bits}; "
                         f"got {packed.numel()} {packed.dtype}")
    if levels.dtype != torch.float32:
        raise TypeError(f"levels must be float32, got {levels.dtype}")
    out_dtype = grad_out.dtype if dtype is None else dtype
    if out_dtype not in _FUSED_DTYPES:
        raise TypeError(f"dtype must be float16, bfloat16 or float32, got {out_dtype}")
    grad_in = torch.empty(grad_out.shape, dtype=out_dtype, device=grad_out.device)
    if n == 0:
        return grad_in
    block, even, i64, grid = _grid(n, config)
    _fewbit_backward_kernel[grid](packed, grad_out, grad_in, levels, n, nbytes, BITS=bits, BYTES=block,
                                  EVEN=even, I64=i64, **_options(0, config))
    return grad_in


def probe_values(dtype: torch.dtype) -> torch.Tensor:
    """Every value of a 16-bit dtype; for float32, 2^22 bit patterns over all exponents, a ramp
    and the special values."""
    if dtype != torch.float32:
        return torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32).to(torch.int16).view(dtype)
    gen = torch.Generator().manual_seed(0)
    patterns = torch.randint(-(2 ** 31), 2 ** 31, (1 << 22,), generator=gen, dtype=torch.int64)
    specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38])
    return torch.cat([patterns.to(torch.int32).view(torch.float32), torch.linspace(-30.0, 30.0, 1 << 20),
                      specials])


@functools.lru_cache(maxsize=None)
@torch.no_grad()
def _fused_y_exact(act: str, dtype: torch.dtype, device: torch.device, params: tuple) -> bool:
    x = probe_values(dtype).to(device)
    y, _ = fused_forward(x, torch.zeros(0, device=device), None, 1, act, dict(params))
    with torch.autocast(device.type, enabled=False):
        want = TORCH_FORWARD[act](x, **dict(params))
    bits_of = torch.int32 if dtype == torch.float32 else torch.int16
    same = (y.view(bits_of) == want.view(bits_of)) | (y.isnan() & want.isnan())
    return bool(same.all())


def fused_y_exact(act: str, dtype: torch.dtype, device, params: dict | None = None) -> bool:
    """Whether the kernel's f(x) is bit for bit torch's for this activation, dtype and device.

    Checked once per process and cached: on every float16 / bfloat16 value (a proof), and for
    float32 on 2^22 bit patterns spread over all exponents, a ramp and the special values.
    Use ACT = 0 (y from torch) where it says False: libdevice and torch's CUDA build may
    differ by an ulp in a transcendental function. The first call per key launches kernels
    (not inside CUDA graph capture).
    """
    if act not in FUSED_ACTIVATIONS or dtype not in _FUSED_DTYPES or not triton_available(device):
        return False
    return _fused_y_exact(act, dtype, torch.device(device), tuple(sorted((params or {}).items())))
