"""Fused Triton kernels vs native GELU vs the plain torch fewbit path (CUDA only).

    python -m benchmarks.gpu_kernels            # n = 2^24, 2^26, 2^28; bits 1-4 and 8
    python -m benchmarks.gpu_kernels --quick    # n = 2^24 only
    python -m benchmarks.gpu_kernels --tune     # also: block size, warps and search kind

First checks, for every fused activation and dtype, that the kernel's y is bit for bit torch's
(every float16 / bfloat16 value; 2^22 float32 bit patterns). Then, for GELU in bf16 and fp32,
times forward and backward (CUDA events: median [20 %, 80 %] of 20 runs) and reports GB/s
against the bytes each path must move:

    native  forward  read x, write y                    backward  read g, read x, write grad
    fewbit  forward  read x, write y, write b/8 codes   backward  read b/8 codes, read g, write grad

"plain" is the torch fewbit path and "torch y + codes" F.gelu followed by the kernel with
ACT = 0 (the fallback where the fused y is not torch's bit for bit), both timed against the
same bytes. "fused (search)" finds each code by binary search over the boundaries and
"fused (lut)" by a table: for bf16 one gather from the 65536-entry table of codes, for fp32 one
gather from the 65536-entry prefix table (top 16 bits of x) and a compare with the rare bounds
inside the prefix's range (KernelConfig.lut_min_bits and lut32_min_bits choose; "torch y + codes"
uses DEFAULT_CONFIG's choice). "exact" says whether the fused y equals torch's, and the fused bytes and
gradients the plain path's.

Dry run of the code paths on the CPU (times meaningless):

    TRITON_INTERPRET=1 python -c "import benchmarks.gpu_kernels as b; b.DEVICE = 'cpu'
    b.speed_table([10]); b.tuning_table(10)"
"""

import dataclasses
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from fewbit_design.table import Table
from fewbit_design.torch import kernels
from fewbit_design.torch.reference import TORCH_FORWARD
from fewbit_design.torch.kernels import (DEFAULT_CONFIG, FUSED_ACTIVATIONS, KernelConfig, fused_backward,
                                         fused_forward, triton_available)
from fewbit_design.torch.packing import pack_codes, packed_nbytes, unpack_codes
from fewbit_design.torch.tables import table_constants

PARAMS = {"leaky_relu": {"negative_slope": 0.01}}
DEVICE = "cuda"  # "cpu" under TRITON_INTERPRET=1 only to dry-run the code paths (times meaningless)


def cuda_time(fn, *, repeat=20, warmup=3):
    """(median, q20, q80) seconds of fn() by CUDA events, and the last result."""
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeat):
        if DEVICE != "cuda":
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    q20, med, q80 = np.quantile(times, [0.2, 0.5, 0.8])
    return (med, q20, q80), out


def fmt_us(t):
    med, q20, q80 = t
    return f"{med * 1e6:.0f} [{q20 * 1e6:.0f}, {q80 * 1e6:.0f}]"


def gbps(nbytes, t):
    return f"{nbytes / t[0] / 1e9:.0f}"


def table_for(bits):
    # 2**bits equal-width intervals on [-4, 4] and random levels: speed and exactness depend on
    # the table's size, not its values
    m = 2 ** bits
    return Table(activation="gelu", bits=bits, boundaries=np.linspace(-4.0, 4.0, m - 1),
                 codes=np.arange(m), levels=np.random.default_rng(bits).normal(size=m),
                 mse=0.0, relative_error=0.0)


def with_lut_min_bits(config, value):
    """`config` with lut_min_bits = lut32_min_bits = value (1: the tables for 16-bit and float32
    x, 9: the search)."""
    return dataclasses.replace(config, lut_min_bits=value, lut32_min_bits=value)


def plain_forward(x, consts, bits):
    y = F.gelu(x)
    interval = torch.searchsorted(consts.bounds32, x.reshape(-1).float(), right=True, out_int32=True)
    codes = interval.to(torch.uint8) if consts.code_map is None else consts.code_map[interval]
    return y, pack_codes(codes, bits)


def plain_backward(packed, g, consts, bits):
    codes = unpack_codes(packed, bits, g.numel())
    return (g.float() * consts.levels.index_select(0, codes.int()).view(g.shape)).to(g.dtype)


def bit_equal(a, b):
    if a.dtype.is_floating_point:
        same = (a == b) | (a.isnan() & b.isnan())
        same &= a.signbit() == b.signbit()
    else:
        same = a == b
    return int((~same).sum())


def exactness_table():
    consts = table_constants(table_for(3), DEVICE)
    print("\n## fused y vs torch, bit for bit: differing elements (all values of float16 and bfloat16;"
          " for float32 2^22 bit patterns, a ramp and the special values)\n")
    print("| activation | float32 | float16 | bfloat16 |")
    print("|---|---|---|---|")
    for act in FUSED_ACTIVATIONS:
        cells = []
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = kernels.probe_values(dtype).to(DEVICE)
            y, _ = fused_forward(x, consts.bounds32, None, 3, act, PARAMS.get(act))
            bad = bit_equal(y, TORCH_FORWARD[act](x, **PARAMS.get(act, {})))
            cells.append("exact" if bad == 0 else f"{bad} of {x.numel()} differ")
        print(f"| {act} | " + " | ".join(cells) + " |")


