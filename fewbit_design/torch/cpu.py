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
plane). A launch is one numba C callback (a cfunc) given a table of addresses and sizes: on a
large tensor every thread of torch's own OpenMP team runs it (GOMP_parallel of the OpenMP
runtime that torch's parallel_for uses), thread t of T taking blocks t*B/T .. (t+1)*B/T - 1,
the split parallel_for makes (the same core then computes f(x) on that part),
then helping with the other shares' last blocks if their owners start late (a counter per
share, taken atomically); below _PARALLEL_MIN elements, or where torch does not run on
OpenMP, the calling thread runs it alone. Either way no thread is added beside torch's: an extra pool (numba's
prange layers, or Python helper threads) spun or waited for cores that torch's OpenMP workers
were spinning on after each op, and the interleaved forward and backward took twice as long.
Disjoint blocks own disjoint bytes, and each Python thread has its own counters and scratch,
so any number of Python threads may launch at once (each call runs with the GIL released).
Compilation (about 8 s of CPU per dtype, once per machine) is cached on disk by numba;
`warm_up()` does it, or loads it, before training; elsewhere it warns.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._jit import from_disk
from . import lut
from .packing import pack_codes, unpack_codes
from .reference import encode as reference_encode
from .tables import cached

__all__ = ["serves", "encode", "decode", "warm_up"]

_BLOCK = 4096          # elements per block: 4096 B of codes and 16 KiB of float32 stay in L1
_PARALLEL_MIN = 1 << 16  # below this many elements a parallel launch costs more than it saves
_COMPARE_MAX = 32      # up to this many intervals, compares; beyond, a table or a search
_LOCK = threading.Lock()  # guards the first load of each worker and the team lookup

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
        for i in range(nby):                     # bit p of code j -> bit 8j -> (one multiply) bit 56 + j
            plane[i] = np.uint8((((words[i] >> shift) & np.uint64(_ONES)) * np.uint64(0x0102040810204080)) >> np.uint64(56))


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


@numba.njit
def _encode_block(x, bounds, cmap, table, steps, bits, out, blk, codes, ints, floats):
    """Codes of block blk of x, packed into out; codes, ints (2 * _BLOCK) and floats are scratch."""
    n = x.size
    lo = blk * _BLOCK
    k = min(_BLOCK, n - lo)
    m = cmap.size                                # intervals; bounds may be padded past m - 1
    if table.size and x.itemsize == 2:           # 16-bit x: the code of every bit pattern
        for e in range(k):
            codes[e] = table[np.uint16(x[lo + e])]
        _pack_block(codes, k, out, (n + 7) >> 3, lo, bits)
        return
    v = _floats(x, lo, k, floats)
    if m <= _COMPARE_MAX:
        # code = map[interval]: map[0] plus steps[i] = map[i+1] - map[i] for each b_i <= x, by
        # passes of eight bounds over the block, then of four, two, one for the rest (compares
        # and masked int32 adds in vector lanes); NaN counts every bound, so lands last
        acc = ints[:_BLOCK]
        c0 = np.int32(cmap[0])
        for e in range(k):
            acc[e] = c0
        z = np.int32(0)
        nb = m - 1
        i = 0
        while i + 8 <= nb:
            b0, b1, b2, b3 = bounds[i], bounds[i + 1], bounds[i + 2], bounds[i + 3]
            b4, b5, b6, b7 = bounds[i + 4], bounds[i + 5], bounds[i + 6], bounds[i + 7]
            d0, d1, d2, d3 = steps[i], steps[i + 1], steps[i + 2], steps[i + 3]
            d4, d5, d6, d7 = steps[i + 4], steps[i + 5], steps[i + 6], steps[i + 7]
            for e in range(k):
                ve = v[e]
                acc[e] += ((((z if ve < b0 else d0) + (z if ve < b1 else d1)) + ((z if ve < b2 else d2) + (z if ve < b3 else d3)))
                           + (((z if ve < b4 else d4) + (z if ve < b5 else d5)) + ((z if ve < b6 else d6) + (z if ve < b7 else d7))))
            i += 8
        if i + 4 <= nb:
            b0, b1, b2, b3 = bounds[i], bounds[i + 1], bounds[i + 2], bounds[i + 3]
            d0, d1, d2, d3 = steps[i], steps[i + 1], steps[i + 2], steps[i + 3]
            for e in range(k):
                ve = v[e]
                acc[e] += (((z if ve < b0 else d0) + (z if ve < b1 else d1)) + ((z if ve < b2 else d2) + (z if ve < b3 else d3)))
            i += 4
        if i + 2 <= nb:
            b0, b1, d0, d1 = bounds[i], bounds[i + 1], steps[i], steps[i + 1]
            for e in range(k):
                ve = v[e]
                acc[e] += (z if ve < b0 else d0) + (z if ve < b1 else d1)
            i += 2
        if i < nb:
            b0, d0 = bounds[i], steps[i]
            for e in range(k):
                acc[e] += z if v[e] < b0 else d0
        for e in range(k):
            codes[e] = np.uint8(acc[e] & 0xFF)
    elif table.size:
        # float32 x, bracket table (lut.bracket): for x's top 16 bits, entry = base << 4 | count;
        # interval = base + #{j < count : b[base + j] <= x}, one branch-free pass per j (bounds
        # end with +inf, so b[pos] is always there); NaN lands last
        pos = ints[:_BLOCK]
        cnt = ints[_BLOCK:]
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
        pos = ints[:_BLOCK]
        for e in range(k):
            pos[e] = 0
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


