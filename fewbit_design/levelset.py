"""Level-set method (DP -> refinement step): the optimal 2^b-level quantizer of V = f'(X), X ~ w.

A code may cover several intervals of x. The optimum is a weighted 1-D k-means of the
derivative values: cells sorted by their mean f' are cut into runs by an exact Monge DP,
then thresholds t (midpoints of adjacent levels) are refined by Newton in value space,
where every threshold becomes all roots of f'(x) = t. The table's boundaries are those
roots in ascending order, and codes map each interval to its level.
"""

from __future__ import annotations

import numpy as np

from .contiguous import Candidate
from .cells import (GL_ORDER, Grid, SampleCells, interval_moments, levels_of, pieces_error,
                    sample_levels_error, snap_constant_levels)
from .dp import _exchange_refine_kernel, kmeans_segment
from .refine import Refinement, refine_or_keep

EXACT_SAMPLES = 65536     # unique samples up to which the value-space DP runs on every value


class LevelSetProblem:
    """Thresholds in value space: runs are level sets {t_j <= f'(x) < t_j+1}, g(t) = t."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.fe = grid.act.df(grid.edges)          # f' at every cell edge, for bracketing
        lo, hi = float(self.fe.min()), float(self.fe.max())
        self.scale = max(1.0, abs(lo), abs(hi))
        self.bounds = (lo - self.scale, hi + self.scale)
        self._last = (None, None, None)

    def roots(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (j, x) with f'(x) = t_j: threshold j crosses the monotone cell holding x."""
        key = t.tobytes()
        if key != self._last[0]:
            e, fe = self.grid.edges, self.fe
            above = fe[None, :] > t[:, None]                       # (k-1, N+1)
            j, i = np.nonzero(above[:, 1:] != above[:, :-1])       # threshold j crosses cell i
            x = _root(self.grid.act.df, t[j], e[i], e[i + 1], fe[i], fe[i + 1])
            for jump in self.grid.act.jumps:       # a level crossed by a jump sits on it exactly
                x[np.abs(x - jump) <= 1e-12 * max(1.0, abs(jump))] = jump
            self._last = (key, j, x)
        return self._last[1], self._last[2]

    def partition(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boundaries (ascending roots of f' = t_j over all j) and the code of each interval."""
        e = self.grid.edges
        roots = np.unique(self.roots(t)[1])
        ends = np.concatenate([[e[0]], roots, [e[-1]]])
        codes = np.searchsorted(t, self.grid.act.df(0.5 * (ends[:-1] + ends[1:])), side="right")
        keep = np.concatenate([[True], codes[1:] != codes[:-1]])
        return roots[keep[1:]], codes[keep]

    def moments(self, t: np.ndarray) -> np.ndarray:
        """(3, len(t)+1) moments ∫ w f'^p over each level set."""
        s, codes = self.partition(t)
        S = interval_moments(self.grid, s)
        return np.stack([np.bincount(codes, weights=S[p], minlength=t.size + 1) for p in range(3)])

    def evaluate(self, t: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """g = t, slope 1, density of V at t: Σ over the roots x of f'(x) = t of w(x)/|f''(x)|."""
        act, dist = self.grid.act, self.grid.dist
        j, x = self.roots(t)
        h = self.grid.step(x)
        fpp = np.abs(act.df(x + h) - act.df(x - h)) / (2 * h)
        crossing = np.abs(act.df(x) - t[j]) <= 1e-9 * self.scale    # not a jump of f' over t
        with np.errstate(divide="ignore", invalid="ignore"):
            contrib = np.where(crossing & (fpp > 0), dist.pdf(x) / fpp, 0.0)
        dens = np.bincount(j, weights=contrib, minlength=t.size)
        return t, np.ones_like(t), dens, ~(dens > 0)


def design_levelset_grid(grid: Grid, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact level-set optimum over unions of grid cells: (boundaries, codes, levels)."""
    m = np.diff(grid.cum, axis=1)                              # (3, N) per-cell moments
    live = np.flatnonzero(m[0] > 0)
    v = m[1, live] / m[0, live]
    order = live[np.argsort(v, kind="stable")]
    P = np.zeros((3, order.size + 1))
    np.cumsum(m[:, order], axis=1, out=P[:, 1:])
    cuts = np.unique(kmeans_segment(P, k))
    group = np.zeros(m.shape[1], dtype=np.int64)
    for g, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        group[order[a:b]] = g
    # weightless cells join their left neighbour's group
    dead = np.ones(m.shape[1], dtype=bool)
    dead[live] = False
    for c in np.flatnonzero(dead):
        group[c] = group[c - 1] if c > 0 else group[live[0]]
    with np.errstate(invalid="ignore", divide="ignore"):     # a run without weight: level 0
        levels = np.diff(P[1, cuts]) / np.diff(P[0, cuts])
    levels = np.where(np.isfinite(levels), levels, 0.0)
    change = np.flatnonzero(group[1:] != group[:-1])
    return grid.edges[change + 1], group[np.concatenate([[0], change + 1])], levels


def refine_levelset(grid: Grid, levels: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Refinement]:
    """Newton in value space from `levels`; returns (boundaries, codes, levels, refinement)."""
    problem = LevelSetProblem(grid)
    y = np.unique(levels)
    ref = refine_or_keep(problem, 0.5 * (y[:-1] + y[1:]))
    s, codes = problem.partition(ref.points)
    y = levels_of(problem.moments(ref.points))
    codes, used = compact_codes(codes)                         # drop empty level sets
    return s, codes, y[used], ref


def compact_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber codes 0, 1, ... in order, dropping unused ones: (new codes, used old codes)."""
    used = np.unique(codes)
    remap = np.full(int(used[-1]) + 1, -1)
    remap[used] = np.arange(used.size)
    return remap[codes], used


def design_levelset_samples(d: np.ndarray, weight: np.ndarray, k: int, n: int) -> tuple[np.ndarray, int]:
    """Value-space k-means over unique samples (derivatives d, weights): codes per sample."""
    order = np.argsort(d, kind="stable")
    P = np.zeros((3, d.size + 1))
    wd = weight[order] * d[order]
    np.cumsum(np.stack([weight[order], wd, wd * d[order]]), axis=1, out=P[:, 1:])
    if d.size <= max(n, EXACT_SAMPLES):
        cuts, sweeps = kmeans_segment(P, k), 0
    else:
        bins = np.unique(np.linspace(0, d.size, EXACT_SAMPLES + 1).round().astype(np.int64))
        cuts = bins[kmeans_segment(P[:, bins], k)]
        sweeps = int(_exchange_refine_kernel(P, cuts, 10_000))
    cuts = np.unique(cuts)
    code = np.empty(d.size, dtype=np.int64)
    for g, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        code[order[a:b]] = g
    return code, sweeps


def _root(df, t: np.ndarray, a: np.ndarray, b: np.ndarray, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """x in [a, b] with df(x) = t to rounding, where df - t changes sign (fa = df(a), fb = df(b)).

    Vectorised Illinois method: regula falsi on the bracket, halving the weight of an end kept
    twice in a row so that neither end stalls, and bisection wherever the secant leaves the
    bracket. Once a step lands next to the root (|df - t| below 1e-9 of the start), the next
    probes once just past it, twice the estimated distance, to close the bracket from the
    other side too: about 5 steps where bisection takes 50. Done at a bracket of 4 ulp, at an
    x with df(x) == t exactly, or once df - t at both ends is within df's own rounding
    (4e-16 |t|), where no x in between can be told apart.
    """
    a, b = a.copy(), b.copy()
    ya, yb = fa - t, fb - t                    # the sign of a float difference is exact
    wa, wb = ya.copy(), yb.copy()              # Illinois weights: ya, yb, halved when kept
    a_above = ya > 0
    eps = 2e-16 * np.maximum(np.abs(a), np.abs(b)) + 1e-300          # half the final width
    kept = np.zeros(a.shape, dtype=np.int8)    # +1: a was kept last step, -1: b was
    close = 1e-9 * np.maximum(np.abs(ya), np.abs(yb))
    probed = np.zeros(a.shape, dtype=bool)
    for _ in range(100):
        open_ = ((b - a) > 2 * eps) & (np.maximum(np.abs(ya), np.abs(yb)) > 4e-16 * np.abs(t))
        if not open_.any():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            x = (wb * a - wa * b) / (wb - wa)
            slope = np.abs((yb - ya) / (b - a))
        x = np.where((x > a) & (x < b), x, 0.5 * (a + b))
        # after landing next to the root at one end, probe just past it from that end
        near_a = ~probed & (kept == -1) & (np.abs(ya) <= close)
        near_b = ~probed & (kept == 1) & (np.abs(yb) <= close)
        step = np.maximum(2 * eps, 2 * np.where(near_a, np.abs(ya), np.abs(yb)) / slope)
        x = np.where(near_a & (a + step < b), a + step, np.where(near_b & (b - step > a), b - step, x))
        probed |= near_a | near_b            # once: a probe that falls short leaves it to Illinois
        y = df(x) - t
        hit = open_ & (y == 0.0)
        new_a = ((y > 0) == a_above) & open_ & ~hit       # x replaces a, b is kept
        new_b = open_ & ~new_a & ~hit
        wb = np.where(new_a, np.where(kept == -1, 0.5 * wb, yb), wb)
        wa = np.where(new_b, np.where(kept == 1, 0.5 * wa, ya), wa)
        kept = np.where(new_a, -1, np.where(new_b, 1, kept)).astype(np.int8)
        a, ya, wa = np.where(new_a | hit, x, a), np.where(new_a, y, ya), np.where(new_a, y, wa)
        b, yb, wb = np.where(new_b | hit, x, b), np.where(new_b, y, yb), np.where(new_b, y, wb)
    return 0.5 * (a + b)


# -- the method's candidates ------------------------------------------------------------

def levelset_candidate(grid: Grid, k: int, contiguous: Candidate | None) -> Candidate:
    act, dist = grid.act, grid.dist
    scale = max(1.0, float(np.max(np.abs(act.df(grid.edges)))))
    s0, c0, y0 = merge_equal_codes(*design_levelset_grid(grid, k), scale)
    y0 = snap_constant_levels(grid, s0, c0, y0)
    e0 = pieces_error(act, dist, grid.edges, s0, y0[c0])
    s1, c1, y1, ref = refine_levelset(grid, y0)
    s1, c1, y1 = merge_equal_codes(s1, c1, y1, scale)
    y1 = snap_constant_levels(grid, s1, c1, y1)
    e1 = pieces_error(act, dist, grid.edges, s1, y1[c1])
    # refined only if lower beyond rounding: pieces_error is a sum of positive terms, each ~8 roundings
    # (f', w, square, weights) and a pairwise sum (log2 n): relative error < 64 eps for n < 2^40
    accepted = e1 <= e0 - 64 * np.finfo(float).eps * e0
    solver = {
        "method": "exact-monge-dp+newton (value space)",
        "grid": int(grid.edges.size - 1),
        "range": [float(grid.edges[0]), float(grid.edges[-1])],
        "quadrature": f"gauss-legendre-{GL_ORDER} per cell",
        "refinement": ref.metadata(accepted, e0),
    }
    best = (e1, s1, c1, y1) if accepted else (e0, s0, c0, y0)
    if contiguous is not None and contiguous.mse < best[0]:   # contiguous tables are level-set tables too
        solver["refinement"]["contiguous_was_better"] = True
        return Candidate("levelset", contiguous.boundaries, contiguous.codes, contiguous.levels,
                          contiguous.mse, {**contiguous.solver, **{"refinement": solver["refinement"]}})
    return Candidate("levelset", best[1], best[2], best[3], best[0], solver)


def levelset_samples_candidate(act, dist, cells: SampleCells, k: int, n: int) -> Candidate:
    code, sweeps = design_levelset_samples(cells.d, cells.weight, k, n)
    change = np.flatnonzero(code[1:] != code[:-1])
    s = cells.split_points()[change]
    codes, _ = compact_codes(code[np.concatenate([[0], change + 1])])
    levels, mse = sample_levels_error(cells, s, codes)
    scale = max(1.0, float(np.max(np.abs(levels))))
    if np.any(np.diff(np.sort(levels)) <= 1e-13 * scale):     # a value split among codes by rounding
        s, codes, _ = merge_equal_codes(s, codes, levels, scale)
        levels, mse = sample_levels_error(cells, s, codes)
    solver = {"method": "exact-monge-dp over unique sample derivatives" if sweeps == 0 else
              "monge-dp over value bins + exact exchange refinement",
              "unique_samples": int(cells.values.size),
              "range": [float(cells.values[0]), float(cells.values[-1])],
              "refinement": {"sweeps": sweeps}}
    return Candidate("levelset", s, codes, levels, mse, solver)


def merge_equal_codes(s: np.ndarray, codes: np.ndarray, levels: np.ndarray, scale: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give codes whose levels agree to 1e-13·scale one code; drop boundaries inside a code.

    When f' takes fewer values than there are levels, the DP splits a value among codes
    at no cost; merging keeps the table as simple as the function.
    """
    order = np.argsort(levels, kind="stable")
    new_of_sorted = np.concatenate([[0], np.cumsum(np.diff(levels[order]) > 1e-13 * scale)])
    remap = np.empty(levels.size, dtype=np.int64)
    remap[order] = new_of_sorted
    merged = np.zeros(int(new_of_sorted[-1]) + 1)
    merged[new_of_sorted] = levels[order]          # one representative per merged code
    c = remap[codes]
    keep = c[1:] != c[:-1]
    return s[keep], c[np.concatenate([[True], keep])], merged

