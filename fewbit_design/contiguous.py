"""Contiguous method (DP -> refinement step): 2^b intervals of x, code = interval index.

The paper's form. Over a parametric weight: an exact segmentation DP over the grid's core
cells (dp.segment), then Newton refinement of the boundaries to the optimality condition
f'(s) = (y_left + y_right) / 2 (refine.py, with ContiguousProblem). Over samples: the DP over
the unique values, or over bins of them followed by exact exchange refinement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cells import (GL_ORDER, Grid, SampleCells, bin_edges, interval_moments, levels_of, sample_levels_error,
                    segments_error)
from .dp import _exchange_refine_kernel, segment
from .refine import refine_or_keep

DP_BUDGET = 4e8          # k·n²/2 inner steps we allow for an exact DP over samples


@dataclass
class Candidate:
    """One method's table before it becomes a Table: the partition, its arrays, mse, solver notes."""

    partition: str
    boundaries: np.ndarray
    codes: np.ndarray
    levels: np.ndarray
    mse: float
    solver: dict


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


def contiguous_candidate(grid: Grid, k: int) -> Candidate:
    edges = grid.core_edges
    cuts = np.unique(segment(grid.core_prefix(), k))          # drop empty runs
    s_grid = merge_equal_levels(grid, edges[cuts[1:-1]])
    y_grid, e_grid = segments_error(grid, s_grid)
    ref = refine_or_keep(ContiguousProblem(grid), s_grid)
    s_ref = merge_equal_levels(grid, ref.points)
    y_ref, e_ref = segments_error(grid, s_ref)
    accepted = e_ref <= e_grid
    solver = {
        "method": "exact-dp+newton",
        "grid": int(edges.size - 1),
        "range": [float(edges[0]), float(edges[-1])],
        "quadrature": f"gauss-legendre-{GL_ORDER} per cell",
        "refinement": ref.metadata(accepted, e_grid),
    }
    s, y, e = (s_ref, y_ref, e_ref) if accepted else (s_grid, y_grid, e_grid)
    return Candidate("contiguous", s, np.arange(s.size + 1), y, e, solver)


def contiguous_samples_candidate(act, dist, cells: SampleCells, k: int, n: int) -> Candidate:
    P = cells.prefix()
    N = cells.values.size
    exact_n = int(np.sqrt(2 * DP_BUDGET / k))
    if N <= max(n, exact_n):
        cuts = segment(P, k)
        method, sweeps = "exact-dp over unique samples", 0
    else:
        bins = bin_edges(N, n)
        cuts = bins[segment(P[:, bins], k)]
        sweeps = int(_exchange_refine_kernel(P, cuts, 10_000))
        method = "dp over sample bins + exact exchange refinement"
    cuts = np.unique(cuts)
    s = cells.split_points()[cuts[1:-1] - 1]
    levels, mse = sample_levels_error(cells, s, np.arange(s.size + 1))
    same = np.abs(np.diff(levels)) <= 1e-13 * max(1.0, float(np.max(np.abs(levels))))
    if same.any():       # rounding in the prefix sums splits a constant f' "for free": undo it
        s = s[~same]
        levels, mse = sample_levels_error(cells, s, np.arange(s.size + 1))
    solver = {"method": method, "unique_samples": int(N),
              "range": [float(cells.values[0]), float(cells.values[-1])],
              "refinement": {"sweeps": sweeps}}
    return Candidate("contiguous", s, np.arange(s.size + 1), levels, mse, solver)


def merge_equal_levels(grid: Grid, s: np.ndarray) -> np.ndarray:
    """Remove boundaries between intervals with equal levels or without weight."""
    while s.size:
        S = interval_moments(grid, s)
        y = levels_of(S)
        scale = max(1.0, float(np.max(np.abs(y))))
        same = (np.abs(np.diff(y)) <= 1e-13 * scale) | (S[0, :-1] <= 0) | (S[0, 1:] <= 0)
        if not same.any():
            break
        s = np.delete(s, np.flatnonzero(same)[0])
    return s


def at_jump(act, s: np.ndarray) -> np.ndarray:
    """Mask of the points that sit on a jump of f'."""
    if not act.jumps:
        return np.zeros(np.shape(s), dtype=bool)
    j = np.asarray(act.jumps, dtype=np.float64)
    return np.any(np.abs(s[:, None] - j[None, :]) <= 1e-12 * np.maximum(1.0, np.abs(j)), axis=1)
