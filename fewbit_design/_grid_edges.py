"""Cells step, the grid's layout: where a grid's cell edges go (asinh spacing, tails, extrema of f')."""

from __future__ import annotations

import math

import numpy as np

TAIL_DT = 0.05        # spacing of tail cells in t, x = a·sinh(t) (geometric far out)


def tail_edges(start: float, end: float, c: float = 0.0, a: float = 1.0) -> np.ndarray:
    """Edges from start outward to end, spaced TAIL_DT in t = asinh((x - c) / a)."""
    if end == start:
        return np.empty(0)
    if (c, a) == (0.0, 1.0):
        ts, te = np.arcsinh(start), np.arcsinh(end)
        k = max(1, int(np.ceil(abs(te - ts) / TAIL_DT)))
        e = np.sinh(np.linspace(ts, te, k + 1))
    else:
        ts, te = t_of(start, c, a), t_of(end, c, a)
        k = max(1, int(np.ceil(abs(te - ts) / TAIL_DT)))
        e = x_of(np.linspace(ts, te, k + 1), c, a)
    e[-1] = end
    return e


def t_of(x: float, c: float, a: float) -> float:
    """asinh((x - c) / a), also where (x - c) / a overflows (there it is log(2|x - c| / a))."""
    d = x - c
    if abs(d) <= 1e300 * a:
        return float(np.arcsinh(d / a))
    return math.copysign(math.log(2.0) + math.log(abs(d)) - math.log(a), d)


def x_of(t: np.ndarray, c: float, a: float) -> np.ndarray:
    """c + a·sinh(t), also where sinh(t) overflows and a is small."""
    big = np.abs(t) > 700.0
    with np.errstate(over="ignore"):
        small = c + a * np.sinh(np.where(big, 0.0, t))
        large = c + np.sign(t) * np.exp(np.abs(t) + math.log(a) - math.log(2.0))
    return np.where(big, large, small)


def extrema(df, edges: np.ndarray, c: float = 0.0, unit: float = 1.0) -> np.ndarray:
    """Interior local extrema of f', located by golden-section search."""
    fe = df(edges)
    d = np.sign(np.diff(fe))
    i = np.flatnonzero((d[:-1] * d[1:]) < 0) + 1            # edges[i] is near an extremum
    if i.size == 0:
        return i.astype(np.float64)
    sign = d[i - 1]                                          # +1: maximum, -1: minimum
    a, b = edges[i - 1].copy(), edges[i + 1].copy()
    r = 0.5 * (np.sqrt(5.0) - 1.0)
    m = a.size
    for _ in range(40):     # bracket shrinks to 4e-9 of a cell: f' is monotone beyond 1e-20
        c, e = b - r * (b - a), a + r * (b - a)
        fc_fe = sign * df(np.concatenate([c, e])).reshape(2, m)
        left = fc_fe[0] > fc_fe[1]
        a, b = np.where(left, a, c), np.where(left, e, b)
    x = 0.5 * (a + b)
    ok = (x > edges[i - 1]) & (x < edges[i + 1]) & (np.abs(x - edges[i]) > 1e-12 * np.maximum(min(unit, 1.0), np.abs(x - c)))
    return x[ok]


def merge_close(edges: np.ndarray, tol: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Drop edges closer than tol to their left neighbour, never dropping `keep`."""
    close = np.concatenate([[False], np.diff(edges) < tol[1:]])
    close &= ~np.isin(edges, keep)
    return edges[~close]


SLIVER = 1e-6      # a core cell narrower than this times a neighbour is a sliver


def cuttable(e: np.ndarray, kinks) -> np.ndarray:
    """Mask of the core edges e where the DP may cut: all but one end of each sliver cell.

    Merging near edges leaves sliver cells beside a kink or jump (selu at 512 cells:
    [-2.8e-11, 0], an edge of the asinh spacing that misses 0 by rounding). A cut there makes
    a run with almost no weight: free for the DP when it has a level to spare, and a start
    Newton cannot grow (a run's level moves by density/mass per unit of its boundary, so the
    Jacobian is near singular: selu at 8 bits crept for 60 iterations, max|G| 4.6e-3). The end
    of a sliver that is neither a kink nor the core's end goes; the cells' moments stay.
    """
    w = np.diff(e)
    fixed = np.isin(e, np.asarray(kinks, dtype=np.float64))
    fixed[[0, -1]] = True
    wide = np.maximum(np.concatenate([w[1:], [0.0]]), np.concatenate([[0.0], w[:-1]]))
    keep = np.ones(e.size, dtype=bool)
    for i in np.flatnonzero(w < SLIVER * wide):                # cell i spans e[i] .. e[i + 1]
        end = i + 1 if fixed[i] else i
        keep[end] = fixed[end]
    return keep
