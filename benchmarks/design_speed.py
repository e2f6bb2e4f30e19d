"""Design speed: our engine vs a dense-matrix numpy DP (the reference code's method).

    python -m benchmarks.design_speed

Prints a markdown table: warm-process design times (median [20 %, 80 %]), the whole
`fewbit-design gelu --bits 3` process, and the baseline on a 4096-point grid with both errors.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks._harness import fmt, timeit

from fewbit_design.activations import get_activation
from fewbit_design.designer import design, evaluate
from fewbit_design.distributions import parse_distribution
from fewbit_design.table import Table


def dense_numpy_dp(name, bits, n=4096, lo=-6.0, hi=6.0):
    """Baseline: f' and w sampled at n cell centres, an n×n cost matrix, k layers of min-plus."""
    act, dist = get_activation(name), parse_distribution("normal:0,1")
    x = np.linspace(lo, hi, n)
    w = dist.pdf(x)
    w /= w.sum()
    d = act.df(x)
    P0 = np.concatenate([[0], np.cumsum(w)])
    P1 = np.concatenate([[0], np.cumsum(w * d)])
    P2 = np.concatenate([[0], np.cumsum(w * d * d)])
    S0 = P0[None, :] - P0[:, None]                    # (n+1, n+1): run [i, j)
    S1 = P1[None, :] - P1[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.where(S0 > 0, (P2[None, :] - P2[:, None]) - S1 * S1 / S0, 0.0)
    C[np.tril_indices(n + 1, -1)] = np.inf
    k = 2 ** bits
    D = C[0].copy()
    arg = np.zeros((k, n + 1), dtype=np.int64)
    for layer in range(1, k):
        M = D[:, None] + C
        arg[layer] = np.argmin(M, axis=0)
        D = M[arg[layer], np.arange(n + 1)]
    cuts = [n]
    for layer in range(k - 1, 0, -1):
        cuts.append(arg[layer, cuts[-1]])
    cuts = np.unique(np.array(cuts[::-1]))
    cuts = cuts[(cuts > 0) & (cuts < n)]
    edges = np.concatenate([[lo - 0.5 * (x[1] - x[0])], 0.5 * (x[1:] + x[:-1])])
    s = edges[cuts]
    y = np.array([np.sum((w * d)[a:b]) / max(np.sum(w[a:b]), 1e-300)
                  for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]]))])
    t = Table(activation=name, bits=bits, boundaries=s, codes=np.arange(s.size + 1), levels=y,
              mse=0.0, relative_error=0.0, distribution="normal", dist_params={"mean": 0.0, "std": 1.0})
    return evaluate(t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one design, one process round, the 2-bit baseline")
    a = p.parse_args(argv)
    rows = []
    cases = [(3, "contiguous")] if a.quick else [(3, "contiguous"), (3, "levelset"), (3, "auto"), (8, "contiguous"),
                                                 (8, "levelset")]
    for bits, part in cases:
        t, table = timeit(lambda: design("gelu", bits, partition=part), repeat=1 if a.quick else 15 if bits < 8 else 5)
        rows.append((f"design('gelu', {bits}, partition='{part}')", fmt(t), f"{table.relative_error:.6e}"))
    # whole processes, warm numba cache, with the bytecode cache a user has (written on first run)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    floor = os.path.join(tempfile.mkdtemp(), "numba_floor.py")   # caching needs a real file
    with open(floor, "w") as fh:
        fh.write("import numba\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\nf(1.0)\n")
    script = os.path.join(os.path.dirname(sys.executable), "fewbit-design")   # not a pyenv shim
    if not os.path.exists(script):
        script = shutil.which("fewbit-design") or sys.exit("install the package first: pip install -e .")
    procs = [("process `fewbit-design gelu --bits 3`", [script, "gelu", "--bits", "3"]),
             ("process: numba floor (import numba, call one cached kernel)", [sys.executable, floor]),
             ("process: `python -c 'import numba'`", [sys.executable, "-c", "import numba"]),
             ("process: `python -c 'import numpy'`", [sys.executable, "-c", "import numpy"]),
             ("process: `python -c pass`", [sys.executable, "-c", "pass"])]
    for label, cmd in procs:   # interleaved, so that load on the machine hits all alike
        subprocess.run(cmd, check=True, capture_output=True, env=env)
    times = {label: [] for label, _ in procs}
    for _ in range(1 if a.quick else 9):
        for label, cmd in procs:
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            times[label].append(time.perf_counter() - t0)
    for label, _ in procs:
        q20, med, q80 = np.quantile(times[label], [0.2, 0.5, 0.8])
        rows.append((label, fmt((med, q20, q80)), ""))
    print("| what | time: median [20 %, 80 %] | relative error |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    print()
    print("| gelu, normal:0,1 | ours | dense numpy DP, 4096 points | ratio (time) | our rel. error | baseline rel. error |")
    print("|---|---|---|---|---|---|")
    for bits in (2,) if a.quick else (2, 3, 4):
        t_ours, ours = timeit(lambda: design("gelu", bits, partition="contiguous"), repeat=1 if a.quick else 9)
        t0 = time.perf_counter()
        _, base_rel = dense_numpy_dp("gelu", bits)
        t_base = time.perf_counter() - t0
        print(f"| {bits} bits | {fmt(t_ours)} | {t_base:.2f} s | {t_base / t_ours[0]:.0f}x | "
              f"{ours.relative_error:.9e} | {base_rel:.9e} |")


if __name__ == "__main__":
    main()
