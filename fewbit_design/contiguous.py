"""Contiguous method (DP -> refinement step): 2^b intervals of x, code = interval index.

The paper's form. Over a parametric weight: an exact segmentation DP over the grid's core
cells (dp.segment), then Newton refinement of the boundaries to the optimality condition
f'(s) = (y_left + y_right) / 2 (refine.py, with ContiguousProblem). Over samples: the DP over
the unique values, or over bins of them followed by exact exchange refinement.
"""

from __future__ import annotations

import numpy as np

from .candidate import Candidate, Steps, method_name
from .cells import DEFAULT_GRID, Cells, interval_moments
from .dp import optimal_runs
from .refine import refine_or_keep

DP_BUDGET = 4e8          # k·n²/2 inner steps we allow for an exact DP over samples
METHODS = ("exact-dp+newton", "exact-dp over unique samples", "dp over sample bins + exact exchange refinement")


class ContiguousProblem:
    """Boundaries in x: runs are intervals, g = f', density = w."""

    def __init__(self, grid):
        self.grid = grid
        e = grid.core_edges
        self.bounds = (e[0], e[-1])
        self.scale = max(1.0, float(np.max(np.abs(grid.act.df(e)))))

    def moments(self, s):
        return interval_moments(self.grid, s)

    def evaluate(self, s, S):
        act = self.grid.act
        d = act.df(s)
        h = self.grid.step(s)
        slope = (act.df(s + h) - act.df(s - h)) / (2 * h)
        dens = self.grid.dist.pdf(s)
        fixed = (dens <= 0) | at_jump(act, s)
        return d, slope, dens, fixed


def solve(cells: Cells, bits: int, *, bins: int = DEFAULT_GRID) -> Candidate:
    """The best table of at most 2**bits intervals, code = interval index.

    bins : over samples, the exact DP runs on up to max(bins, sqrt(2·DP_BUDGET / 2**bits)) unique
        values; beyond, on `bins` bins of them, followed by exact exchange refinement.
    """
    dp_bins = cells.dp_bins(max(bins, int(np.sqrt(2 * DP_BUDGET / 2 ** bits))), bins)
    cuts, sweeps = optimal_runs(cells.prefix(), bits, bins=dp_bins)
    best = _steps(cells, cells.cut_points(cuts[1:-1]))
    refinement = {"sweeps": sweeps}
    if cells.continuous:       # Newton on the boundaries, kept where it does not raise the error
        ref = refine_or_keep(ContiguousProblem(cells), best.boundaries)
        refined = _steps(cells, ref.points)
        accepted = refined.mse <= best.mse
        best, refinement = (refined if accepted else best), ref.metadata(accepted, best.mse)
    return Candidate("contiguous", *best, method_name(METHODS, cells, dp_bins), cells.describe(core=True),
                     refinement)


def _steps(cells: Cells, s: np.ndarray) -> Steps:
    """The table cut at s, boundaries between equal levels (or without weight) removed."""
    s = cells.merge_equal_levels(s)
    codes = np.arange(s.size + 1)
    return Steps(s, codes, *cells.settle(s, codes))


def at_jump(act, s: np.ndarray) -> np.ndarray:
    """Mask of the points that sit on a jump of f'."""
    if not act.jumps:
        return np.zeros(np.shape(s), dtype=bool)
    j = np.asarray(act.jumps, dtype=np.float64)
    return np.any(np.abs(s[:, None] - j[None, :]) <= 1e-12 * np.maximum(1.0, np.abs(j)), axis=1)
