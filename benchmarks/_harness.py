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
    """(median, q20, q80) seconds as 'median [q20, q80]' in µs below 1 ms, ms below 1 s, else s."""
    med, q20, q80 = t
    unit, scale, digits = ("µs", 1e6, 0) if med < 1e-3 else ("ms", 1e3, 1) if med < 1 else ("s", 1.0, 1)
    return f"{med * scale:.{digits}f} {unit} [{q20 * scale:.{digits}f}, {q80 * scale:.{digits}f}]"
