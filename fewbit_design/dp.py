"""DP step: numba kernels for the exact segmentation DPs over prefix moments.

All kernels take prefix sums P (3, n+1) of (w, w·v, w·v²) over n ordered cells; the cost
of a run of cells [a, b) is its weighted variance S2 - S1²/S0, clamped at 0, and 0 when
empty or weightless. Ties break towards the smallest split index.
"""

from __future__ import annotations

import numba
import numpy as np

from ._jit import kernel


@numba.njit(cache=True, inline="always")
def _cost(p0, p1, p2, a, b):
    s0 = p0[b] - p0[a]
    if s0 <= 0.0:
        return 0.0
    s1 = p1[b] - p1[a]
    c = (p2[b] - p2[a]) - s1 * s1 / s0
    return c if c > 0.0 else 0.0


@numba.njit(cache=True)
def _first_layer(p0, p1, p2):
    """Cost of the single run [0, i) for every end i."""
    n = p0.size - 1
    out = np.empty(n + 1)
    for i in range(n + 1):
        out[i] = _cost(p0, p1, p2, 0, i)
    return out


@numba.njit(cache=True)
def _backtrack(arg, n):
    """Cuts (k+1,) from the argmin table arg[layer, end] of a k-layer segmentation DP."""
    k = arg.shape[0]
    cuts = np.empty(k + 1, dtype=np.int64)
    cuts[k] = n
    i = n
    for layer in range(k - 1, 0, -1):
        i = arg[layer, i]
        cuts[layer] = i
    cuts[0] = 0
    return cuts


@kernel
def _segment_dp_kernel(P, k):
    """Optimal cut of n cells into at most k runs: O(k·n²) time, O(k·n) memory.

    Returns cuts (k+1,) with cuts[0] = 0, cuts[k] = n, non-decreasing (equal = empty run).
    Exact for any cost: no Monge assumption (f' need not be monotone).
    """
    p0, p1, p2 = P[0], P[1], P[2]
    n = p0.size - 1
    prev = _first_layer(p0, p1, p2)          # one run [0, i)
    arg = np.zeros((k, n + 1), dtype=np.int32)
    cur = np.empty(n + 1)
    cand = np.empty(n + 1)
    for layer in range(1, k):
        first = n if layer == k - 1 else 0   # the last layer only needs the full range
        for i in range(first, n + 1):
            a0, a1, a2 = p0[i], p1[i], p2[i]
            for s in range(i):               # branch-free, so LLVM vectorises the divisions
                s0 = a0 - p0[s]
                s1 = a1 - p1[s]
                live = s0 > 0.0
                c = (a2 - p2[s]) - s1 * s1 / (s0 if live else 1.0)
                cand[s] = prev[s] + (c if (live and c > 0.0) else 0.0)
            best = prev[i]                   # empty run [i, i)
            bs = i
            for s in range(i):
                if cand[s] < best:
                    best = cand[s]
                    bs = s
            cur[i] = best
            arg[layer, i] = bs
        prev, cur = cur, prev
    return _backtrack(arg, n)


@kernel
def _exchange_refine_kernel(P, cuts, max_sweeps):
    """Local refinement of cuts: move each cut to the best split of its two runs.

    Each move is an exact 2-segment optimum over the union of the neighbouring runs, so the
    total cost never increases; stops when a sweep moves nothing. Returns the sweep count.
    """
    p0, p1, p2 = P[0], P[1], P[2]
    k = cuts.size - 1
    for sweep in range(max_sweeps):
        moved = False
        for j in range(1, k):
            a, c = cuts[j - 1], cuts[j + 1]
            best = _cost(p0, p1, p2, a, cuts[j]) + _cost(p0, p1, p2, cuts[j], c)
            bs = cuts[j]
            for s in range(a, c + 1):
                v = _cost(p0, p1, p2, a, s) + _cost(p0, p1, p2, s, c)
                if v < best * (1.0 - 1e-15) - 1e-300:
                    best = v
                    bs = s
            if bs != cuts[j]:
                cuts[j] = bs
                moved = True
        if not moved:
            return sweep + 1
    return max_sweeps


EXCHANGE_SWEEPS = 10_000  # at most this many exchange sweeps after a DP over bins


def optimal_runs(P: np.ndarray, bits: int, *, monge: bool = False, bins: np.ndarray | None = None
                 ) -> tuple[np.ndarray, int]:
    """Distinct cuts (0 first, n last) of the n cells with prefix moments P into at most 2**bits
    runs, and the exchange sweeps taken.

    monge : the cells are sorted by value, where the cost is Monge (kmeans_segment is exact there).
    bins : ascending column indices of P: the DP cuts these bins, then exact exchange refinement
        moves the cuts over every cell (0 sweeps: the DP over every cell, exact).
    """
    cut = kmeans_segment if monge else segment
    if bins is None:
        return np.unique(cut(P, 2 ** bits)), 0
    cuts = bins[cut(P[:, bins], 2 ** bits)]
    sweeps = int(_exchange_refine_kernel(P, cuts, EXCHANGE_SWEEPS))
    return np.unique(cuts), sweeps


def segment(P: np.ndarray, k: int) -> np.ndarray:
    """Optimal cuts of the cells with prefix moments P into at most k runs (see kernel)."""
    P = np.ascontiguousarray(P, dtype=np.float64)
    return _segment_dp_kernel(P, int(k))


def segment_cost(P: np.ndarray, cuts: np.ndarray) -> float:
    """Total cost of the runs given by cuts (for tests and diagnostics)."""
    total = 0.0
    for a, b in zip(cuts[:-1], cuts[1:]):
        total += _cost(P[0], P[1], P[2], int(a), int(b))
    return total


@kernel
def _kmeans_dp_kernel(P, k):
    """Optimal cut of n value-sorted cells into at most k runs, O(k·n·log n).

    Weighted 1-D k-means: on cells sorted by value the run cost is Monge, so the best
    split point is monotone in the run end and divide and conquer is exact.
    Same contract as _segment_dp_kernel.
    """
    p0, p1, p2 = P[0], P[1], P[2]
    n = p0.size - 1
    prev = _first_layer(p0, p1, p2)          # one run [0, i)
    arg = np.zeros((k, n + 1), dtype=np.int32)
    cur = np.empty(n + 1)
    stack = np.empty((4 * (n + 2), 4), dtype=np.int64)
    for layer in range(1, k):
        # solve cur[i] for i in [lo, hi] knowing its argmin lies in [olo, ohi]
        top = 0
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = 0, n, 0, n
        top = 1
        while top > 0:
            top -= 1
            lo, hi, olo, ohi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            if lo > hi:
                continue
            mid = (lo + hi) // 2
            best = np.inf
            bs = olo
            for s in range(olo, min(mid, ohi) + 1):
                c = prev[s] + _cost(p0, p1, p2, s, mid)
                if c < best:
                    best = c
                    bs = s
            cur[mid] = best
            arg[layer, mid] = bs
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = lo, mid - 1, olo, bs
            stack[top + 1, 0], stack[top + 1, 1], stack[top + 1, 2], stack[top + 1, 3] = mid + 1, hi, bs, ohi
            top += 2
        prev, cur = cur, prev
    return _backtrack(arg, n)


def kmeans_segment(P: np.ndarray, k: int) -> np.ndarray:
    """Optimal cuts of value-sorted cells (prefix moments P) into at most k runs."""
    P = np.ascontiguousarray(P, dtype=np.float64)
    return _kmeans_dp_kernel(P, int(k))
