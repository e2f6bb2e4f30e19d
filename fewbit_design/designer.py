"""design() (the designer end to end): activation + distribution -> cells -> DP -> refinement -> Table."""

from __future__ import annotations

import numpy as np

from ._version import __version__
from .activations import get_activation
from .contiguous import contiguous_candidate, contiguous_samples_candidate
from .discretize import make_grid, make_sample_cells, pieces_error
from .distributions import Samples, parse_distribution
from .errors import FewbitError
from .levelset import levelset_candidate, levelset_samples_candidate
from .table import PARTITION_CHOICES, Table, check_bits

DEFAULT_GRID = 1024
MAX_DP_STEPS = 2e10      # k·n²/2 above this takes minutes: refuse the grid


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
    act = get_activation(activation, params) if isinstance(activation, str) else activation
    dist = parse_distribution(distribution) if isinstance(distribution, str) else distribution
    bits = check_bits(bits)
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
        cont = contiguous_samples_candidate(act, dist, cells, k, n) if partition != "levelset" else None
        ls = levelset_samples_candidate(act, dist, cells, k, n) if partition != "contiguous" else None
    else:
        g = make_grid(act, dist, n)
        denom = float(g.total[2])
        cont = contiguous_candidate(g, k) if partition != "levelset" else None
        ls = levelset_candidate(g, k, cont) if partition != "contiguous" else None
    tie = 1e-12 * ls.mse + 1e-15 * denom if ls is not None else 0.0
    if partition == "contiguous" or (partition == "auto" and cont.mse <= ls.mse + tie):
        # on a tie (to rounding) auto keeps the simpler contiguous table
        best, other = cont, ls
    else:
        best, other = ls, cont
    solver = dict(best.solver)
    if other is not None:
        solver["alternatives"] = {other.partition: other.mse / denom if denom > 0 else 0.0}
    solver["version"] = __version__      # no wall time: the same call gives the same table, bit for bit
    return Table(activation=act.name, params=dict(act.params), bits=bits,
                 distribution=dist.name, dist_params=dict(dist.params), partition=best.partition,
                 boundaries=best.boundaries, codes=best.codes, levels=best.levels,
                 mse=best.mse, relative_error=best.mse / denom if denom > 0 else 0.0, solver=solver)


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


# -- errors -----------------------------------------------------------------------------

def _quadrature_error(act, dist, table, grid):
    q = table.levels[table.codes]
    if isinstance(dist, Samples):
        d = act.df(dist.values)
        r = d - q[np.searchsorted(table.boundaries, dist.values, side="right")]
        mse, denom = float(np.mean(r * r)), float(np.mean(d * d))
    else:
        g = make_grid(act, dist, DEFAULT_GRID if grid is None else grid)
        mse = pieces_error(act, dist, g.edges, table.boundaries, q)
        denom = float(g.total[2])
    return mse, (mse / denom if denom > 0 else 0.0)

