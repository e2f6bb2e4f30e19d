"""The CPU path against native torch: activations alone, and a small transformer's training step.

Part 1: GELU and SiLU at 1-4 and 8 bits, float32 and bfloat16, 2^16 .. 2^24 elements;
forward (with autograd recording), backward, and forward + backward, each against the native
module, plus the plain torch path (the CPU path's oracle and predecessor) at 3 bits.
Part 2: one AdamW training step of a small character-level GPT (pre-LN blocks, GELU MLP),
exact GELU against 3-bit GELU, two copies of one model.

Every variant of a row group is timed in turns (round r times each variant once), so that
load from other processes falls on all of them alike; ratios are within one run only.
Median and 20/80 % quantiles (benchmarks/_harness.py). By default glibc is told (mallopt)
to keep freed memory, so that neither variant pays page faults for memory it returned to the
kernel a call earlier: which variant does is decided by heap layout, not by the code timed
(here native GELU took about 250 minor faults per forward + backward on 2^20 floats as it
came, and the few-bit path none); `--malloc default` times glibc as it comes.

    python -m benchmarks.cpu_runtime                 # full table (a few minutes)
    python -m benchmarks.cpu_runtime --quick         # 2^16 and 2^20, GELU, fewer rounds
    python -m benchmarks.cpu_runtime --skip-activations --malloc default
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import fewbit_design.torch as ft
from fewbit_design.torch import cpu, functional

from benchmarks._harness import fmt, timeit
from benchmarks._models import GPT


def rounds(variants: dict, repeat: int, raw: bool = False) -> dict:
    """{name: (median, q20, q80)}: each variant once per round, `repeat` rounds, after a warm-up
    (raw: {name: all times})."""
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for _ in range(repeat):
        for name, fn in variants.items():
            times[name].append(timeit(fn, repeat=1, warmup=0)[0][0])
    if raw:
        return times
    return {name: tuple(np.quantile(t, [0.5, 0.2, 0.8])) for name, t in times.items()}


def focus(repeat: int):
    """The issue's case: GELU forward + backward, 3 bits, 2^20 float32, many rounds in turns;
    also the minor page faults per call of each variant."""
    x = torch.randn(1 << 20).requires_grad_(True)
    g = torch.randn(1 << 20)
    faults = {}

    def both(name, m):
        def run():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            x.grad = None
            m(x).backward(g)
            faults.setdefault(name, []).append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return run

    variants = {"native": both("native", nn.GELU()), "3 bit": both("3 bit", ft.GELU(bits=3))}
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for r in range(repeat):             # in turns, the order swapped every round
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    paired = np.array(times["3 bit"]) / np.array(times["native"])   # the two calls of one round
    print(f"GELU forward + backward, 2^20 float32 elements, {repeat} rounds in turns (order swapped each round)")
    print()
    print("| variant | median [20 %, 80 %] | min | vs native (medians) | vs native (mins) "
          "| vs native (median of per-round ratios [20 %, 80 %]) | page faults per call |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = times["native"]
    for variant, t in times.items():
        q = tuple(np.quantile(t, [0.5, 0.2, 0.8]))
        ratio = (f"{np.median(paired):.2f} [{np.quantile(paired, 0.2):.2f}, {np.quantile(paired, 0.8):.2f}]"
                 if variant != "native" else "1.00")
        print(f"| {variant} | {fmt(q)} | {min(t) * 1e3:.2f} ms | {q[0] / np.median(base):.2f} "
              f"| {min(t) / min(base):.2f} | {ratio} | {np.mean(faults[variant][1:]):.0f} |")
    print()


def forward_backward_in_turns(modules: dict, x, g, repeat: int, warmup: int, swap: bool) -> dict:
    """{(name, "forward" | "backward"): seconds of each of `repeat` rounds}: every module's forward
    and backward on x (gradient g) once a round, in turns (the order swapped every round if
    `swap`), after `warmup` rounds."""
    times = {(name, p): [] for name in modules for p in ("forward", "backward")}
    for r in range(warmup + repeat):
        for name in (list(modules)[::-1] if swap and r % 2 else list(modules)):
            x.grad = None
            t0 = time.perf_counter()
            y = modules[name](x)
            t1 = time.perf_counter()
            y.backward(g)
            t2 = time.perf_counter()
            if r >= warmup:
                times[(name, "forward")].append(t1 - t0)
                times[(name, "backward")].append(t2 - t1)
    return times


def overhead(repeat: int):
    """Fixed cost per call: forward and backward on 1024 float32 elements, in turns."""
    modules = {"native": nn.GELU(), "3 bit": ft.GELU(bits=3)}
    times = forward_backward_in_turns(modules, torch.randn(1024).requires_grad_(True), torch.randn(1024),
                                      repeat, warmup=50, swap=False)
    print(f"Cost per call on 1024 float32 elements (GELU), {repeat} rounds in turns: median [20 %, 80 %]")
    print()
    print("| variant | forward | backward |")
    print("|---|---:|---:|")
    for name in modules:
        f, b = (np.quantile(times[(name, p)], [0.5, 0.2, 0.8]) * 1e6 for p in ("forward", "backward"))
        print(f"| {name} | {f[0]:.1f} µs [{f[1]:.1f}, {f[2]:.1f}] | {b[0]:.1f} µs [{b[1]:.1f}, {b[2]:.1f}] |")
    print()


def breakdown(repeat: int):
    """Where a 3-bit GELU forward + backward on 2^20 float32 spends its time, against native:
    forward and backward of each in turns, and inside the 3-bit one torch's GELU, the coding
    pass and the decoding pass (each timed around its call, Python included)."""
    x = torch.randn(1 << 20).requires_grad_(True)
    g = torch.randn(1 << 20)
    inner = {"torch's GELU (inside)": [], "coding pass (cpu.encode)": [], "decoding pass (cpu.decode)": []}

    def timed(fn, into):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            into.append(time.perf_counter() - t0)
            return out
        return run

    saved = cpu.encode, cpu.decode, functional.TORCH_FORWARD
    cpu.encode = timed(cpu.encode, inner["coding pass (cpu.encode)"])
    cpu.decode = timed(cpu.decode, inner["decoding pass (cpu.decode)"])
    functional.TORCH_FORWARD = {**saved[2], "gelu": timed(saved[2]["gelu"], inner["torch's GELU (inside)"])}
    try:
        times = forward_backward_in_turns({"native": nn.GELU(), "3 bit": ft.GELU(bits=3)}, x, g, repeat,
                                          warmup=20, swap=True)
    finally:
        cpu.encode, cpu.decode, functional.TORCH_FORWARD = saved
    print(f"Where the time goes: GELU, 2^20 float32, {repeat} rounds in turns (the first 20 dropped); "
          "median [20 %, 80 %]")
    print()
    print("| part | time |")
    print("|---|---:|")
    for (name, p), t in times.items():         # warm-up rounds already dropped
        print(f"| {name}, {p} | {fmt(tuple(np.quantile(t, [0.5, 0.2, 0.8])))} |")
    for part, t in inner.items():             # one call per round, warm-up rounds included
        print(f"| 3 bit: {part} | {fmt(tuple(np.quantile(t[20:], [0.5, 0.2, 0.8])))} |")
    print()


def steady_malloc() -> bool:
    """Keep glibc's heap from being trimmed and its blocks up to 32 MiB off mmap, so that
    freed tensor memory is reused instead of being returned and faulted in again on the next
    call (which heap layout decides, per variant, by luck). False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) and libc.mallopt(M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, AttributeError):
        return False


