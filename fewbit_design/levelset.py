"""Level-set method (DP -> refinement step): the optimal 2^b-level quantizer of V = f'(X), X ~ w.

A code may cover several intervals of x. The optimum is a weighted 1-D k-means of the
derivative values: cells sorted by their mean f' are cut into runs by an exact Monge DP,
then thresholds t (midpoints of adjacent levels) are refined by Newton in value space,
where every threshold becomes all roots of f'(x) = t. The table's boundaries are those
roots in ascending order, and codes map each interval to its level.
"""

from __future__ import annotations

import numpy as np

from .candidate import Candidate, Steps, method_name
from .cells import DEFAULT_GRID, Cells, Grid, interval_moments, levels_of
from .dp import optimal_runs
from .refine import Refinement, refine_or_keep

EXACT_SAMPLES = 65536     # unique samples up to which the value-space DP runs on every value
METHODS = ("exact-monge-dp+newton (value space)", "exact-monge-dp over unique sample derivatives",
           "monge-dp over value bins + exact exchange refinement")


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


# -- the method ---------------------------------------------------------------------------------

def solve(cells: Cells, bits: int, *, bins: int = DEFAULT_GRID) -> Candidate:
    """The best table whose at most 2**bits codes may each cover several intervals.

    The exact Monge DP cuts the cells by mean f' into level sets; over a grid, Newton then
    refines the thresholds in value space (kept only if lower beyond rounding).
    bins : over samples, the DP runs on every unique value up to max(bins, EXACT_SAMPLES) of
        them; beyond, on EXACT_SAMPLES bins of them, followed by exact exchange refinement.
    """
    dp_bins = cells.dp_bins(max(bins, EXACT_SAMPLES), EXACT_SAMPLES)
    s, codes, levels, sweeps = dp_level_sets(cells, bits, dp_bins)
    scale = cells.df_scale
    best = _steps(cells, s, codes, levels, scale)
    refinement = {"sweeps": sweeps}
    if cells.continuous:
        s, codes, levels, ref = refine_levelset(cells, best.levels)
        refined = _steps(cells, s, codes, levels, scale)
        # refined only if lower beyond rounding: pieces_error is a sum of positive terms, each ~8 roundings
        # (f', w, square, weights) and a pairwise sum (log2 n): relative error < 64 eps for n < 2^40
        accepted = refined.mse <= best.mse - 64 * np.finfo(float).eps * best.mse
        best, refinement = (refined if accepted else best), ref.metadata(accepted, best.mse)
    return Candidate("levelset", *best, method_name(METHODS, cells, dp_bins), cells.describe(core=False),
                     refinement)


def dp_level_sets(cells: Cells, bits: int, dp_bins: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The DP's level sets, before merging and refinement: boundaries, the code of each interval,
    the level of each code (the mean f' of its cells; 0 without weight), and the exchange sweeps.

    Run j of the cells by value is code j; weightless cells join their left neighbour's code.
    """
    order, P = cells.by_value()
    cuts, sweeps = optimal_runs(P, bits, monge=True, bins=dp_bins)
    group = np.full(cells.size, -1, dtype=np.int64)
    for g, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        group[order[a:b]] = g
    live = np.flatnonzero(group >= 0)
    for c in np.flatnonzero(group < 0):
        group[c] = group[c - 1] if c > 0 else group[live[0]]
    change = np.flatnonzero(group[1:] != group[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        levels = np.diff(P[1, cuts]) / np.diff(P[0, cuts])
    levels = np.where(np.isfinite(levels), levels, 0.0)
    return cells.edge_points(change + 1), group[np.concatenate([[0], change + 1])], levels, sweeps


def _steps(cells: Cells, s, codes, levels, scale: float) -> Steps:
    """The table with codes renumbered by level and those whose levels agree to 1e-13·scale merged
    (a value split among codes by rounding), its levels settled by the cells."""
    s, codes, levels = merge_equal_codes(s, codes, cells.levels_for(s, codes, levels), scale)
    return Steps(s, codes, *cells.settle(s, codes, levels))


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

