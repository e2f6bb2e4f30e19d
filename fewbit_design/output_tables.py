"""design_output(): a table over the saved output y = f(x), that gives f' back from y and a branch bit.

activation + distribution -> cells (cells.make_grid) -> shape (output_shape: flats, branch point,
the variable t per branch) -> DP over cells with a polynomial cost (output_fit) -> OutputTable.

Per branch k (x below or above the branch point; one branch if f is monotone) g_k is a piecewise
polynomial in t = sign(y - y0)·|y - y0|^(1/p), chosen to minimise

    E = ∫ w(x) (f'(x) - g_k(x)(f(x)))² dx

on the grid's Gauss–Legendre nodes. On a flat (a set of positive mass where f = c) g is the
constant f' there, exact by construction. The table reports E / ∫ w f'² with y exact, with y
rounded to `y_dtype` (g evaluated on the rounded y), and the floor: the same error of the exact
g = f'∘f⁻¹ on the rounded y, which no table over y in that dtype can beat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._version import __version__
from .activations import get_activation
from .cells import DEFAULT_GRID, make_grid
from .distributions import Samples, parse_distribution
from .errors import FewbitError
from .output_fit import Run, design_pieces, evaluate_pieces
from .output_shape import Flat, find_shape, nodes, t_of

Y_DTYPES = ("float32", "float16", "bfloat16", "float64")
DEFAULT_PIECES = 4       # per branch, with DEFAULT_DEGREE: the sweep of benchmarks/output_tables.py chose them
DEFAULT_DEGREE = 8
DEFAULT_CUTS = 64        # DP cells per branch (the cut points the DP chooses among)
_FORMATS = {"float16": (11, -14, 65504.0), "bfloat16": (8, -126, 3.3895313892515355e38),
            "float32": (24, -126, 3.4028234663852886e38)}


def round_to(y, dtype: str) -> np.ndarray:
    """y (float64) rounded to nearest (ties to even) in `dtype`, returned as float64; overflow is ±inf."""
    y = np.asarray(y, dtype=np.float64)
    if dtype == "float64":
        return y.copy()
    if dtype not in _FORMATS:
        raise FewbitError(f"unknown y dtype {dtype!r}; choose one of {', '.join(Y_DTYPES)}")
    digits, emin, top = _FORMATS[dtype]
    _, e = np.frexp(y)                                   # |y| = m·2^e, m in [0.5, 1)
    step = np.ldexp(1.0, np.maximum(e - 1, emin) - (digits - 1))
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.rint(y / step) * step                     # exact scaling by powers of 2; rint ties to even
    r = np.where(np.isfinite(y), r, y)
    return np.where(np.abs(r) > top, np.copysign(np.inf, y), r)


def signed_zero(y) -> np.ndarray:
    """y with ±0 moved to ±5e-324: a zero keeps the side it was rounded from (f(x) -> -0.0 for x < 0)."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y == 0, np.copysign(5e-324, y), y)


def rounding_cell(c: float, dtype: str) -> tuple[float, float]:
    """(lo, hi): the y that round to the same value as c in dtype lie in [lo, hi] (bisection in y)."""
    v = float(round_to(c, dtype))
    out = []
    for direction in (-1.0, 1.0):
        inside, outside = c, c + direction * 1e-2 * max(1.0, abs(c))
        for _ in range(200):
            m = 0.5 * (inside + outside)
            if m in (inside, outside):
                break
            inside, outside = (m, outside) if round_to(m, dtype) == v else (inside, m)
        out.append(inside)
    return out[0], out[1]


