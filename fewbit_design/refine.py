"""Continuous refinement of contiguous boundaries to the optimality condition.

At an optimal boundary s with w(s) > 0 and f' continuous at s:
    G(s) = f'(s) - (y_left + y_right) / 2 = 0,   y = ∫w f' / ∫w over each interval.
Newton's method on G with the exact tridiagonal Jacobian, a backtracking line search on
max|G|, started from the grid optimum (already within one cell of a continuous optimum).
Boundaries with zero weight, at a jump of f', or next to an empty interval stay fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ITER = 60
TOL = 1e-14


@dataclass
class Refinement:
    boundaries: np.ndarray
    iterations: int
    residual: float      # max |G| over the free boundaries at the end
    free: int            # how many boundaries were free


def interval_levels(grid, s: np.ndarray):
    """Moments (3, m) of the m = len(s)+1 intervals cut at s, and their levels y (m,)."""
    a = np.concatenate([[-np.inf], s])
    b = np.concatenate([s, [np.inf]])
    S = grid.interval_moments(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(S[0] > 0, S[1] / S[0], 0.0)
    return S, y


def residuals(grid, s: np.ndarray):
    """G at every boundary, and the mask of boundaries where G = 0 must hold."""
    S, y = interval_levels(grid, s)
    d = grid.act.df(s)
    G = d - 0.5 * (y[:-1] + y[1:])
    free = (grid.dist.pdf(s) > 0) & (S[0, :-1] > 0) & (S[0, 1:] > 0) & ~_at_jump(grid.act, s)
    return G, free, S, y, d


def refine_boundaries(grid, s0: np.ndarray, *, max_iter: int = MAX_ITER) -> Refinement:
    """Newton-refine boundaries s0 (ascending) inside the grid's core range."""
    s = np.array(s0, dtype=np.float64)
    if s.size == 0:
        return Refinement(s, 0, 0.0, 0)
    lo, hi = grid.core_edges[0], grid.core_edges[-1]
    scale = max(1.0, float(np.max(np.abs(grid.act.df(grid.core_edges)))))
    G, free, S, y, d = residuals(grid, s)
    res = _maxabs(G, free)
    it = 0
    for it in range(1, max_iter + 1):
        if res <= TOL * scale or not free.any():
            break
        step = _newton_step(grid, s, G, free, S, y, d)
        if step is None:
            break
        alpha, accepted = 1.0, False
        while alpha > 1e-12:
            t = s + alpha * step
            if np.all(np.diff(t) > 0) and t[0] > lo and t[-1] < hi:
                Gt, ft, St, yt, dt = residuals(grid, t)
                rt = _maxabs(Gt, ft)
                if rt < res:
                    s, G, free, S, y, d, res = t, Gt, ft, St, yt, dt, rt
                    accepted = True
                    break
            alpha *= 0.5
        if not accepted:
            break
    return Refinement(s, it, res, int(free.sum()))


def _newton_step(grid, s, G, free, S, y, d):
    """Solve J·Δ = -G on the free boundaries (J tridiagonal, written densely: k ≤ 255)."""
    act, dist = grid.act, grid.dist
    w = dist.pdf(s)
    h = 1e-6 * np.maximum(1.0, np.abs(s))
    fpp = (act.df(s + h) - act.df(s - h)) / (2 * h)
    S0 = S[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        # d y_i / d s_i (s_i is the right end of interval i) and d y_{i+1} / d s_i (left end).
        dy_left = np.where(S0[:-1] > 0, w * (d - y[:-1]) / S0[:-1], 0.0)
        dy_right = np.where(S0[1:] > 0, -w * (d - y[1:]) / S0[1:], 0.0)
    k = s.size
    J = np.zeros((k, k))
    idx = np.arange(k)
    J[idx, idx] = fpp - 0.5 * (dy_left + dy_right)
    J[idx[1:], idx[:-1]] = -0.5 * dy_right[:-1]   # G_i depends on s_{i-1} through y_i
    J[idx[:-1], idx[1:]] = -0.5 * dy_left[1:]     # G_i depends on s_{i+1} through y_{i+1}
    f = np.flatnonzero(free)
    step = np.zeros(k)
    try:
        step[f] = np.linalg.solve(J[np.ix_(f, f)], -G[f])
    except np.linalg.LinAlgError:
        return None
    return step if np.all(np.isfinite(step)) else None


def _at_jump(act, s: np.ndarray) -> np.ndarray:
    if not act.jumps:
        return np.zeros(s.shape, dtype=bool)
    j = np.asarray(act.jumps, dtype=np.float64)
    return np.any(np.abs(s[:, None] - j[None, :]) <= 1e-12 * np.maximum(1.0, np.abs(j)), axis=1)


def _maxabs(G, mask) -> float:
    return float(np.max(np.abs(G[mask]))) if mask.any() else 0.0