class torch_path:
    """Context: FewbitFunction without the CPU path (the plain torch path)."""

    def __enter__(self):
        self.saved, functional.cpu = functional.cpu, None

    def __exit__(self, *exc):
        functional.cpu = self.saved


def activation_rows(name: str, dtype, n: int, bits_list, repeat: int):
    native = {"gelu": nn.GELU, "silu": nn.SiLU}[name]()
    make = {"gelu": ft.GELU, "silu": ft.SiLU}[name]
    modules = {"native": native} | {f"{b} bit": make(bits=b) for b in bits_list}
    x = torch.randn(n, dtype=dtype).requires_grad_(True)
    g = torch.randn(n, dtype=dtype)
    graphs = {k: m(x) for k, m in modules.items()}

    def fwd(m):
        return lambda: m(x)

    def bwd(y):
        def run():
            x.grad = None
            y.backward(g, retain_graph=True)
        return run

    def both(m, plain=False):
        def run():
            x.grad = None
            if plain:
                with torch_path():
                    m(x).backward(g)
            else:
                m(x).backward(g)
        return run

    plain = {"3 bit, torch path": modules["3 bit"]} if "3 bit" in modules else {}
    out = {}
    out["forward"] = rounds({k: fwd(m) for k, m in modules.items()}, repeat)
    out["backward"] = rounds({k: bwd(y) for k, y in graphs.items()}, repeat)
    out["forward+backward"] = rounds({k: both(m) for k, m in modules.items()}
                                     | {k: both(m, True) for k, m in plain.items()}, repeat)
    return out