@dataclass(frozen=True)
class OutputBranch:
    """One branch: x in (lo, hi); g(t) on pieces [edges[j], edges[j+1]] of t, coefficients in
    u = (2t - edges[j] - edges[j+1]) / (edges[j+1] - edges[j]) ascending; x_edges are f⁻¹ of the
    piece edges (ascending in x). Where y equals a flat's y (in the dtype), g is the flat's f'."""

    lo: float
    hi: float
    increasing: bool
    y0: float
    power: int
    flats: tuple[Flat, ...]
    edges: np.ndarray = field(repr=False)
    coefficients: np.ndarray = field(repr=False)
    x_edges: np.ndarray = field(repr=False)

    @property
    def variable(self) -> str:
        y = "y" if self.y0 == 0 else f"y - ({self.y0:.17g})"
        return y if self.power == 1 else f"sign·|{y}|^(1/{self.power})"

    def derivative(self, y, dtype: str = "float64") -> np.ndarray:
        """g(y) for y already in `dtype` (flats compared in that dtype)."""
        y = np.asarray(y, dtype=np.float64)
        out = evaluate_pieces(self.edges, self.coefficients, t_of(signed_zero(y), self.y0, self.power))
        for fl in self.flats:
            out = np.where(y == round_to(fl.y, dtype), fl.df, out)
        return out

    def to_dict(self) -> dict:
        return {"x_range": [float(self.lo), float(self.hi)], "increasing": self.increasing,
                "variable": {"y0": self.y0, "power": self.power},
                "flats": [{"x": [f.lo, f.hi], "y": f.y, "df": f.df, "mass": f.mass} for f in self.flats],
                "edges": self.edges.tolist(), "x_edges": self.x_edges.tolist(),
                "coefficients": self.coefficients.tolist()}


@dataclass(frozen=True)
class OutputTable:
    """A table over the output: f'(x) ≈ g_bit(f(x)), bit = x > x0 (no bit when monotone).

    relative_error: E / ∫ w f'² with y exact; rounded_error: the same with g on y rounded to
    y_dtype; floor: the exact f'∘f⁻¹ on the rounded y (all on the designer's nodes).
    """

    activation: str
    params: dict
    distribution: str
    y_dtype: str
    kind: str
    branch_point: tuple[float, float] | None
    branches: tuple[OutputBranch, ...]
    degree: int
    mse: float
    relative_error: float
    rounded_error: float
    floor: float
    solver: dict = field(repr=False)

    @property
    def branch_bits(self) -> int:
        return 0 if self.branch_point is None else 1

    @property
    def pieces(self) -> tuple[int, ...]:
        return tuple(int(b.coefficients.shape[0]) for b in self.branches)

    def branch_of(self, x) -> np.ndarray:
        """The branch bit of x: 1 where x > x0 (all 0 when monotone)."""
        x = np.asarray(x, dtype=np.float64)
        return np.zeros(x.shape, np.int64) if self.branch_point is None else (x > self.branch_point[0]).astype(np.int64)

    def derivative(self, y, bit=None, dtype: str | None = None) -> np.ndarray:
        """g_bit(y): the table's f' for outputs y (already in `dtype`, default the table's y_dtype)."""
        dtype = self.y_dtype if dtype is None else dtype
        y = np.asarray(y, dtype=np.float64)
        bit = np.zeros(y.shape, np.int64) if bit is None else np.broadcast_to(np.asarray(bit), y.shape)
        out = self.branches[0].derivative(y, dtype)
        if len(self.branches) > 1:
            out = np.where(bit > 0, self.branches[1].derivative(y, dtype), out)
        return out

    def to_dict(self) -> dict:
        return {"activation": {"name": self.activation, "params": dict(self.params)},
                "distribution": self.distribution, "y_dtype": self.y_dtype, "kind": self.kind,
                "branch_point": None if self.branch_point is None else list(self.branch_point),
                "branch_bits": self.branch_bits, "degree": self.degree,
                "branches": [b.to_dict() for b in self.branches],
                "error": {"mse": self.mse, "relative": self.relative_error,
                          "rounded": self.rounded_error, "floor": self.floor},
                "solver": dict(self.solver)}

    def __str__(self) -> str:
        bp = "monotone, 0 branch bits" if self.branch_point is None else \
            f"{self.kind} at x = {self.branch_point[0]:.12g}, y = {self.branch_point[1]:.12g}, 1 branch bit"
        lines = [f"{self.activation} output table under {self.distribution} ({bp}), degree {self.degree}",
                 f"  relative error {self.relative_error:.3e} (y exact), {self.rounded_error:.3e} "
                 f"(y in {self.y_dtype}), floor {self.floor:.3e}"]
        for k, b in enumerate(self.branches):
            flats = "".join(f", flat y = {f.y:.6g} (f' = {f.df:.6g})" for f in b.flats)
            lines.append(f"  branch {k}: x in ({b.lo:.6g}, {b.hi:.6g}), t = {b.variable}, "
                         f"{b.coefficients.shape[0]} pieces{flats}")
        return "\n".join(lines)


