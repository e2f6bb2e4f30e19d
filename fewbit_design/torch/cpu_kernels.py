"""The CPU path's kernels (numba): coding + bit-plane packing of one block, unpacking + lookup +
multiply of one block, the team loop that shares a launch's blocks out, and the six C callbacks
(cfuncs) that run it, one per (kind, format), generated from one definition.

Everything these cfuncs compile lives in this one file: numba's disk cache checks only the
stamp of the file that defines a cfunc's function, so a kernel in another module could change
and leave a stale cached cfunc behind.

A launch hands a cfunc the address of its record (EncodeLaunch / DecodeLaunch: ctypes
Structures that the kernels read as numpy records, field by field); the launcher
(cpu_team.py) fills the team part, the public API (cpu.py) the rest.
"""

from __future__ import annotations

import ctypes
import types as pytypes
from collections import namedtuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

_BLOCK = 4096          # elements per block: 4096 B of codes and 16 KiB of float32 stay in L1
_NUMBA_COMPARE_INTERVALS = 32   # up to this many intervals, compares; beyond, a table or a search
_SLOT = 13 * _BLOCK    # scratch bytes per thread: codes (_BLOCK), ints (8 * _BLOCK), floats (4 * _BLOCK)

# -- launch records: addresses (as int64) and counts, read by name in the kernels --------------

_I64 = ctypes.c_int64


class CodingRecord(ctypes.Structure):
    """A table's arrays as encode reads them (built once per table by cpu._coding)."""
    _fields_ = [("bounds", _I64), ("bounds_size", _I64),   # float32 bounds, padded as the method needs
                ("cmap", _I64), ("intervals", _I64),       # uint8 interval -> code
                ("table", _I64), ("table_size", _I64),     # int16 code table or bracket table; may be empty
                ("steps", _I64)]                           # int32 cmap[i+1] - cmap[i], _NUMBA_COMPARE_INTERVALS + 8


class TeamRecord(ctypes.Structure):
    """Filled by the launcher: the threads' scratch slots (_SLOT bytes each), the addresses of
    omp_get_thread_num and omp_get_num_threads (0: the calling thread alone), and the shares'
    block counters (one int64 each)."""
    _fields_ = [("scratch", _I64), ("thread_num", _I64), ("num_threads", _I64), ("counters", _I64)]


class EncodeLaunch(ctypes.Structure):
    """x (n elements) -> out (bits planes of ceil(n/8) bytes), coded by `coding`."""
    _fields_ = [("x", _I64), ("n", _I64), ("bits", _I64), ("out", _I64),
                ("coding", CodingRecord), ("team", TeamRecord)]


class DecodeLaunch(ctypes.Structure):
    """out = float32(grad_y) * levels[code] for the codes in packed (n elements)."""
    _fields_ = [("packed", _I64), ("n", _I64), ("grad_y", _I64), ("levels", _I64), ("levels_size", _I64),
                ("bits", _I64), ("out", _I64), ("team", TeamRecord)]


# one thread's scratch (views of its slot): codes (_BLOCK uint8), ints (2 * _BLOCK int32),
# floats (_BLOCK float32, float32 x of 16-bit inputs)
Scratch = namedtuple("Scratch", "codes ints floats")
# a table as encode's arrays (see CodingRecord)
Coding = namedtuple("Coding", "bounds cmap table steps")

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


@numba.njit(inline="always")
def _coding(c):
    """The arrays of the CodingRecord c."""
    return Coding(numba.carray(_pointer(c.bounds, np.float32(0)), c.bounds_size),
                  numba.carray(_pointer(c.cmap, np.uint8(0)), c.intervals),
                  numba.carray(_pointer(c.table, np.int16(0)), c.table_size),
                  numba.carray(_pointer(c.steps, np.int32(0)), _NUMBA_COMPARE_INTERVALS + 8))


