"""Tiny timing harness shared by the benchmarks: median and 20/80 % quantiles."""

import time

import numpy as np


def timeit(fn, *, repeat=15, warmup=1):
    """Run fn() warmup + repeat times; return (median, q20, q80) seconds and the last result."""
    for _ in range(warmup):
        out = fn()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    q20, med, q80 = np.quantile(t, [0.2, 0.5, 0.8])
    return (med, q20, q80), out


def fmt(t):
    med, q20, q80 = t
    unit, scale = ("ms", 1e3) if med < 1 else ("s", 1.0)
    return f"{med * scale:.1f} {unit} [{q20 * scale:.1f}, {q80 * scale:.1f}]"