def design_output(activation, *, distribution="normal:0,1", params=None, y_dtype: str = "float32",
                  pieces: int = DEFAULT_PIECES, degree: int = DEFAULT_DEGREE, grid: int | None = None,
                  cuts: int = DEFAULT_CUTS) -> OutputTable:
    """Design the table over the saved output y = f(x) for f' (module docstring).

    Parameters
    ----------
    activation : registry name, "module:function[:derivative]", or an Activation.
    distribution : a parametric weight spec ("normal:0,1", "t:3", ...) or a Distribution.
    params : activation parameters.
    y_dtype : the dtype y is saved in: "float32", "float16", "bfloat16" (or "float64").
    pieces : at most this many polynomial pieces per branch (1..64).
    degree : polynomial degree of each piece (0..12).
    grid : core cells of the quadrature grid, 16..65536 (default 1024).
    cuts : DP cells per branch, the candidate cuts between pieces (pieces..512).

    Raises
    ------
    FewbitError
        Bad arguments, samples as the distribution, or an f whose f' y plus one bit cannot recover.
    """
    act = get_activation(activation, params) if isinstance(activation, str) else activation
    dist = parse_distribution(distribution) if isinstance(distribution, str) else distribution
    _check_args(dist, y_dtype, pieces, degree, cuts, DEFAULT_GRID if grid is None else grid)
    g = make_grid(act, dist, DEFAULT_GRID if grid is None else int(grid))
    shape = find_shape(act, dist, g.edges)
    extra = [fl_end for b in shape.branches for fl in b.flats for fl_end in (fl.lo, fl.hi)]
    if shape.branch_point is not None:
        extra.append(shape.branch_point[0])
    edges = np.union1d(g.edges, np.asarray(extra, dtype=np.float64))
    # where y rounds onto a flat's value from the open part beside it (y -> 1 beside a clip at 1),
    # g takes the flat's f': cells end there so that the nodes see it
    near = [inverse(act, br, edges, np.asarray(rounding_cell(fl.y, y_dtype)))
            for br in shape.branches for fl in br.flats]
    edges = np.union1d(edges, np.concatenate([np.empty(0), *near]))
    x, w = nodes(act, dist, edges)
    d, y = act.df(x), act.f(x)
    core = g.core_edges[[0, -1]]
    kinks = np.asarray([*act.kinks, *act.jumps, *extra], dtype=np.float64)
    branches = []
    for br in shape.branches:
        mid = 0.5 * (edges[:-1] + edges[1:])
        cells = np.flatnonzero((mid > br.lo) & (mid < br.hi) & ~_on_flats(mid, br.flats))
        run, order, bounds = _run(act, br, edges, cells, x, w, d, y, core, kinks, cuts)
        cut, coef, _ = design_pieces(run, pieces, degree)
        branches.append(OutputBranch(br.lo, br.hi, br.increasing, br.y0, br.power, br.flats, run.ends[cut].copy(),
                                     coef, _x_edges(br, edges, order, bounds[cut])))
    bit = (x > shape.branch_point[0]).astype(np.int64) if shape.branch_point else np.zeros(x.shape, np.int64)
    table = dict(activation=act.name, params=dict(act.params), distribution=dist.spec, y_dtype=y_dtype,
                 kind=shape.kind, branch_point=shape.branch_point, branches=tuple(branches), degree=degree)
    probe = OutputTable(**table, mse=0.0, relative_error=0.0, rounded_error=0.0, floor=0.0, solver={})
    denom = float(np.sum(w * d * d))
    mse = float(np.sum(w * (d - probe.derivative(y, bit, "float64")) ** 2))
    yr = round_to(y, y_dtype)
    rounded = float(np.sum(w * (d - probe.derivative(yr, bit)) ** 2))
    floor = float(np.sum(w * (d - exact_derivative(act, probe, yr, bit, edges)) ** 2))
    rel = (lambda e: e / denom if denom > 0 else 0.0)
    solver = {"grid": int(edges.size - 1), "cuts": int(cuts), "quadrature": "gauss-legendre-8 per cell",
              "cost": "QR per run of cells", "version": __version__}
    return OutputTable(**table, mse=mse, relative_error=rel(mse), rounded_error=rel(rounded), floor=rel(floor),
                       solver=solver)