def speed_table(sizes, bits_list=(1, 2, 3, 4, 8)):
    print("\n## GELU forward / backward: time in us, median [20 %, 80 %]; GB/s of the bytes moved\n")
    print("| dtype | n | bits | path | forward us | fwd GB/s | backward us | bwd GB/s | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        es = torch.tensor([], dtype=dtype).element_size()
        for logn in sizes:
            n = 1 << logn
            x = torch.randn(n, device=DEVICE, dtype=dtype)
            g = torch.randn(n, device=DEVICE, dtype=dtype)
            t_f, _ = cuda_time(lambda: F.gelu(x))
            t_b, _ = cuda_time(lambda: torch.ops.aten.gelu_backward(g, x))
            print(f"| {dtype} | 2^{logn} | - | native | {fmt_us(t_f)} | {gbps(2 * n * es, t_f)} | "
                  f"{fmt_us(t_b)} | {gbps(3 * n * es, t_b)} | |")
            for bits in bits_list:
                for row in fewbit_rows(x, g, bits):
                    print(f"| {dtype} | 2^{logn} | {bits} | " + " | ".join(row) + " |")
            del x, g
            if DEVICE == "cuda":
                torch.cuda.empty_cache()


def fewbit_rows(x, g, bits):
    """Cells from `path` on of the fused, "torch y + codes" and plain rows for GELU at `bits`."""
    consts = table_constants(table_for(bits), DEVICE)
    code_bytes = packed_nbytes(x.numel(), bits)
    fwd_bytes = bwd_bytes = 2 * x.numel() * x.element_size() + code_bytes
    tp_f, (y_ref, packed_ref) = cuda_time(lambda: plain_forward(x, consts, bits), repeat=10)
    tp_b, grad_ref = cuda_time(lambda: plain_backward(packed_ref, g, consts, bits), repeat=10)
    rows = []
    # the fused forward with each way of finding the codes (backward once: the same)
    for label, lut_min_bits in (("fused (search)", 9), ("fused (lut)", 1)):
        config = with_lut_min_bits(DEFAULT_CONFIG, lut_min_bits)
        t_f, (y, packed) = cuda_time(
            lambda: fused_forward(x, consts.bounds32, consts.code_map, bits, "gelu", config=config))
        bad = {"y": bit_equal(y, y_ref), "bytes": bit_equal(packed, packed_ref)}
        backward = ["(fused)", ""]
        if not rows:
            t_b, grad = cuda_time(lambda: fused_backward(packed, g, consts.levels, bits))
            bad["grad"] = bit_equal(grad, grad_ref)
            backward = [fmt_us(t_b), gbps(bwd_bytes, t_b)]
        exact = "yes" if not any(bad.values()) else "NO: " + ", ".join(f"{k} {v}" for k, v in bad.items())
        rows.append([label, fmt_us(t_f), gbps(fwd_bytes, t_f), *backward, exact])
    tc_f, _ = cuda_time(lambda: (F.gelu(x), fused_forward(x, consts.bounds32, consts.code_map, bits)))
    rows.append(["torch y + codes", fmt_us(tc_f), gbps(fwd_bytes, tc_f), "(fused)", "", ""])
    rows.append(["plain", fmt_us(tp_f), gbps(fwd_bytes, tp_f), fmt_us(tp_b), gbps(bwd_bytes, tp_b), ""])
    return rows


def tuning_table(logn=26, configs=((128, 4, 1), (256, 4, 1), (128, 8, 1), (64, 2, 1), (128, 4, 3))):
    """Fused GELU forward (search and table) / backward, bf16 and fp32, over (bytes per program,
    warps, most bounds searched linearly)."""
    print(f"\n## tuning: GELU, n = 2^{logn}, time in us (median)\n")
    print("| dtype | bytes/program | warps | linear up to | bits | forward (search) | forward (lut) "
          "| backward |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(1 << logn, device=DEVICE, dtype=dtype)
        g = torch.randn_like(x)
        for block, warps, linear in configs:
            base = KernelConfig(block_bytes=block, num_warps=warps, linear_max=linear)
            for bits in (2, 3, 4, 8):
                consts = table_constants(table_for(bits), DEVICE)
                t_f = []
                for lut_min_bits in (9, 1):
                    config = with_lut_min_bits(base, lut_min_bits)
                    t, (_, packed) = cuda_time(lambda: fused_forward(x, consts.bounds32, None, bits, "gelu",
                                                                     config=config))
                    t_f.append(f"{t[0] * 1e6:.0f}")
                t_b, _ = cuda_time(lambda: fused_backward(packed, g, consts.levels, bits, config=base))
                print(f"| {dtype} | {block} | {warps} | {linear} | {bits} | {t_f[0]} | {t_f[1]} | "
                      f"{t_b[0] * 1e6:.0f} |")
        del x, g


def main(argv):
    if not torch.cuda.is_available() or not triton_available("cuda"):
        print("benchmarks.gpu_kernels: CUDA (and Triton) required; nothing to do on this machine.")
        return 0
    if kernels.interpreted():
        print("benchmarks.gpu_kernels: TRITON_INTERPRET=1 is set; unset it to time compiled kernels.")
        return 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}")
    print("libdevice for the transcendental activations:", kernels.torch_libdevice() or "Triton's own")
    exactness_table()
    if "--tune" in argv:
        tuning_table()
    speed_table([24] if "--quick" in argv else [24, 26, 28])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