@numba.njit
def _encode_block(a, like, blk, s):
    """Codes of block blk of the EncodeLaunch a's x (like: x's scalar type), packed into its out;
    s is this thread's Scratch."""
    n, bits = a.n, a.bits
    x = numba.carray(_pointer(a.x, like), n)
    out = numba.carray(_pointer(a.out, np.uint8(0)), bits * ((n + 7) >> 3))
    bounds, cmap, table, steps = _coding(a.coding)
    codes, ints = s.codes, s.ints
    lo = blk * _BLOCK
    k = min(_BLOCK, n - lo)
    m = cmap.size                                # intervals; bounds may be padded past m - 1
    if table.size and x.itemsize == 2:           # 16-bit x: the code of every bit pattern
        for e in range(k):
            codes[e] = table[np.uint16(x[lo + e])]
        _pack_block(codes, k, out, (n + 7) >> 3, lo, bits)
        return
    v = _floats(x, lo, k, s.floats)
    if m <= _NUMBA_COMPARE_INTERVALS:
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
def _decode_block(a, like, blk, s):
    """out = float32(grad_y) * levels[code] on block blk of the DecodeLaunch a, in grad_y's
    format (like: its scalar type); s is this thread's Scratch."""
    n, bits = a.n, a.bits
    packed = numba.carray(_pointer(a.packed, np.uint8(0)), bits * ((n + 7) >> 3))
    g = numba.carray(_pointer(a.grad_y, like), n)
    levels = numba.carray(_pointer(a.levels, np.float32(0)), a.levels_size)
    out = numba.carray(_pointer(a.out, like), n)
    codes, ints = s.codes, s.ints
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
    gs, os = g[lo:lo + k], out[lo:lo + k]
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


# -- launches: one cfunc per (kind, format), given the address of its launch record --------

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


@numba.njit(inline="always")
def _scratch(at):
    """The Scratch in the slot at address `at`."""
    return Scratch(numba.carray(_pointer(at, np.uint8(0)), _BLOCK),
                   numba.carray(_pointer(at + _BLOCK, np.int32(0)), 2 * _BLOCK),
                   numba.carray(_pointer(at + 9 * _BLOCK, np.float32(0)), _BLOCK))


@numba.njit(inline="always")
def _share(blocks, count, s):
    """(first, end) blocks of share s of count: torch's parallel_for split, contiguous, in order."""
    return blocks * s // count, blocks * (s + 1) // count


_RECORD = _BLOCK_KERNEL = _LIKE = None   # _launch's three names, bound per cfunc by _cfunc_source


def _launch(data):
    """The one cfunc body: this thread's part of a launch of _RECORD at data, with _BLOCK_KERNEL
    on x's format _LIKE (the three are bound per cfunc by _cfunc_source). Its own share of the
    blocks first, then any block of another share that its owner has not taken yet (one atomic
    counter per share), with its own scratch."""
    a = numba.carray(data, 1, _RECORD)[0]
    team = a.team
    t, count = _ask(team.thread_num), max(_ask(team.num_threads), 1)   # 0 of 1 without a team
    scratch = _scratch(team.scratch + t * _SLOT)
    blocks = (a.n + _BLOCK - 1) // _BLOCK
    for j in range(count):
        share = (t + j) % count
        first, end = _share(blocks, count, share)
        blk = first + _claim(team.counters, share)
        while blk < end:
            _BLOCK_KERNEL(a, _LIKE, blk, scratch)
            blk = first + _claim(team.counters, share)


FORMATS = {"float32": np.float32(0), "bfloat16": np.int16(0), "float16": np.uint16(0)}   # x's format -> the
# scalar whose type tells the kernels that format (16-bit formats read through their bit patterns)
_KINDS = {"encode": (EncodeLaunch, _encode_block), "decode": (DecodeLaunch, _decode_block)}


def _cfunc_source(kind: str, fmt: str):
    """_launch bound to (kind, fmt), as a module-level function of its own name: numba's disk
    cache keys a cfunc by its function's file and name."""
    record, block = _KINDS[kind]
    bound = dict(globals(), _RECORD=np.dtype(record), _BLOCK_KERNEL=block, _LIKE=FORMATS[fmt])
    fn = pytypes.FunctionType(_launch.__code__, bound, f"_{kind}_{fmt}")
    fn.__qualname__ = fn.__name__
    return fn


CFUNC_SOURCES = {(kind, fmt): _cfunc_source(kind, fmt) for kind in _KINDS for fmt in FORMATS}