@numba.njit
def _decode_block(packed, g, levels, bits, out, blk, codes, ints):
    """out = float32(g) * levels[code] on block blk, in out's format; codes and ints are scratch."""
    n = g.size
    lo = blk * _BLOCK
    k = min(_BLOCK, n - lo)
    nby = (k + 7) >> 3
    nbytes = (n + 7) >> 3
    words = codes.view(np.uint64)                # 8 codes per word, code j in byte j
    base = lo >> 3
    ones, diagonal = np.uint64(_ONES), np.uint64(0x8040201008040201)
    high, fill = np.uint64(0x8080808080808080), np.uint64(0x7F7F7F7F7F7F7F7F)
    for p in range(bits):
        # bit j of a plane byte -> bit p of byte j: the byte copied to all 8 bytes, byte j keeps
        # its bit j, and adding 0x7F sets a byte's top bit exactly when that bit was there
        plane = packed[p * nbytes + base:p * nbytes + base + nby]   # a slice: no aliasing, vectorises
        shift = np.uint64(7 - p)
        if p == 0:
            for i in range(nby):
                words[i] = ((((np.uint64(plane[i]) * ones) & diagonal) + fill) & high) >> shift
        else:
            for i in range(nby):
                words[i] |= ((((np.uint64(plane[i]) * ones) & diagonal) + fill) & high) >> shift
    c = ints[:k]
    for e in range(k):                           # int32 lanes: the selects below test 16 codes at once
        c[e] = np.int32(codes[e])
    gs, os, like = g[lo:lo + k], out[lo:lo + k], out[lo]   # like: out's scalar type, read once
    # level by a select tree on the code's bits up to 4 bits (vectorises; a gather does not, or slowly)
    top = levels.size - 1
    l0, l1, l2, l3 = levels[0], levels[min(1, top)], levels[min(2, top)], levels[min(3, top)]
    l4, l5, l6, l7 = levels[min(4, top)], levels[min(5, top)], levels[min(6, top)], levels[min(7, top)]
    l8, l9, la, lb = levels[min(8, top)], levels[min(9, top)], levels[min(10, top)], levels[min(11, top)]
    lc, ld, le, lf = levels[min(12, top)], levels[min(13, top)], levels[min(14, top)], levels[min(15, top)]
    if bits <= 3:
        for e in range(k):
            level = _pick8(c[e], l0, l1, l2, l3, l4, l5, l6, l7)
            os[e] = _narrow(np.float32(_widen(gs[e])) * level, like)     # float32(grad_y) * level
    elif bits == 4:
        for e in range(k):
            ce = c[e]
            level = (_pick8(ce, l8, l9, la, lb, lc, ld, le, lf) if ce & 8 else
                     _pick8(ce, l0, l1, l2, l3, l4, l5, l6, l7))
            os[e] = _narrow(np.float32(_widen(gs[e])) * level, like)
    else:
        for e in range(k):
            os[e] = _narrow(np.float32(_widen(gs[e])) * levels[c[e]], like)


