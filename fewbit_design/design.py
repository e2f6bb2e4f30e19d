"""design(): activation + distribution -> cells -> DP -> refinement -> Table."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import __version__
from .activations import get_activation
from .levelset import compact_codes, design_levelset_grid, design_levelset_samples, refine_levelset
from .discretize import GL_ORDER, _GL_W, _GL_X, bin_edges, make_grid, make_sample_cells
from .distributions import Samples, parse_distribution
from .dp import _exchange_refine_kernel, segment
from .errors import FewbitError
from .refine import ContiguousProblem, interval_moments, levels_of, refine_or_keep
from .table import PARTITIONS, Table

DEFAULT_GRID = 1024
DP_BUDGET = 4e8          # k·n²/2 inner steps we allow for an exact DP over samples
MAX_DP_STEPS = 2e10      # k·n²/2 above this takes minutes: refuse the grid
PARTITION_CHOICES = (*PARTITIONS, "auto")


def design(activation, bits: int, *, distribution="normal:0,1", params=None,
           partition: str = "auto", grid: int | None = None) -> Table:
    """Design the optimal b-bit table for f' under the input weight `distribution`.

    Parameters
    ----------
    activation : registry name (see ``fewbit-design list``), "module:function[:derivative]",
        or an Activation.
    bits : 1..8; the table has at most 2**bits levels.
    distribution : a spec string ("normal:0,1", "uniform:-10,10", "t:3", "samples:acts.npy"),
        a Distribution, or Samples.
    params : activation parameters, e.g. {"alpha": 0.2}.
    partition : "contiguous" (one interval per code), "levelset" (a code may cover several
        intervals) or "auto" (the default: both, keeping the lower error; contiguous on a tie).
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
    if partition != "levelset" and k * n * n / 2 > MAX_DP_STEPS:
        top = int(np.sqrt(2 * MAX_DP_STEPS / k))
        raise FewbitError(f"grid {n} at {bits} bits needs {k * n * n / 2:.1e} DP steps (minutes); "
                          f"use --grid {top} or less, or --partition levelset")
    if isinstance(dist, Samples):
        cells = make_sample_cells(act, dist.values)
        denom = float(cells.total[2])
        cont = _contiguous_samples(act, dist, cells, k, n) if partition != "levelset" else None
        ls = _levelset_samples(act, dist, cells, k, n) if partition != "contiguous" else None
    else:
        g = make_grid(act, dist, n)
        denom = float(g.total[2])
        cont = _contiguous_parametric(g, k) if partition != "levelset" else None
        ls = _levelset_parametric(g, k, cont) if partition != "contiguous" else None
    tie = 1e-12 * ls.mse + 1e-15 * denom if ls is not None else 0.0
    if partition == "contiguous" or (partition == "auto" and cont.mse <= ls.mse + tie):
        # on a tie (to rounding) auto keeps the simpler contiguous table
        best, other = cont, ls
    else:
        best, other = ls, cont
    solver = dict(best.solver)
    if other is not None:
        solver["alternatives"] = {other.partition: other.mse / denom if denom > 0 else 0.0}
    solver.update(version=__version__, seconds=round(time.perf_counter() - t0, 6))
    return Table(activation=act.name, params=dict(act.params), bits=bits,
                 distribution=dist.name, dist_params=dict(dist.params), partition=best.partition,
                 boundaries=best.boundaries, codes=best.codes, levels=best.levels,
                 mse=best.mse, relative_error=best.mse / denom if denom > 0 else 0.0, solver=solver)


@dataclass
class _Candidate:
    partition: str
    boundaries: np.ndarray
    codes: np.ndarray
    levels: np.ndarray
    mse: float
    solver: dict


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

def _contiguous_parametric(grid, k) -> _Candidate:
    edges = grid.core_edges
    cuts = np.unique(segment(grid.core_prefix(), k))          # drop empty runs
    s_grid = _merge_equal_levels(grid, edges[cuts[1:-1]])
    y_grid, e_grid = _segments_error(grid, s_grid)
    ref = refine_or_keep(ContiguousProblem(grid), s_grid)
    s_ref = _merge_equal_levels(grid, ref.points)
    y_ref, e_ref = _segments_error(grid, s_ref)
    accepted = e_ref <= e_grid
    solver = {
        "method": "exact-dp+newton",
        "grid": int(edges.size - 1),
        "range": [float(edges[0]), float(edges[-1])],
        "quadrature": f"gauss-legendre-{GL_ORDER} per cell",
        "refinement": ref.metadata(accepted, e_grid),
    }
    s, y, e = (s_ref, y_ref, e_ref) if accepted else (s_grid, y_grid, e_grid)
    return _Candidate("contiguous", s, np.arange(s.size + 1), y, e, solver)


