"""The CPU path: coding + bit-plane packing (forward) and unpacking + lookup + multiply
(backward), each one numba pass over the tensors' own memory.

forward:  packed = pack_codes(code(x), bits)                      the torch path's bytes
backward: grad_x = (float32(grad_y) * levels[code]).to(x.dtype)   the torch path's values

y = f(x) stays torch's op. bfloat16 and float16 are read through their bit patterns (as
int16 and uint16 arrays: the array's dtype tells the kernels the format). Codes count
#(bounds32 <= x), NaN last, as the torch path does (float64 stays on the torch path):
  16-bit x          the code of every bit pattern (lut.code_lut, built by the torch path itself)
  float32, <= 32 intervals   code = map[0] + sum_i [!(x < b_i)] * (map[i+1] - map[i])  (mod 256)
  float32, more     lut.bracket: per top 16 bits of x the first interval and the few bounds
                    among its values (the fused kernel's table); where bounds crowd, a
                    branch-free binary search over bounds padded with +inf to 2^j - 1
Work goes in blocks of _BLOCK elements (a multiple of 8: a block owns whole bytes of every
plane). Large tensors split their blocks into torch.get_num_threads() ranges: the calling
thread runs one, helper threads (a ThreadPoolExecutor) the others, all in the same nogil
kernel. Not numba's prange: its OpenMP / TBB workers spin after a launch and took the cores
torch's own intra-op threads were waiting for (nn.GELU alone slowed from 0.9 to 16 ms per
call on 2 busy cores), and its workqueue layer aborts on launches from two threads at once.
Disjoint block ranges own disjoint bytes, so any number of Python threads is safe.
Compilation (about 10 s of CPU per dtype, once per machine) is cached on disk by numba;
`warm_up()` does it before training.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .._jit import _load_cached
from . import lut
from .packing import pack_codes, unpack_codes
from .reference import encode as reference_encode
from .tables import cached

__all__ = ["serves", "encode", "decode", "warm_up"]

_BLOCK = 4096          # elements per block: 4096 B of codes and 16 KiB of float32 stay in L1
_PARALLEL_MIN = 1 << 16  # below this many elements a parallel launch costs more than it saves
_COMPARE_MAX = 32      # up to this many intervals, compares; beyond, a table or a search
_LOCK = threading.Lock()  # guards _POOL and the first load of each kernel

# -- scalar helpers: float formats through their bit patterns (exact, no DAZ/FTZ effect) --


@intrinsic
def _f32(typingctx, u):
    """float32 with the bit pattern of the low 32 bits of the unsigned integer u."""
    if not isinstance(u, types.Integer) or u.signed or u.bitwidth < 32:
        return None

    def codegen(context, builder, sig, args):
        low = builder.trunc(args[0], ir.IntType(32)) if u.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())
    return types.float32(u), codegen


@intrinsic
def _bits(typingctx, f):
    """uint32 bit pattern of the float32 f."""
    if f != types.float32:
        return None
    return types.uint32(f), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


def _widen(v):
    """v (a float32, bfloat16 pattern int16 or float16 pattern uint16) as float32, exactly."""


def _narrow(f, like):
    """float32 f in the format of `like` (the output array's scalar type), rounded to nearest even."""


@overload(_widen, inline="always")
def _widen_impl(v):
    if v == types.float32:
        return lambda v: v
    if v == types.int16:     # bfloat16: the top half of a float32
        return lambda v: _f32(np.uint32(np.uint16(v)) << np.uint32(16))
    if v == types.uint16:    # float16
        def fp16(v):
            h = np.uint32(v)
            sign = (h & np.uint32(0x8000)) << np.uint32(16)
            e = (h >> np.uint32(10)) & np.uint32(0x1F)
            m = h & np.uint32(0x3FF)
            if e == 0:       # zero or subnormal: m * 2^-24, an exact product of normal floats
                return _f32(_bits(np.float32(m) * np.float32(2.0 ** -24)) | sign)
            if e == 31:      # inf, NaN (payload kept)
                return _f32(sign | np.uint32(0x7F800000) | (m << np.uint32(13)))
            return _f32(sign | ((e + np.uint32(112)) << np.uint32(23)) | (m << np.uint32(13)))
        return fp16
    return None


@overload(_narrow, inline="always")
def _narrow_impl(f, like):
    if like == types.float32:
        return lambda f, like: f
    if like == types.int16:  # bfloat16, as c10::BFloat16 rounds (NaN -> 0x7FC0)
        def bf16(f, like):
            u = _bits(f)
            if (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                return np.int16(0x7FC0)
            r = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
            return np.int16(np.uint16(r))
        return bf16
    if like == types.uint16:  # float16, IEEE round to nearest even (NaN -> quiet, sign kept)
        def fp16(f, like):
            u = _bits(f)
            sign = (u >> np.uint32(16)) & np.uint32(0x8000)
            a = u & np.uint32(0x7FFFFFFF)
            if a > np.uint32(0x7F800000):
                return np.uint16(np.uint32(0x7E00) | sign)
            if a >= np.uint32(0x477FF000):       # >= 65520 rounds to inf
                return np.uint16(np.uint32(0x7C00) | sign)
            if a >= np.uint32(0x38800000):       # normal half: rebias, round 23 -> 10 bits
                h = (a - np.uint32(0x38000000) + np.uint32(0xFFF) + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
                return np.uint16(h | sign)
            if a < np.uint32(0x33000000):        # <= 2^-25 rounds to 0 (the tie to even 0)
                return np.uint16(sign)
            # subnormal half: m * 2^(e-150) in units of 2^-24, rounded to nearest even
            s = np.uint32(126) - (a >> np.uint32(23))
            m = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
            r = (m + (np.uint32(1) << (s - np.uint32(1))) - np.uint32(1) + ((m >> s) & np.uint32(1))) >> s
            return np.uint16(r | sign)
        return fp16
    return None


# -- block kernels (one block = elements lo .. hi-1, bytes lo/8 .. of every plane) --

_ONES = 0x0101010101010101


@numba.njit(inline="always")
def _pack_block(codes, k, out, nbytes, lo, bits):
    """Write the bit planes of codes[:k] (zero-padded to whole bytes) to out."""
    nby = (k + 7) >> 3
    for e in range(k, nby * 8):
        codes[e] = 0
    words = codes.view(np.uint64)                # 8 codes per word, code j in byte j
    base = lo >> 3
    for p in range(bits):
        plane = out[p * nbytes + base:p * nbytes + base + nby]     # a slice: no aliasing, vectorises
        shift = np.uint64(p)
        for i in range(nby):
            w = (words[i] >> shift) & np.uint64(_ONES)              # bit p of code j -> bit 8j
            w = (w | (w >> np.uint64(7))) & np.uint64(0x0003000300030003)
            w = (w | (w >> np.uint64(14))) & np.uint64(0x0000000F0000000F)
            w = (w | (w >> np.uint64(28))) & np.uint64(0xFF)      # bit 8j -> bit j
            plane[i] = np.uint8(w)


def _floats(x, lo, k, buf):
    """x[lo:lo+k] as float32: a view of float32 x, else widened into buf."""


@overload(_floats, inline="always")
def _floats_impl(x, lo, k, buf):
    if x.dtype == types.float32:
        return lambda x, lo, k, buf: x[lo:lo + k]

    def widen(x, lo, k, buf):
        for e in range(k):
            buf[e] = _widen(x[lo + e])
        return buf[:k]
    return widen


@numba.njit(nogil=True)
def _encode_block(x, bounds, cmap, table, bits, out, blk):
    n = x.size
    lo = blk * _BLOCK
    k = min(_BLOCK, n - lo)
    codes = np.empty(_BLOCK, np.uint8)
    m = cmap.size                                # intervals; bounds may be padded past m - 1
    if table.size and x.itemsize == 2:           # 16-bit x: the code of every bit pattern
        for e in range(k):
            codes[e] = table[np.uint16(x[lo + e])]
        _pack_block(codes, k, out, (n + 7) >> 3, lo, bits)
        return
    v = _floats(x, lo, k, np.empty(_BLOCK, np.float32))
    if m <= _COMPARE_MAX:
        # code = map[interval]: start at map[0], add map[i+1] - map[i] for each b_i <= x; four
        # bounds per pass over the block (bounds padded with +inf to a multiple of 4, steps 0),
        # int32 lanes vectorise; NaN counts every bound (steps of the padding are 0), so lands last
        step = np.zeros(_COMPARE_MAX + 3, np.int32)
        for i in range(m - 1):
            step[i] = np.int32(cmap[i + 1]) - np.int32(cmap[i])
        acc = np.empty(_BLOCK, np.int32)
        c0 = np.int32(cmap[0])
        for e in range(k):
            acc[e] = c0
        for i in range(0, m - 1, 4):
            b0, b1, b2, b3 = bounds[i], bounds[i + 1], bounds[i + 2], bounds[i + 3]
            d0, d1, d2, d3 = step[i], step[i + 1], step[i + 2], step[i + 3]
            zero = np.int32(0)
            for e in range(k):
                ve = v[e]
                acc[e] += (((zero if ve < b0 else d0) + (zero if ve < b1 else d1))
                           + ((zero if ve < b2 else d2) + (zero if ve < b3 else d3)))
        for e in range(k):
            codes[e] = np.uint8(acc[e] & 0xFF)
    elif table.size:
        # float32 x, bracket table (lut.bracket): for x's top 16 bits, entry = base << 4 | count;
        # interval = base + #{j < count : b[base + j] <= x}, one branch-free pass per j (bounds
        # end with +inf, so b[pos] is always there); NaN lands last
        pos = np.empty(_BLOCK, np.int32)
        cnt = np.empty(_BLOCK, np.int32)
        for e in range(k):
            entry = np.int32(table[_bits(v[e]) >> np.uint32(16)])
            pos[e] = entry >> 4
            cnt[e] = entry & 15
        most = np.int32(0)
        for e in range(k):
            most = max(most, cnt[e])
        for j in range(most):
            for e in range(k):
                pos[e] += np.int32(j < cnt[e]) & np.int32(not (v[e] < bounds[pos[e]]))
        for e in range(k):
            ve = v[e]
            codes[e] = cmap[m - 1 if ve != ve else pos[e]]
    else:
        # branch-free binary search over bounds padded with +inf to 2^j - 1 entries
        pos = np.zeros(_BLOCK, np.int32)
        step = np.int32((bounds.size + 1) >> 1)
        while step:
            for e in range(k):
                p = pos[e] + step
                pos[e] = pos[e] if v[e] < bounds[p - 1] else p
            step >>= 1
        for e in range(k):
            codes[e] = cmap[min(pos[e], m - 1)]
    _pack_block(codes, k, out, (n + 7) >> 3, lo, bits)


@numba.njit(inline="always")
def _pick8(c, l0, l1, l2, l3, l4, l5, l6, l7):
    """l[c & 7] by selects on the bits of c."""
    low = (l3 if c & 1 else l2) if c & 2 else (l1 if c & 1 else l0)
    high = (l7 if c & 1 else l6) if c & 2 else (l5 if c & 1 else l4)
    return high if c & 4 else low


@numba.njit(nogil=True)
def _decode_block(packed, g, levels, bits, out, blk):
    n = g.size
    lo = blk * _BLOCK
    k = min(_BLOCK, n - lo)
    nby = (k + 7) >> 3
    nbytes = (n + 7) >> 3
    codes = np.zeros(_BLOCK, np.uint8)
    words = codes.view(np.uint64)                # 8 codes per word, code j in byte j
    base = lo >> 3
    for p in range(bits):
        plane = packed[p * nbytes + base:p * nbytes + base + nby]   # a slice: no aliasing, vectorises
        shift = np.uint64(p)
        for i in range(nby):
            w = np.uint64(plane[i])
            w = (w | (w << np.uint64(28))) & np.uint64(0x0000000F0000000F)   # bit j -> bit 8j
            w = (w | (w << np.uint64(14))) & np.uint64(0x0003000300030003)
            w = (w | (w << np.uint64(7))) & np.uint64(_ONES)
            words[i] |= w << shift
    gs, os, like = g[lo:lo + k], out[lo:lo + k], out[lo]   # like: out's scalar type, read once
    # level by a select tree on the code's bits up to 4 bits (vectorises; a gather does not, or slowly)
    top = levels.size - 1
    l0, l1, l2, l3 = levels[0], levels[min(1, top)], levels[min(2, top)], levels[min(3, top)]
    l4, l5, l6, l7 = levels[min(4, top)], levels[min(5, top)], levels[min(6, top)], levels[min(7, top)]
    l8, l9, la, lb = levels[min(8, top)], levels[min(9, top)], levels[min(10, top)], levels[min(11, top)]
    lc, ld, le, lf = levels[min(12, top)], levels[min(13, top)], levels[min(14, top)], levels[min(15, top)]
    if bits <= 3:
        for e in range(k):
            level = _pick8(codes[e], l0, l1, l2, l3, l4, l5, l6, l7)
            os[e] = _narrow(np.float32(_widen(gs[e])) * level, like)     # float32(grad_y) * level
    elif bits == 4:
        for e in range(k):
            c = codes[e]
            level = (_pick8(c, l8, l9, la, lb, lc, ld, le, lf) if c & 8 else
                     _pick8(c, l0, l1, l2, l3, l4, l5, l6, l7))
            os[e] = _narrow(np.float32(_widen(gs[e])) * level, like)
    else:
        for e in range(k):
            os[e] = _narrow(np.float32(_widen(gs[e])) * levels[codes[e]], like)


def _encode_range(x, bounds, cmap, table, bits, out, b0, b1):
    for blk in range(b0, b1):
        _encode_block(x, bounds, cmap, table, bits, out, blk)


def _decode_range(packed, g, levels, bits, out, b0, b1):
    for blk in range(b0, b1):
        _decode_block(packed, g, levels, bits, out, blk)


_KERNELS = {   # name -> dispatcher over the blocks b0 .. b1-1 (nogil: threads run it side by side)
    "encode": numba.njit(cache=True, nogil=True)(_encode_range),
    "decode": numba.njit(cache=True, nogil=True)(_decode_range),
}
_LOADED: set = set()   # (dispatcher, argument types) already looked up in the disk cache
_BROKEN: list = []     # the exception that turned the CPU path off, if any
_POOL: list = []       # [(pid, size, ThreadPoolExecutor)]: helper threads, made on first use


def _pool(size: int) -> ThreadPoolExecutor:
    """The helper threads (size of them); made anew after a fork or a change of thread count."""
    with _LOCK:
        if not _POOL or _POOL[0][:2] != (os.getpid(), size):
            _POOL[:] = [(os.getpid(), size, ThreadPoolExecutor(size, thread_name_prefix="fewbit-cpu"))]
        return _POOL[0][2]


def _launch(name: str, n: int, *args) -> bool:
    """Run a kernel over all blocks: split into torch.get_num_threads() ranges when n is large,
    the caller's thread taking the first. False (and the CPU path off for good, with a
    warning) if numba fails."""
    kernel = _KERNELS[name]
    blocks = (n + _BLOCK - 1) // _BLOCK
    threads = min(torch.get_num_threads(), blocks) if n >= _PARALLEL_MIN else 1
    try:
        _call(kernel, args)   # loads from the disk cache (or compiles) once, in this thread
        cuts = [blocks * i // threads for i in range(threads + 1)]
        helpers = [_pool(threads - 1).submit(kernel, *args, cuts[i], cuts[i + 1])
                   for i in range(1, threads)] if threads > 1 else []
        kernel(*args, cuts[0], cuts[1])
        for done in helpers:
            done.result()
        return True
    except Exception as error:   # a numba that cannot compile these kernels: the torch path
        _disable(error)
        return False


def _call(dispatcher, args):
    """Make sure dispatcher has its machine code for these argument types (a warm disk cache
    loads without numba's compiler refresh)."""
    key = (dispatcher, args[0].dtype, args[1].dtype)    # the types that vary between calls
    if key not in _LOADED:
        with _LOCK:
            _load_cached(dispatcher, (*args, 0, 0))
            _LOADED.add(key)


# -- the public face --------------------------------------------------------------------

_AS_NUMPY = {   # torch dtype -> how the kernels see it (see the module docstring)
    torch.float32: lambda t: t.numpy(),
    torch.bfloat16: lambda t: t.view(torch.int16).numpy(),
    torch.float16: lambda t: t.view(torch.int16).numpy().view(np.uint16),
}
_EMPTY = np.zeros(0, np.int16)


def serves(t: torch.Tensor) -> bool:
    """True when the CPU path handles t: a CPU float tensor, outside torch.compile's tracing."""
    return (t.device.type == "cpu" and t.dtype in _AS_NUMPY and not _BROKEN
            and not torch.compiler.is_compiling())


def _constants(dtype, bounds32, code_map):
    """(bounds, cmap, table) numpy arrays for the kernels; cached per table tensors."""
    tensors = (bounds32,) if code_map is None else (bounds32, code_map)

    def build():
        bounds = bounds32.numpy()
        m = bounds.size + 1
        cmap = np.arange(m, dtype=np.uint8) if code_map is None else code_map.numpy()
        table = _EMPTY
        if dtype != torch.float32:  # one load per element beats even a single compare pass
            table = lut.code_lut(bounds32, code_map, dtype).numpy().astype(np.int16)
        elif m <= _COMPARE_MAX:     # four compares per pass: pad with +inf to a multiple of 4
            bounds = np.concatenate([bounds, np.full(-(m - 1) % 4, np.inf, np.float32)])
        elif lut.bracket(bounds32)[0] is not None:
            table = lut.bracket(bounds32)[0].numpy()
            bounds = np.concatenate([bounds, [np.inf]])
        else:
            pad = (1 << bounds.size.bit_length()) - 1 - bounds.size
            bounds = np.concatenate([bounds, np.full(pad, np.inf, np.float32)])
        return np.ascontiguousarray(bounds, np.float32), np.ascontiguousarray(cmap, np.uint8), table

    return cached(("cpu", dtype), tensors, build)


def encode(x: torch.Tensor, bounds32, code_map, bits: int) -> torch.Tensor:
    """pack_codes(code(x), bits) for a CPU tensor x that `serves` accepts (read row-major;
    copied only when not contiguous)."""
    flat = x.detach().reshape(-1).contiguous()
    n = flat.numel()
    out = torch.empty(bits * ((n + 7) // 8), dtype=torch.uint8)
    if n:
        bounds, cmap, table = _constants(x.dtype, bounds32, code_map)
        if not _launch("encode", n, _AS_NUMPY[x.dtype](flat), bounds, cmap, table, bits, out.numpy()):
            return pack_codes(reference_encode(x, bounds32, None, code_map), bits)
    return out


def decode(packed: torch.Tensor, grad_y: torch.Tensor, levels: torch.Tensor, bits: int) -> torch.Tensor:
    """(float32(grad_y) * levels[code]).to(grad_y.dtype) for the codes in packed, grad_y's shape."""
    g = grad_y.detach().contiguous()
    out = torch.empty(g.shape, dtype=g.dtype)
    n = g.numel()
    if n:
        to_numpy = _AS_NUMPY[g.dtype]
        if not _launch("decode", n, packed.numpy(), to_numpy(g.view(-1)), levels.numpy(), bits,
                       to_numpy(out.view(-1))):
            scale = levels.index_select(0, unpack_codes(packed, bits, n).int()).view(g.shape)
            return (g.float() * scale).to(g.dtype)
    return out


def _disable(error: BaseException) -> None:
    import warnings

    _BROKEN.append(error)
    warnings.warn(f"fewbit_design: the numba CPU path failed ({error!r}); the torch path serves CPU tensors",
                  RuntimeWarning, stacklevel=3)


def warm_up(dtypes=(torch.float32, torch.bfloat16, torch.float16)) -> None:
    """Compile (the first time on a machine: several seconds of CPU per dtype) or load from
    numba's disk cache the CPU path's kernels for `dtypes`, so that the first training step
    does not pay for it."""
    for dtype in dtypes:
        x = torch.zeros(8, dtype=dtype)
        bounds, cmap, table = _constants(dtype, torch.zeros(1), None)
        packed = np.zeros(1, np.uint8)
        _launch("encode", 8, _AS_NUMPY[dtype](x), bounds, cmap, table, 1, packed)
        _launch("decode", 8, packed, _AS_NUMPY[dtype](x), np.zeros(2, np.float32), 1,
                _AS_NUMPY[dtype](torch.empty_like(x)))