# -- launches: one cfunc per (kind, dtype), given the address of a table of int64 words --------

@intrinsic
def _words(typingctx, data):
    """The void pointer data as a pointer to int64 words."""
    if data != types.voidptr:
        return None
    return (types.CPointer(types.int64)(data),
            lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(64).as_pointer()))


@intrinsic
def _pointer(typingctx, address, like):
    """The int64 address as a pointer to like's type (a numeric scalar, read for its type only)."""
    if address != types.int64 or not isinstance(like, (types.Integer, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_data_type(like).as_pointer())
    return types.CPointer(like)(address, like), codegen


@intrinsic
def _ask(typingctx, address):
    """int f(void) at the int64 address (omp_get_thread_num / omp_get_num_threads of torch's
    OpenMP runtime); 0 for address 0 (no team: the calling thread alone)."""
    if address != types.int64:
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        result = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(32), 0))
        with builder.if_then(builder.icmp_signed("!=", args[0], ir.Constant(ir.IntType(64), 0))):
            builder.store(builder.call(builder.inttoptr(args[0], fnty.as_pointer()), []), result)
        return builder.sext(builder.load(result), ir.IntType(64))
    return types.int64(address), codegen


@intrinsic
def _claim(typingctx, address, i):
    """((int64 *) address)[i] += 1 atomically; returns the value before."""
    if address != types.int64 or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        base = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        index = context.cast(builder, args[1], sig.args[1], types.int64)
        return builder.atomic_rmw("add", builder.gep(base, [index]), ir.Constant(ir.IntType(64), 1), "monotonic")
    return types.int64(address, i), codegen


_SLOT = 13 * _BLOCK     # scratch bytes per thread: codes (_BLOCK), ints (8 * _BLOCK), floats (4 * _BLOCK)
# encode's words: x, n, bounds, #bounds, cmap, #intervals, table, #table, steps, bits, out,
# then (_launch) scratch, omp_get_thread_num, omp_get_num_threads, the shares' counters
# (addresses and counts, as int64)
_ENCODE_WORDS = 15
# decode's words: packed, n, grad_y, levels, #levels, bits, out, then as encode's
_DECODE_WORDS = 11


@numba.njit(inline="always")
def _team_of(thread_num, num_threads):
    """(this thread's number, the team's size): 0 and 1 for address 0 (the calling thread alone)."""
    return _ask(thread_num), max(_ask(num_threads), 1)


@numba.njit(inline="always")
def _share(blocks, count, s):
    """(first, end) blocks of share s of count: torch's parallel_for split, contiguous, in order."""
    return blocks * s // count, blocks * (s + 1) // count


