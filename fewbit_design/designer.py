"""design() (the designer end to end): activation + distribution -> cells -> DP -> refinement -> Table."""

from __future__ import annotations

import os

import numpy as np

from . import contiguous, levelset
from .activations import get_activation
from .candidate import Candidate, solver_record
from .cells import DEFAULT_GRID, make_cells, make_grid, pieces_error, samples_error
from .distributions import parse_distribution
from .errors import FewbitError
from .samples import Samples
from .table import PARTITION_CHOICES, Table, check_bits

MAX_DP_STEPS = 2e10      # 2**bits·n²/2 above this takes minutes: refuse the grid
# partition -> method; "auto" runs both and keeps the lower error (see _choose)
SOLVERS = {"contiguous": contiguous.solve, "levelset": levelset.solve}


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
    bits, n = _checked(bits, grid, partition)
    cells = make_cells(act, dist, n)
    methods = SOLVERS if partition == "auto" else {partition: SOLVERS[partition]}
    found = {name: solve(cells, bits, bins=n) for name, solve in methods.items()}
    denom = float(cells.total[2])
    best, alternatives = _choose(found, denom)
    with np.errstate(over="ignore"):
        if np.isinf(np.asarray(best.levels, dtype=np.float32)).any():
            raise FewbitError(f"{act.name} under {dist.spec}: the best levels reach "
                              f"{np.max(np.abs(best.levels)):.3g}, beyond float32, which the runtime "
                              "applies them in; scale the inputs down")
    return Table(activation=act.name, params=dict(act.params), bits=bits,
                 distribution=dist.name, dist_params=dict(dist.params), partition=best.partition,
                 boundaries=best.boundaries, codes=best.codes, levels=best.levels,
                 mse=best.mse, relative_error=best.mse / denom if denom > 0 else 0.0,
                 solver=solver_record(best, alternatives))


def _checked(bits, grid: int | None, partition: str) -> tuple[int, int]:
    """bits (1..8) and the grid's core cells n, checked with the partition: FewbitError where one is wrong."""
    bits = check_bits(bits)
    if partition not in PARTITION_CHOICES:
        raise FewbitError(f"unknown partition {partition!r}; choose one of {', '.join(PARTITION_CHOICES)}")
    n = DEFAULT_GRID if grid is None else int(grid)
    if not 16 <= n <= 1 << 20:
        raise FewbitError(f"grid must be in 16..1048576, got {grid}")
    if partition != "levelset" and 2 ** bits * n * n / 2 > MAX_DP_STEPS:
        top = int(np.sqrt(2 * MAX_DP_STEPS / 2 ** bits))
        raise FewbitError(f"grid {n} at {bits} bits needs {2 ** bits * n * n / 2:.1e} DP steps (minutes); "
                          f"use --grid {top} or less, or --partition levelset")
    return bits, n


def _choose(found: dict[str, Candidate], denom: float) -> tuple[Candidate, dict]:
    """The candidate to keep, and the relative errors of the others (empty for one partition).

    A contiguous table is a level-set table too, so the level-set error counts at most the
    contiguous one; on a tie (to rounding) auto keeps the simpler contiguous table.
    """
    if len(found) == 1:
        return next(iter(found.values())), {}
    cont, ls = found["contiguous"], found["levelset"]
    ls_mse = min(ls.mse, cont.mse)
    if cont.mse <= ls_mse + (1e-12 * ls_mse + 1e-15 * denom):
        best, other = cont, ("levelset", ls_mse)
    else:
        best, other = ls, ("contiguous", cont.mse)
    return best, {other[0]: other[1] / denom if denom > 0 else 0.0}


def evaluate(table: Table, *, grid: int | None = None, dist=None) -> tuple[float, float]:
    """Recompute (mse, relative error) of any table under the distribution it names (or `dist`)."""
    act = get_activation(table.activation, table.params)
    return _quadrature_error(act, distribution_of(table) if dist is None else dist, table, grid)


def is_custom_code(table: Table) -> bool:
    """Whether the table names a custom activation (module:function): re-designing it runs code."""
    return ":" in table.activation


def refuse_custom_code(table: Table, source: str = "table") -> None:
    """FewbitError for a table whose activation would import a module (see is_custom_code)."""
    if is_custom_code(table):
        module = table.activation.split(":")[0].strip()
        raise FewbitError(f"{source}: activation {table.activation[:80]!r} is custom code: using it "
                          f"would import module {module[:60]!r} and run it; a table file never runs "
                          "code unless you pass --trust-activation-code")


def rebuild(table: Table, *, base: str | None = None, source: str = "table"):
    """(Activation, Distribution or Samples) a table names; errors name `source` and the field."""
    try:
        act = get_activation(table.activation, table.params)
    except FewbitError as e:
        raise FewbitError(f"{source}: field 'activation': {e}") from None
    try:
        dist = distribution_of(table, base=base)
    except FewbitError as e:
        raise FewbitError(f"{source}: field 'distribution': {e}") from None
    return act, dist


def distribution_of(table: Table, *, base: str | None = None):
    """Rebuild the Distribution (or Samples) a table names.

    A samples path that is relative is taken relative to `base` (the table file's folder)
    when given; the file must have the sha256 and count the table records.
    """
    p = table.dist_params
    if table.distribution == "samples":
        if "path" not in p or not isinstance(p["path"], str):
            raise FewbitError("table's samples distribution has no 'path' parameter")
        path = p["path"]
        if base is not None and not os.path.isabs(path) and os.path.exists(os.path.join(base, path.split("#")[0])):
            path = os.path.join(base, path)     # beside the table first, then the current folder
        dist = parse_distribution(f"samples:{path}")
        for key in ("sha256", "count"):
            if key in p and p[key] != dist.params[key]:
                raise FewbitError(f"{path}: the samples differ from those the table was designed for "
                                  f"({key} {str(dist.params[key])[:16]} in the file, "
                                  f"{str(p[key])[:16]} in the table)")
        return dist
    return parse_distribution(f"{table.distribution}:{','.join(repr(float(v)) for v in p.values())}"
                              if p else table.distribution)


# -- errors -----------------------------------------------------------------------------

def _quadrature_error(act, dist, table, grid):
    q = table.levels[table.codes]
    if isinstance(dist, Samples):
        mse, denom = samples_error(act, dist, table.boundaries, q)
    else:
        g = make_grid(act, dist, DEFAULT_GRID if grid is None else grid)
        mse = pieces_error(act, dist, g.edges, table.boundaries, q)
        denom = float(g.total[2])
    return mse, (mse / denom if denom > 0 else 0.0)

