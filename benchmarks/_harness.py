"""Tiny timing harness shared by the benchmarks: median and 20/80 % quantiles."""

import os
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


def results_path(given, committed, *, full_run):
    """Where a benchmark writes a result file: `given` (--out) if set; the committed file only for
    the full default run that produced it; any other run (--quick, fewer models, smaller sizes)
    goes to a temporary folder, so that a first try never replaces committed evidence."""
    if given:
        return given
    if full_run:
        return committed
    import tempfile
    folder = os.path.join(tempfile.gettempdir(), "fewbit-benchmarks")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, os.path.basename(committed))


def is_default_run(parser, args, *, ignore=()):
    """True when every option of `args` has its parser default (options in `ignore` aside)."""
    defaults = vars(parser.parse_args([]))
    return all(v == defaults[k] for k, v in vars(args).items() if k not in ignore)