@numba.njit
def _encode_team(data, like):
    """One thread's part of an encode: its share of the blocks, then any block of another
    share that its owner has not taken yet (one atomic counter per share), with its own scratch."""
    w = _words(data)
    a = numba.carray(w, _ENCODE_WORDS)
    n, bits = a[1], a[9]
    x = numba.carray(_pointer(a[0], like), n)
    bounds = numba.carray(_pointer(a[2], np.float32(0)), a[3])
    cmap = numba.carray(_pointer(a[4], np.uint8(0)), a[5])
    table = numba.carray(_pointer(a[6], np.int16(0)), a[7])
    steps = numba.carray(_pointer(a[8], np.int32(0)), _COMPARE_MAX + 8)
    out = numba.carray(_pointer(a[10], np.uint8(0)), bits * ((n + 7) >> 3))
    t, count = _team_of(a[12], a[13])
    scratch = a[11] + t * _SLOT
    codes = numba.carray(_pointer(scratch, np.uint8(0)), _BLOCK)
    ints = numba.carray(_pointer(scratch + _BLOCK, np.int32(0)), 2 * _BLOCK)
    floats = numba.carray(_pointer(scratch + 9 * _BLOCK, np.float32(0)), _BLOCK)
    blocks = (n + _BLOCK - 1) // _BLOCK
    for j in range(count):                   # its own share, then what is left of the others'
        first, end = _share(blocks, count, (t + j) % count)
        blk = first + _claim(a[14], (t + j) % count)
        while blk < end:
            _encode_block(x, bounds, cmap, table, steps, bits, out, blk, codes, ints, floats)
            blk = first + _claim(a[14], (t + j) % count)


@numba.njit
def _decode_team(data, like):
    """One thread's part of a decode, shared out as in _encode_team."""
    w = _words(data)
    a = numba.carray(w, _DECODE_WORDS)
    n, bits = a[1], a[5]
    packed = numba.carray(_pointer(a[0], np.uint8(0)), bits * ((n + 7) >> 3))
    g = numba.carray(_pointer(a[2], like), n)
    levels = numba.carray(_pointer(a[3], np.float32(0)), a[4])
    out = numba.carray(_pointer(a[6], like), n)
    t, count = _team_of(a[8], a[9])
    scratch = a[7] + t * _SLOT
    codes = numba.carray(_pointer(scratch, np.uint8(0)), _BLOCK)
    ints = numba.carray(_pointer(scratch + _BLOCK, np.int32(0)), 2 * _BLOCK)
    blocks = (n + _BLOCK - 1) // _BLOCK
    for j in range(count):                   # its own share, then what is left of the others'
        first, end = _share(blocks, count, (t + j) % count)
        blk = first + _claim(a[10], (t + j) % count)
        while blk < end:
            _decode_block(packed, g, levels, bits, out, blk, codes, ints)
            blk = first + _claim(a[10], (t + j) % count)


# the cfuncs' Python functions, one module-level function each (numba's disk cache keys a cfunc by
# its function's name); the scalar passed tells the kernels x's format (see the docstring)
def _encode_float32(data):
    _encode_team(data, np.float32(0))


def _encode_bfloat16(data):
    _encode_team(data, np.int16(0))


def _encode_float16(data):
    _encode_team(data, np.uint16(0))


def _decode_float32(data):
    _decode_team(data, np.float32(0))


def _decode_bfloat16(data):
    _decode_team(data, np.int16(0))


def _decode_float16(data):
    _decode_team(data, np.uint16(0))


_SOURCES = {(kind, dtype): globals()[f"_{kind}_{str(dtype)[6:]}"]
            for kind in ("encode", "decode") for dtype in (torch.float32, torch.bfloat16, torch.float16)}
_WORKERS: dict = {}    # (kind, dtype) -> numba CFunc, made (compiled or loaded from disk) on first use
_BROKEN: list = []     # the exception that turned the CPU path off, if any
_TEAM: list = []       # [GOMP_parallel of torch's OpenMP runtime, or None], looked up on first use


_COMPILING = ("fewbit_design: compiling the CPU path's {kind} kernel for {dtype} (once per machine: "
              "several seconds; numba caches it on disk). Call fewbit_design.torch.cpu.warm_up() "
              "before training to do this up front.")


def _worker(kind: str, dtype, announce: bool = True):
    """The cfunc for (kind, dtype): from numba's disk cache when there (without the compiler
    start-up that numba's own cache hit costs), else compiled and cached, with a warning
    when `announce` (compiling in the first training step should not go unnoticed)."""
    worker = _WORKERS.get((kind, dtype))
    if worker is None:
        with _LOCK:
            worker = _WORKERS.get((kind, dtype))
            if worker is None:
                message = _COMPILING.format(kind=kind, dtype=str(dtype)[6:]) if announce else None
                worker = _WORKERS[(kind, dtype)] = _make_cfunc(_SOURCES[(kind, dtype)], message)
    return worker