def _levelset_parametric(grid, k, contiguous: _Candidate | None) -> _Candidate:
    act, dist = grid.act, grid.dist
    scale = max(1.0, float(np.max(np.abs(act.df(grid.edges)))))
    s0, c0, y0 = merge_equal_codes(*design_levelset_grid(grid, k), scale)
    y0 = snap_constant_levels(grid, s0, c0, y0)
    e0 = _pieces_error(act, dist, grid.edges, s0, y0[c0])
    s1, c1, y1, ref = refine_levelset(grid, y0)
    s1, c1, y1 = merge_equal_codes(s1, c1, y1, scale)
    y1 = snap_constant_levels(grid, s1, c1, y1)
    e1 = _pieces_error(act, dist, grid.edges, s1, y1[c1])
    solver = {
        "method": "exact-monge-dp+newton (value space)",
        "grid": int(grid.edges.size - 1),
        "range": [float(grid.edges[0]), float(grid.edges[-1])],
        "quadrature": f"gauss-legendre-{GL_ORDER} per cell",
        "refinement": ref.metadata(e1 <= e0, e0),
    }
    best = min([(e1, 0, s1, c1, y1), (e0, 1, s0, c0, y0)], key=lambda c: (c[0], c[1]))
    if contiguous is not None and contiguous.mse < best[0]:   # contiguous tables are level-set tables too
        solver["refinement"]["contiguous_was_better"] = True
        return _Candidate("levelset", contiguous.boundaries, contiguous.codes, contiguous.levels,
                          contiguous.mse, {**contiguous.solver, **{"refinement": solver["refinement"]}})
    return _Candidate("levelset", best[2], best[3], best[4], best[0], solver)


def _contiguous_samples(act, dist, cells, k, n) -> _Candidate:
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
    levels, mse = _sample_levels_error(act, dist.values, s, np.arange(s.size + 1))
    solver = {"method": method, "unique_samples": int(N),
              "range": [float(cells.values[0]), float(cells.values[-1])],
              "refinement": {"sweeps": sweeps}}
    return _Candidate("contiguous", s, np.arange(s.size + 1), levels, mse, solver)


def _levelset_samples(act, dist, cells, k, n) -> _Candidate:
    code, sweeps = design_levelset_samples(cells.d, cells.weight, k, n)
    change = np.flatnonzero(code[1:] != code[:-1])
    s = cells.split_points()[change]
    codes, _ = compact_codes(code[np.concatenate([[0], change + 1])])
    levels, mse = _sample_levels_error(act, dist.values, s, codes)
    solver = {"method": "exact-monge-dp over unique sample derivatives" if sweeps == 0 else
              "monge-dp over value bins + exact exchange refinement",
              "unique_samples": int(cells.values.size),
              "range": [float(cells.values[0]), float(cells.values[-1])],
              "refinement": {"sweeps": sweeps}}
    return _Candidate("levelset", s, codes, levels, mse, solver)


def _merge_equal_levels(grid, s):
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


def snap_constant_levels(grid, s, codes, y):
    """Where f' is constant over all of a code's x, its level is that constant exactly.

    (S1/S0 would be off by an ulp, leaving an error of 1e-35 where the answer is 0.)
    f' is sampled at the midpoints of the pieces between cell edges and boundaries, so the
    torch convention for f' at a kink itself does not matter.
    """
    pts = np.union1d(grid.edges, s)
    mid = 0.5 * (pts[:-1] + pts[1:])
    fm = grid.act.df(mid)
    code_of = codes[np.searchsorted(s, mid, side="right")]
    y = y.copy()
    for c in range(y.size):
        v = fm[code_of == c]
        if v.size and v.min() == v.max() and abs(y[c] - v[0]) <= 1e-12 * max(1.0, abs(v[0])):
            y[c] = v[0]
    return y


def merge_equal_codes(s, codes, levels, scale):
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


# -- errors -----------------------------------------------------------------------------

def _segments_error(grid, s):
    """Levels (conditional means) of the intervals cut at s, and the exact error."""
    y = snap_constant_levels(grid, s, np.arange(s.size + 1), levels_of(interval_moments(grid, s)))
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


def _sample_levels_error(act, values, s, codes):
    """Levels (mean f' over each code's samples) and the exact mean squared error."""
    d = act.df(values)
    c = codes[np.searchsorted(s, values, side="right")]
    m = int(codes.max()) + 1
    cnt = np.bincount(c, minlength=m).astype(np.float64)
    y = np.bincount(c, weights=d, minlength=m) / np.maximum(cnt, 1)
    r = d - y[c]
    return y, float(np.mean(r * r))


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
