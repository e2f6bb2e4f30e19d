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
Three rooms: this module (the public face: what a launch reads, filled into its record),
cpu_team.py (the launcher: cfuncs made on first use, run on torch's OpenMP team) and
cpu_kernels.py (the numba kernels, in blocks of _BLOCK elements, a multiple of 8: a block owns
whole bytes of every plane; disjoint blocks own disjoint bytes).
Compilation (about 8 s of CPU per dtype, once per machine) is cached on disk by numba;
`warm_up()` does it, or loads it, before training; elsewhere it warns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import cpu_team, lut
from .cpu_kernels import _NUMBA_COMPARE_INTERVALS, CodingRecord
from .packing import pack_codes, unpack_codes
from .reference import encode as reference_encode
from .tables import cached

__all__ = ["serves", "encode", "decode", "warm_up"]

# -- the public face --------------------------------------------------------------------

_SERVED = (torch.float32, torch.bfloat16, torch.float16)
_EMPTY = np.zeros(0, np.int16)


def serves(t: torch.Tensor) -> bool:
    """True when the CPU path handles t: a CPU float tensor, outside torch.compile's tracing."""
    return (t.device.type == "cpu" and t.dtype in _SERVED and not cpu_team._BROKEN
            and not torch.compiler.is_compiling())


@dataclass(frozen=True)
class _Coding:
    """A table as encode reads it for x of one dtype: the arrays (kept alive here) and the
    CodingRecord that points at them."""
    bounds: np.ndarray   # float32; for the binary search padded with +inf to 2^j - 1, for the bracket table +inf last
    cmap: np.ndarray     # uint8 interval -> code
    table: np.ndarray    # int16: the code of every 16-bit pattern, or float32's bracket table; else empty
    steps: np.ndarray    # int32 cmap[i+1] - cmap[i] for the compares, else zeros
    record: CodingRecord


def _coding(dtype, bounds32, code_map) -> _Coding:
    """The _Coding of a table's tensors for x of `dtype`; cached per table tensors."""
    tensors = (bounds32,) if code_map is None else (bounds32, code_map)

    def build():
        bounds = bounds32.numpy()
        m = bounds.size + 1
        cmap = np.arange(m, dtype=np.uint8) if code_map is None else code_map.numpy()
        table = _EMPTY
        steps = np.zeros(_NUMBA_COMPARE_INTERVALS + 8, np.int32)
        if dtype != torch.float32:  # one load per element beats even a single compare pass
            table = lut.code_lut(bounds32, code_map, dtype).numpy().astype(np.int16)
        elif m <= _NUMBA_COMPARE_INTERVALS:     # compares: the bounds as they are
            steps[:m - 1] = np.diff(cmap.astype(np.int32))
        elif lut.bracket(bounds32)[0] is not None:
            table = lut.bracket(bounds32)[0].numpy()
            bounds = np.concatenate([bounds, [np.inf]])
        else:
            pad = (1 << bounds.size.bit_length()) - 1 - bounds.size
            bounds = np.concatenate([bounds, np.full(pad, np.inf, np.float32)])
        b, c, t = (np.ascontiguousarray(bounds, np.float32), np.ascontiguousarray(cmap, np.uint8),
                   np.ascontiguousarray(table, np.int16))
        record = CodingRecord(bounds=b.ctypes.data, bounds_size=b.size, cmap=c.ctypes.data, intervals=c.size,
                              table=t.ctypes.data, table_size=t.size, steps=steps.ctypes.data)
        return _Coding(b, c, t, steps, record)

    return cached(("cpu", dtype), tensors, build)


def encode(x: torch.Tensor, bounds32, code_map, bits: int) -> torch.Tensor:
    """pack_codes(code(x), bits) for a CPU tensor x that `serves` accepts (read row-major;
    copied only when not contiguous)."""
    flat = x if x.is_contiguous() else x.detach().contiguous()    # read through data_ptr: no view needed
    n = flat.numel()
    out = torch.empty(bits * ((n + 7) // 8), dtype=torch.uint8)
    if n:
        coding = _coding(x.dtype, bounds32, code_map)   # its arrays stay alive while cached
        a = cpu_team.record("encode")
        a.x, a.n, a.bits, a.out, a.coding = flat.data_ptr(), n, bits, out.data_ptr(), coding.record
        if not cpu_team.launch("encode", x.dtype, n):
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
        a = cpu_team.record("decode")
        a.packed, a.n, a.grad_y, a.bits, a.out = packed.data_ptr(), n, g.data_ptr(), bits, out.data_ptr()
        a.levels, a.levels_size = levels.data_ptr(), levels.numel()
        if not cpu_team.launch("decode", g.dtype, n):
            scale = levels.index_select(0, unpack_codes(packed, bits, n).int()).view(g.shape)
            return (g.float() * scale).to(g.dtype)
    return out


def warm_up(dtypes=(torch.float32, torch.bfloat16, torch.float16)) -> None:
    """Compile (the first time on a machine: several seconds of CPU per dtype) or load from
    numba's disk cache the CPU path's kernels for `dtypes`, so that the first training step
    does not pay for it; also looks up torch's OpenMP team."""
    cpu_team._team()
    for dtype in dtypes:
        for kind in ("encode", "decode"):
            try:
                cpu_team._worker(kind, dtype, announce=False)
            except Exception as error:
                cpu_team.disable(error)
                return