def _make_cfunc(fn, message: str | None = None):
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    cfunc = CFunc(fn, sigutils.normalize_signature(types.void(types.voidptr)), locals={}, options={})
    cfunc.enable_caching()
    try:
        cres = from_disk(cfunc._cache, cfunc._sig, cfunc._targetdescr.target_context)
        if cres is not None:   # what CFunc.compile does on a cache hit
            cfunc._library = cres.library
            cfunc._wrapper_name = cres.fndesc.llvm_cfunc_wrapper_name
            cfunc._wrapper_address = cres.library.get_pointer_to_function(cfunc._wrapper_name)
            cfunc._cache_hits += 1
            return cfunc
    except Exception:   # any internal change in numba: its public path below still works
        pass
    if message:
        import warnings

        warnings.warn(message, RuntimeWarning, stacklevel=5)
    cfunc.compile()
    return cfunc


def _team():
    """(GOMP_parallel(fn, data, threads, flags), address of omp_get_thread_num, of
    omp_get_num_threads) of the OpenMP runtime that torch's own parallel_for runs on, so that a
    launch uses torch's team of threads; None where torch does not run on OpenMP or its runtime
    is not found (the calling thread then works alone)."""
    if not _TEAM:
        with _LOCK:
            if not _TEAM:
                _TEAM.append(_find_team())
    return _TEAM[0]