def training_rows(args, repeat: int):
    text = open(__file__, encoding="utf-8").read()        # any text: its characters are the vocabulary
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text])
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    exact = GPT(len(chars), dim=args.dim, layers=args.layers, heads=args.heads, context=args.seq)
    fewbit = GPT(len(chars), dim=args.dim, layers=args.layers, heads=args.heads, context=args.seq)
    fewbit.load_state_dict(exact.state_dict())
    ft.convert(fewbit, bits=3)

    def step_of(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            i = torch.randint(0, data.numel() - args.seq - 1, (args.batch,), generator=gen)
            idx = torch.stack([data[j:j + args.seq] for j in i])
            target = torch.stack([data[j + 1:j + args.seq + 1] for j in i])
            loss = F.cross_entropy(model(idx).flatten(0, 1), target.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    return rounds({"exact GELU": step_of(exact), "3-bit GELU": step_of(fewbit)}, repeat)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2^16 and 2^20 elements, GELU only, fewer rounds")
    p.add_argument("--repeat", type=int, default=None, help="rounds per row group")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--skip-activations", action="store_true", help="only the focus case and the training step")
    p.add_argument("--focus-rounds", type=int, default=300, help="rounds for the focus case")
    p.add_argument("--malloc", choices=["steady", "default"], default="steady",
                   help="steady (default): glibc keeps freed memory (mallopt), so no variant pays page "
                        "faults that heap layout hands out by luck; default: glibc as it comes")
    args = p.parse_args()
    steady = args.malloc == "steady" and steady_malloc()
    sizes = [16, 20] if args.quick else [16, 20, 24]
    names = ["gelu"] if args.quick else ["gelu", "silu"]
    repeat = args.repeat or (15 if args.quick else 25)

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu.warm_up()        # compile or load the kernels before timing (see README, "CPU path")
    import numba
    print(f"torch {torch.__version__}, numba {numba.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"{repeat} rounds per row group; malloc {'steady (mallopt)' if steady else 'as it comes'}")
    print()
    focus(args.focus_rounds)
    breakdown(args.focus_rounds)
    overhead(2000)
    for name in [] if args.skip_activations else names:
        for dtype in (torch.float32, torch.bfloat16):
            for log_n in sizes:
                rep = max(5, repeat // 3) if log_n >= 24 else repeat
                res = activation_rows(name, dtype, 1 << log_n, [1, 2, 3, 4, 8], rep)
                if name == names[0] and dtype == torch.float32 and log_n == sizes[0]:
                    print()
                    print("| activation | dtype | n | pass | variant | time | vs native |")
                    print("|---|---|---:|---|---|---:|---:|")
                for pass_, row in res.items():
                    base = row["native"][0]
                    for variant, t in row.items():
                        print(f"| {name} | {str(dtype)[6:]} | 2^{log_n} | {pass_} | {variant} | {fmt(t)} "
                              f"| {t[0] / base:.2f} |", flush=True)
    print()
    res = training_rows(args, max(10, repeat))
    print(f"Training step, char-level GPT: {args.layers} blocks, dim {args.dim}, {args.heads} heads, "
          f"seq {args.seq}, batch {args.batch}, AdamW, float32; the two models in turns")
    print()
    print("| model | step | vs exact |")
    print("|---|---:|---:|")
    base = res["exact GELU"][0]
    for variant, t in res.items():
        print(f"| {variant} | {fmt(t)} | {t[0] / base:.3f} |")


if __name__ == "__main__":
    main()