def _check_args(dist, y_dtype, pieces, degree, cuts, grid) -> None:
    if isinstance(dist, Samples):
        raise FewbitError("output tables need a parametric distribution (normal, uniform, laplace, logistic, "
                          "student-t), not samples")
    if y_dtype not in Y_DTYPES:
        raise FewbitError(f"unknown y dtype {y_dtype!r}; choose one of {', '.join(Y_DTYPES)}")
    for name, v, lo, hi in (("pieces", pieces, 1, 64), ("degree", degree, 0, 12), ("cuts", cuts, 1, 512),
                            ("grid", grid, 16, 1 << 16)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise FewbitError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
    if cuts < pieces:
        raise FewbitError(f"cuts ({cuts}) must be at least pieces ({pieces})")


def _on_flats(x: np.ndarray, flats) -> np.ndarray:
    out = np.zeros(x.shape, dtype=bool)
    for fl in flats:
        out |= (x >= fl.lo) & (x <= fl.hi)
    return out


def _run(act, br, edges, cells, x, w, d, y, core, kinks, cuts):
    """The branch's cells in t order, grouped into about `cuts` DP cells (a Run), and that order."""
    order = cells if br.increasing else cells[::-1]
    left = edges[cells]                                      # x order
    in_core = (left > core[0]) & (left < core[1])
    step = max(1, int(np.ceil(in_core.sum() / cuts)))
    start = np.zeros(cells.size, dtype=bool)
    start[0] = True
    start[np.flatnonzero(in_core)[::step]] = True
    start |= np.isin(left, kinks)
    start[1:] |= cells[1:] != cells[:-1] + 1                 # a gap (a flat) inside the branch
    first = np.flatnonzero(start)                            # group starts, x order
    bounds = np.concatenate([first, [cells.size]])
    if not br.increasing:
        bounds = cells.size - bounds[::-1]
    tn = t_of(y[order], br.y0, br.power)
    te = t_of(act.f(np.concatenate([edges[order], edges[order + 1]])), br.y0, br.power).reshape(2, -1)
    lo_t = np.minimum(te[0], te[1])
    hi_last = float(np.maximum(te[0], te[1])[-1])
    per_cell = x.shape[1]
    run = Run(t=tn.ravel(), b=d[order].ravel(), w=w[order].ravel(), starts=bounds * per_cell,
              ends=np.concatenate([lo_t[bounds[:-1]], [hi_last]]))
    return run, order, bounds


def _x_edges(br, edges, order, at) -> np.ndarray:
    """x of the piece edges, ascending: the t-order cell indices `at` (one past the last: its end)."""
    lo, hi = edges[order], edges[order + 1]                  # x edges of each cell, t order
    first, last = (lo, hi[-1]) if br.increasing else (hi, lo[-1])
    return np.sort(np.where(at < order.size, first[np.minimum(at, order.size - 1)], last))


def inverse(act, br, edges: np.ndarray, y) -> np.ndarray:
    """f⁻¹(y) on branch br, y clamped to its range: bisection inside the bracketing cell of `edges`."""
    e = edges[(edges >= max(br.lo, edges[0])) & (edges <= min(br.hi, edges[-1]))]
    fe = act.f(e)
    if not br.increasing:
        e, fe = e[::-1], fe[::-1]
    fe = np.maximum.accumulate(fe)                      # non-decreasing along e (rounding aside)
    v = np.clip(signed_zero(y), fe[0], fe[-1])
    j = np.clip(np.searchsorted(fe, v, side="left") - 1, 0, e.size - 2)
    a, b = e[j], e[j + 1]
    for _ in range(64):
        m = 0.5 * (a + b)
        below = act.f(m) < v
        a, b = np.where(below, m, a), np.where(below, b, m)
    return 0.5 * (a + b)


def exact_derivative(act, table: OutputTable, y, bit, edges: np.ndarray) -> np.ndarray:
    """f'(f⁻¹_bit(y)) by `inverse` on each branch; flats' f' where y is a flat's y in the dtype."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros(y.shape)
    for k, br in enumerate(table.branches):
        sel = (np.asarray(bit) == k) if len(table.branches) > 1 else np.ones(y.shape, dtype=bool)
        r = act.df(inverse(act, br, edges, y[sel]))
        for fl in br.flats:
            r = np.where(y[sel] == round_to(fl.y, table.y_dtype), fl.df, r)
        out[sel] = r
    return out