def _find_team():
    if not sys.platform.startswith("linux") or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "/lib" in line}
    except OSError:
        return None
    runtimes = sorted(p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp", "libomp")))
    own = [p for p in runtimes if p.startswith(os.path.dirname(torch.__file__) + os.sep)]
    if len(own) != 1 and len(runtimes) != 1:   # torch's runtime cannot be told apart from another
        return None
    try:
        runtime = ctypes.CDLL((own or runtimes)[0])   # the loaded library, not a new copy
        parallel, thread_num, num_threads = runtime.GOMP_parallel, runtime.omp_get_thread_num, runtime.omp_get_num_threads
    except (OSError, AttributeError):
        return None
    parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None
    address = (lambda f: ctypes.cast(f, ctypes.c_void_p).value)
    return parallel, address(thread_num), address(num_threads)


_LOCAL = threading.local()   # per Python thread: its words (a ctypes array) and scratch, with their addresses


def _launch(kind: str, dtype, n: int, head: tuple) -> bool:
    """Run the (kind, dtype) cfunc over n elements: on torch's OpenMP team when n is large,
    else in this thread (the GIL released either way). Its words are `head`, then the scratch,
    the team's thread number and size functions, and the shares' block counters. Each Python thread has its own words and
    scratch (one launch at a time per thread). False (and the CPU path off for good, with a
    warning) if numba fails."""
    try:
        worker = _worker(kind, dtype)
    except Exception as error:   # a numba that cannot compile these kernels: the torch path
        _disable(error)
        return False
    team = _team() if n >= _PARALLEL_MIN else None
    threads = min(torch.get_num_threads(), (n + _BLOCK - 1) // _BLOCK) if team is not None else 1
    local = _LOCAL.__dict__
    if local.get("slots", 0) < threads:
        local["scratch"] = np.empty(threads * (_SLOT + 8), np.uint8)   # slots, then the counters
        local["scratch_at"], local["slots"] = local["scratch"].ctypes.data, threads
    if "words" not in local:
        local["words"] = (ctypes.c_int64 * 16)()
        local["words_at"] = ctypes.addressof(local["words"])
    words, k, counters = local["words"], len(head), local["scratch_at"] + threads * _SLOT
    ctypes.memset(counters, 0, 8 * threads)
    words[:k + 4] = (*head, local["scratch_at"], *(team[1:] if threads > 1 else (0, 0)), counters)
    if threads > 1:
        team[0](worker.address, local["words_at"], threads, 0)    # a team of at most `threads`
    else:
        worker.ctypes(local["words_at"])                            # thread 0 of 1
    return True


# -- the public face --------------------------------------------------------------------

_SERVED = (torch.float32, torch.bfloat16, torch.float16)
_EMPTY = np.zeros(0, np.int16)


def serves(t: torch.Tensor) -> bool:
    """True when the CPU path handles t: a CPU float tensor, outside torch.compile's tracing."""
    return (t.device.type == "cpu" and t.dtype in _SERVED and not _BROKEN
            and not torch.compiler.is_compiling())


def _constants(dtype, bounds32, code_map):
    """(bounds, cmap, table, steps) numpy arrays for the kernels and their addresses and sizes
    (encode's words 2 to 8); cached per table tensors."""
    tensors = (bounds32,) if code_map is None else (bounds32, code_map)

    def build():
        bounds = bounds32.numpy()
        m = bounds.size + 1
        cmap = np.arange(m, dtype=np.uint8) if code_map is None else code_map.numpy()
        table = _EMPTY
        steps = np.zeros(_COMPARE_MAX + 8, np.int32)
        if dtype != torch.float32:  # one load per element beats even a single compare pass
            table = lut.code_lut(bounds32, code_map, dtype).numpy().astype(np.int16)
        elif m <= _COMPARE_MAX:     # compares: the bounds as they are
            steps[:m - 1] = np.diff(cmap.astype(np.int32))
        elif lut.bracket(bounds32)[0] is not None:
            table = lut.bracket(bounds32)[0].numpy()
            bounds = np.concatenate([bounds, [np.inf]])
        else:
            pad = (1 << bounds.size.bit_length()) - 1 - bounds.size
            bounds = np.concatenate([bounds, np.full(pad, np.inf, np.float32)])
        arrays = (np.ascontiguousarray(bounds, np.float32), np.ascontiguousarray(cmap, np.uint8),
                  np.ascontiguousarray(table, np.int16), steps)
        b, c, t, d = arrays
        return arrays, (b.ctypes.data, b.size, c.ctypes.data, c.size, t.ctypes.data, t.size, d.ctypes.data)

    return cached(("cpu", dtype), tensors, build)


def encode(x: torch.Tensor, bounds32, code_map, bits: int) -> torch.Tensor:
    """pack_codes(code(x), bits) for a CPU tensor x that `serves` accepts (read row-major;
    copied only when not contiguous)."""
    flat = x if x.is_contiguous() else x.detach().contiguous()    # read through data_ptr: no view needed
    n = flat.numel()
    out = torch.empty(bits * ((n + 7) // 8), dtype=torch.uint8)
    if n:
        arrays, constant = _constants(x.dtype, bounds32, code_map)   # arrays: kept alive here
        if not _launch("encode", x.dtype, n, (flat.data_ptr(), n, *constant, bits, out.data_ptr())):
            return pack_codes(reference_encode(x, bounds32, None, code_map), bits)
    return out


def decode(packed: torch.Tensor, grad_y: torch.Tensor, levels: torch.Tensor, bits: int) -> torch.Tensor:
    """(float32(grad_y) * levels[code]).to(grad_y.dtype) for the codes in packed, grad_y's shape."""
    g = grad_y.detach().contiguous()
    out = torch.empty(g.shape, dtype=g.dtype)
    n = g.numel()
    if n:
        if packed.numel() != bits * ((n + 7) // 8) or not packed.is_contiguous() or levels.dtype != torch.float32:
            raise ValueError(f"decode: {packed.numel()} packed bytes do not hold {n} codes of {bits} bits")
        levels = levels.contiguous()
        head = (packed.data_ptr(), n, g.data_ptr(), levels.data_ptr(), levels.numel(), bits, out.data_ptr())
        if not _launch("decode", g.dtype, n, head):
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
    does not pay for it; also looks up torch's OpenMP team."""
    _team()
    for dtype in dtypes:
        for kind in ("encode", "decode"):
            try:
                _worker(kind, dtype, announce=False)
            except Exception as error:
                _disable(error)
                return
