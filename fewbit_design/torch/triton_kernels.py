"""Runtime step, fused Triton kernels: the @triton.jit bodies (activation formulas, coding,
bit-plane packing, unpack + lookup). kernels.py holds the launchers, their config and the
layout they document; without Triton this module imports and its functions are plain Python.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # torch without Triton: the module imports, triton_available() is False
    triton = tl = libdevice = None

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
    # python float constants round to float32 as nvcc rounds the constexpr opmath_t values;
    # ACT is an activation's `fused` id in the registry (activations.py), `param` its `fused_param`
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
