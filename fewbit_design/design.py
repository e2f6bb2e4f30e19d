"""design(): activation + distribution -> cells -> DP -> refinement -> Table."""

from __future__ import annotations

import time

import numpy as np

from . import __version__
from .activations import get_activation
from .discretize import GL_ORDER, _GL_W, _GL_X, bin_edges, make_grid, make_sample_cells
from .distributions import Samples, parse_distribution
from .dp import _exchange_refine_kernel, segment
from .errors import FewbitError
from .refine import interval_levels, refine_boundaries
from .table import PARTITIONS, Table

DEFAULT_GRID = 1024
DP_BUDGET = 4e8          # k·n²/2 inner steps we allow for an exact DP over samples
PARTITION_CHOICES = (*PARTITIONS, "auto")


def design(activation, bits: int, *, distribution="normal:0,1", params=None,
           partition: str = "contiguous", grid: int | None = None) -> Table:
    """Design the optimal b-bit table for f' under the input weight `distribution`.

    Parameters
    ----------
    activation : registry name (see ``fewbit-design list``), "module:function[:derivative]",
        or an Activation.
    bits : 1..8; the table has at most 2**bits levels.
    distribution : a spec string ("normal:0,1", "uniform:-10,10", "t:3", "samples:acts.npy"),
        a Distribution, or Samples.
    params : activation parameters, e.g. {"alpha": 0.2}.
    partition : "contiguous" (one interval per code).
    grid : number of core cells for the DP (default 1024).

    Returns
    -------
    Table with boundaries, codes, levels, the error (mse and relative) and solver metadata.
    """
    t0 = time.perf_counter()
    act = get_activation(activation, params) if isinstance(activation, str) else activation
    dist = parse_distribution(distribution) if isinstance(distribution, str) else distribution
    bits = _check_bits(bits)
    if partition not in PARTITION_CHOICES:
        raise FewbitError(f"unknown partition {partition!r}; choose one of {', '.join(PARTITION_CHOICES)}")
    n = DEFAULT_GRID if grid is None else int(grid)
    if not 16 <= n <= 1 << 20:
        raise FewbitError(f"grid must be in 16..1048576, got {grid}")
    k = 2 ** bits
    if isinstance(dist, Samples):
        s, solver = _contiguous_samples(act, dist, k, n)
        levels, mse, denom = _sample_levels_error(act, dist.values, s)
    else:
        s, levels, mse, denom, solver = _contiguous_parametric(act, dist, k, n)
    solver.update(version=__version__, seconds=round(time.perf_counter() - t0, 6))
    return Table(activation=act.name, params=dict(act.params), bits=bits,
                 distribution=dist.name, dist_params=dict(dist.params), partition="contiguous",
                 boundaries=s, codes=np.arange(s.size + 1), levels=levels,
                 mse=mse, relative_error=mse / denom if denom > 0 else 0.0, solver=solver)


def evaluate(table: Table, *, grid: int | None = None) -> tuple[float, float]:
    """Recompute (mse, relative error) of any table under the distribution it names."""
    act = get_activation(table.activation, table.params)
    return _quadrature_error(act, distribution_of(table), table, grid)


def distribution_of(table: Table):
    """Rebuild the Distribution (or Samples) a table names."""
    p = table.dist_params
    if table.distribution == "samples":
        if "path" not in p:
            raise FewbitError("table's samples distribution has no 'path' parameter")
        return parse_distribution(f"samples:{p['path']}")
    return parse_distribution(f"{table.distribution}:{','.join(repr(float(v)) for v in p.values())}"
                              if p else table.distribution)


# -- contiguous -------------------------------------------------------------------------

def _contiguous_parametric(act, dist, k, n):
    grid = make_grid(act, dist, n)
    edges = grid.core_edges
    cuts = np.unique(segment(grid.core_prefix(), k))          # drop empty runs
    s_grid = _merge_equal_levels(grid, edges[cuts[1:-1]])
    y_grid, e_grid = _segments_error(grid, s_grid)
    ref = refine_boundaries(grid, s_grid)
    s_ref = _merge_equal_levels(grid, ref.boundaries)
    y_ref, e_ref = _segments_error(grid, s_ref)
    accepted = e_ref <= e_grid
    solver = {
        "method": "exact-dp+newton",
        "grid": int(edges.size - 1),
        "range": [float(edges[0]), float(edges[-1])],
        "quadrature": f"gauss-legendre-{GL_ORDER} per cell",
        "refinement": {"accepted": bool(accepted), "iterations": ref.iterations,
                       "residual": ref.residual, "free_boundaries": ref.free,
                       "grid_mse": float(e_grid)},
    }
    if accepted:
        return s_ref, y_ref, e_ref, float(grid.total[2]), solver
    return s_grid, y_grid, e_grid, float(grid.total[2]), solver


def _contiguous_samples(act, dist, k, n):
    cells = make_sample_cells(act, dist.values)
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
    solver = {"method": method, "grid": int(min(N, n) if N > max(n, exact_n) else N),
              "range": [float(cells.values[0]), float(cells.values[-1])],
              "refinement": {"sweeps": sweeps}}
    return s, solver


def _merge_equal_levels(grid, s):
    """Remove boundaries between intervals with equal levels or without weight."""
    while s.size:
        S, y = interval_levels(grid, s)
        scale = max(1.0, float(np.max(np.abs(y))))
        same = (np.abs(np.diff(y)) <= 1e-13 * scale) | (S[0, :-1] <= 0) | (S[0, 1:] <= 0)
        if not same.any():
            break
        s = np.delete(s, np.flatnonzero(same)[0])
    return s


# -- errors -----------------------------------------------------------------------------

def _segments_error(grid, s):
    """Levels (conditional means) of the intervals cut at s, and the exact error."""
    _, y = interval_levels(grid, s)
    return y, _pieces_error(grid.act, grid.dist, grid.edges, s, y)


def _pieces_error(act, dist, edges, s, q_by_interval):
    """∫ w (f' - q)² over the union of cell edges and boundaries, Gauss–Legendre per piece."""
    inner = s[(s > edges[0]) & (s < edges[-1])]
    pts = np.union1d(edges, inner)
    a, b = pts[:-1], pts[1:]
    q = q_by_interval[np.searchsorted(s, 0.5 * (a + b), side="right")]
    half = 0.5 * (b - a)
    x = (0.5 * (a + b))[:, None] + half[:, None] * _GL_X
    r = act.df(x) - q[:, None]
    return float(np.sum(dist.pdf(x) * r * r * (half[:, None] * _GL_W)))


def _sample_levels_error(act, values, s):
    d = act.df(values)
    idx = np.searchsorted(s, values, side="right")
    m = s.size + 1
    cnt = np.bincount(idx, minlength=m).astype(np.float64)
    sm = np.bincount(idx, weights=d, minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(cnt > 0, sm / np.maximum(cnt, 1), 0.0)
    r = d - y[idx]
    return y, float(np.mean(r * r)), float(np.mean(d * d))


def _quadrature_error(act, dist, table, grid):
    q = table.levels[table.codes]
    if isinstance(dist, Samples):
        d = act.df(dist.values)
        r = d - q[np.searchsorted(table.boundaries, dist.values, side="right")]
        mse, denom = float(np.mean(r * r)), float(np.mean(d * d))
    else:
        g = make_grid(act, dist, DEFAULT_GRID if grid is None else grid)
        mse = _pieces_error(act, dist, g.edges, table.boundaries, q)
        denom = float(g.total[2])
    return mse, (mse / denom if denom > 0 else 0.0)


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise FewbitError(f"bits must be an integer in 1..8, got {bits!r}")
    return int(bits)
