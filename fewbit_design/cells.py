"""Cells step: the exact, discretised form of the objective, its moments and the error quadrature.

Both kinds of cells answer the one interface the methods use (`Cells`, below): prefix moments
in x order, the cells in order of their mean f', where a cut between cells lies in x, the
levels and the exact error of a partition, and what the solver record says about them.

For a parametric weight w (`Grid`) the real line is cut into cells aligned to the kinks of f'
and w; each cell carries S0 = ∫w, S1 = ∫w f', S2 = ∫w f'² by Gauss–Legendre. The DP sees the
`core` cells (boundaries may only sit on their edges); the tails beyond the core are
folded into the two outer core cells, so the objective covers the whole real line.
`Grid.interval_moments(a, b)` integrates over any interval exactly (prefixes + partial cells),
which is what continuous refinement and `evaluate` use.

For samples (`SampleCells`) the objective is the mean over the samples, weighted when they carry
weights; cells are the unique values with the weights of equal values summed (or, when there are
too many for the DP, bins of them) and every integral is an exact sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ._grid_edges import cuttable, extrema, merge_close, t_of, tail_edges, x_of
from .errors import FewbitError
from .samples import Samples

DEFAULT_GRID = 1024   # core cells of a grid; for samples, the bins when there are too many values
GL_ORDER = 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(GL_ORDER)
CORE_TAIL = 1e-13     # core range: quantiles CORE_TAIL and 1 - CORE_TAIL
FAR_TAIL = 1e-300     # tail cells reach quantiles FAR_TAIL; the mass beyond is below double precision
FAR_EDGE = 1e300      # no cell edge lies beyond ±FAR_EDGE


class Cells(Protocol):
    """What the methods ask of cells, whichever kind they are (`Grid` or `SampleCells`)."""

    continuous: bool      # boundaries may leave the cut points (refine.py moves them) or not
    total: np.ndarray     # (3,) ∫ w f'^p over everything, p = 0, 1, 2
    size: int             # number of cells, as by_value and edge_points count them
    df_scale: float       # max(1, |f'|) over the cells: the scale of "equal levels"

    def prefix(self) -> np.ndarray: ...                  # (3, n+1) prefix moments, cells in x order
    def cut_points(self, cuts) -> np.ndarray: ...        # x of the cuts between prefix's cells
    def by_value(self) -> tuple[np.ndarray, np.ndarray]: ...   # cells by mean f', and their prefix
    def edge_points(self, i) -> np.ndarray: ...          # x between cell i-1 and cell i
    def dp_bins(self, exact_up_to: int, bins: int) -> np.ndarray | None: ...
    def merge_equal_levels(self, s) -> np.ndarray: ...
    def levels_for(self, s, codes, dp_levels) -> np.ndarray: ...   # the levels to merge codes by
    def settle(self, s, codes, levels=None) -> tuple[np.ndarray, float]: ...
    def describe(self, core: bool) -> dict: ...


@dataclass(frozen=True, eq=False)
class Grid:
    """Cells over the real line and their cumulative moments.

    edges : (N+1,) all cell edges, ascending; the first and last reach the far tails
        (mass beyond them is below 1e-300).
    cum, rcum : (3, N+1) ∫_{-inf}^{edges[i]} and ∫_{edges[i]}^{+inf} of w f'^p, p = 0, 1, 2.
        Both are kept so that an interval's moments are a difference of two small numbers
        on whichever side of the median it lies (no cancellation against the total).
    core : ascending indices into edges of the DP's cells: from the first edge of the core
        range to its last; DP boundaries may sit on the inner ones. (Cells split for accurate
        quadrature inside a core cell are not DP cells: the DP's cost grows as n².)
    center, unit : cells are uniform in t = asinh((x - center) / unit); (0, 1) unless the
        weight's mass lies away from 0 or within a width below 1 (see `make_grid`).
    """

    edges: np.ndarray
    cum: np.ndarray
    rcum: np.ndarray
    core: np.ndarray
    act: object
    dist: object
    center: float = 0.0
    unit: float = 1.0

    def step(self, x) -> np.ndarray:
        """Step for central differences at x: 1e-6 of the scale, and at least 256 ulps."""
        x = np.asarray(x, dtype=np.float64)
        return np.maximum(1e-6 * np.maximum(min(self.unit, 1.0), np.abs(x - self.center)),
                          256 * np.spacing(np.abs(x)))

    @property
    def core_edges(self) -> np.ndarray:
        return self.edges[self.core]

    @property
    def dp_core(self) -> np.ndarray:
        """The core edges where the DP may cut (indices into edges): see _grid_edges.cuttable."""
        kinks = [*self.act.kinks, *self.act.jumps, *self.dist.kinks]
        return self.core[cuttable(self.edges[self.core], kinks)]

    def prefix(self) -> np.ndarray:
        """(3, n+1) prefix moments over the DP's cells (dp_core), tails folded into the outer cells."""
        p = self.cum[:, self.dp_core]
        p[:, 0] = 0.0
        p[:, -1] = self.cum[:, -1]
        return p

    @property
    def total(self) -> np.ndarray:
        return self.cum[:, -1]

    def interval_moments(self, a, b) -> np.ndarray:
        """(3, len(a)) ∫_a^b w f'^p for p = 0, 1, 2; a < b, either may be infinite."""
        e = self.edges
        a = np.clip(np.asarray(a, dtype=np.float64), e[0], e[-1])
        b = np.clip(np.asarray(b, dtype=np.float64), e[0], e[-1])
        ja = np.clip(np.searchsorted(e, a, side="right") - 1, 0, e.size - 2)
        jb = np.clip(np.searchsorted(e, b, side="right") - 1, 0, e.size - 2)
        pa = _gl_moments(self.act, self.dist, e[ja], a)            # ∫_{e[ja]}^{a}
        pb = _gl_moments(self.act, self.dist, e[jb], b)            # ∫_{e[jb]}^{b}
        left = (self.cum[:, jb] + pb) - (self.cum[:, ja] + pa)     # via ∫_{-inf}
        right = (self.rcum[:, ja] - pa) - (self.rcum[:, jb] - pb)  # via ∫^{+inf}
        use_left = self.cum[0, jb] <= self.rcum[0, ja]
        out = np.where(use_left, left, right)
        same = ja == jb
        if np.any(same):
            out[:, same] = _gl_moments(self.act, self.dist, a[same], b[same])
        return out

    # -- the cells interface (see Cells) --

    continuous = True     # the objective is an integral: boundaries move off the cell edges

    @property
    def size(self) -> int:
        return self.edges.size - 1

    @property
    def df_scale(self) -> float:
        return max(1.0, float(np.max(np.abs(self.act.df(self.edges)))))

    def cut_points(self, cuts) -> np.ndarray:
        return self.edges[self.dp_core[cuts]]

    def edge_points(self, i) -> np.ndarray:
        return self.edges[i]

    def by_value(self) -> tuple[np.ndarray, np.ndarray]:
        """Cells with weight, ascending in their mean f' (stable), and their (3, m+1) prefix moments."""
        m = np.diff(self.cum, axis=1)                              # (3, N) per-cell moments
        live = np.flatnonzero(m[0] > 0)
        order = live[np.argsort(m[1, live] / m[0, live], kind="stable")]
        P = np.zeros((3, order.size + 1))
        np.cumsum(m[:, order], axis=1, out=P[:, 1:])
        return order, P

    def dp_bins(self, exact_up_to: int, bins: int) -> None:
        """None: the DP cuts every cell (the designer bounds a grid's DP work before it is made)."""
        return None

    def merge_equal_levels(self, s: np.ndarray) -> np.ndarray:
        """Remove boundaries between intervals with equal levels or without weight, one at a time."""
        while s.size:
            S = interval_moments(self, s)
            y = levels_of(S)
            scale = max(1.0, float(np.max(np.abs(y))))
            same = (np.abs(np.diff(y)) <= 1e-13 * scale) | (S[0, :-1] <= 0) | (S[0, 1:] <= 0)
            if not same.any():
                break
            s = np.delete(s, np.flatnonzero(same)[0])
        return s

    def levels_for(self, s, codes, dp_levels: np.ndarray) -> np.ndarray:
        """The DP's levels: its prefix sums are the quadrature's."""
        return dp_levels

    def settle(self, s, codes, levels=None) -> tuple[np.ndarray, float]:
        """Levels (given, or the intervals' conditional means when None) snapped where f' is
        constant, and their error by quadrature."""
        y = levels_of(interval_moments(self, s)) if levels is None else levels
        y = snap_constant_levels(self, s, codes, y)
        return y, pieces_error(self.act, self.dist, self.edges, s, y[codes])

    def describe(self, core: bool) -> dict:
        """The solver record's words for the cells: all of them, or the core the contiguous DP cuts."""
        e = self.core_edges if core else self.edges
        return {"grid": int(e.size - 1), "range": [float(e[0]), float(e[-1])],
                "quadrature": f"gauss-legendre-{GL_ORDER} per cell"}


def make_grid(act, dist, n: int) -> Grid:
    """Grid with about n core cells for activation `act` under parametric weight `dist`.

    Cells are uniform in t = asinh((x - c) / a): with c = 0, a = 1 (the usual case) they are
    uniform near 0 where activations bend and geometric in heavy tails. Where the weight's
    core lies away from 0, or its scale is below 1/2, the grid follows the mass: a is its
    scale (at most 1/16 of the core's width) and c its location (0 if within 16 a of 0). A weight too narrow for doubles to resolve at its
    location, or with mass beyond ±1e300, is refused.
    """
    lo, hi = dist.quantile_range(CORE_TAIL)
    flo, fhi = dist.quantile_range(FAR_TAIL)
    _check_resolvable(dist, lo, hi, n)
    # beyond ±1e300 the weight is below double precision for every family we accept; the
    # bound also keeps sums of two edges finite
    flo, fhi = max(min(flo, lo), -FAR_EDGE), min(max(fhi, hi), FAR_EDGE)
    straddles = lo <= 0.0 <= hi
    if straddles and hi - lo >= 1.0 and dist.scale >= 0.5:
        c, a = 0.0, 1.0
        core = np.sinh(np.linspace(np.arcsinh(lo), np.arcsinh(hi), n + 1))
    else:
        a = min(dist.scale, (hi - lo) / 16.0)
        c = 0.0 if abs(dist.loc) <= 16.0 * a else dist.loc
        core = x_of(np.linspace(t_of(lo, c, a), t_of(hi, c, a), n + 1), c, a)
    core[0], core[-1] = lo, hi
    left = tail_edges(lo, flo, c, a)
    right = tail_edges(hi, fhi, c, a)
    kinks = [k for k in (*act.kinks, *dist.kinks) if flo < k < fhi]
    near0 = np.empty(0)
    if (c, a) != (0.0, 1.0):        # where the weight reaches |x| < 1e3, resolve f' as the usual grid does
        near0 = ACTIVATION_EDGES[(ACTIVATION_EDGES > flo) & (ACTIVATION_EDGES < fhi)]
    edges = np.unique(np.concatenate([left, core, right, near0, np.asarray(kinks, dtype=np.float64)]))
    edges = merge_close(edges, 1e-12 * np.maximum(min(a, 1.0), np.abs(edges - c)), keep=np.asarray([lo, hi, *kinks]))
    # f' is monotone inside every cell: a level f' = t crosses a cell at most once.
    edges = np.union1d(edges, extrema(act.df, edges, c, a))
    dp_edges = edges[(edges >= lo) & (edges <= hi)]
    with np.errstate(over="ignore", invalid="ignore"):     # a divergent objective is refused:
        edges = _split_inexact(act, dist, edges)
        m = _gl_moments(act, dist, edges[:-1], edges[1:])
        _check_finite_objective(m, edges, act, dist)
    if not abs(m[0].sum() - 1.0) <= 1e-9:       # the cells must hold all the mass
        raise FewbitError(f"{dist.spec}: the grid holds {m[0].sum():.12g} of the weight's mass, not 1 "
                          "(a weight this narrow or this far out cannot be resolved)")
    cum = np.zeros((3, edges.size))
    np.cumsum(m, axis=1, out=cum[:, 1:])
    rcum = np.zeros((3, edges.size))
    np.cumsum(m[:, ::-1], axis=1, out=rcum[:, -2::-1])
    core = np.searchsorted(edges, dp_edges)
    return Grid(edges=edges, cum=cum, rcum=rcum, core=core, act=act, dist=dist, center=c, unit=a)


MIN_CELL_ULPS = 16384  # a core cell spans at least this many doubles (quadrature nodes stay distinct)


def _check_resolvable(dist, lo: float, hi: float, n: int) -> None:
    """Refuse weights whose mass lies beyond ±1e300, or in too few doubles for n cells."""
    out = float(dist.cdf(-FAR_EDGE)) + float(dist.sf(FAR_EDGE))
    if not out <= 1e-13:
        raise FewbitError(f"{dist.spec}: {out:.3g} of the weight's mass lies beyond ±{FAR_EDGE:g}, "
                          "outside the range of doubles the designer resolves; scale the inputs down")
    # the core, and its middle half, where a heavy-tailed weight has its peak
    for (a, b), cells in (((lo, hi), n), (dist.quantile_range(0.25), 64)):
        ulp = float(np.spacing(max(abs(a), abs(b))))
        if not (b - a) >= MIN_CELL_ULPS * cells * ulp:
            raise FewbitError(f"{dist.spec}: too narrow for its location: its mass lies within "
                              f"[{a!r}, {b!r}], about {(b - a) / ulp:.3g} doubles, too few for "
                              f"{cells} cells of {MIN_CELL_ULPS} doubles; shift the inputs nearer 0 "
                              "or use a wider weight")


def _check_finite_objective(m, edges, act, dist) -> None:
    """Refuse weights under which ∫ w f'² diverges (heavy tails, unbounded f').

    A convergent integral gets nothing measurable from beyond the 1e-150 quantiles; a
    divergent one, cut where the grid ends (the 1e-300 quantiles), gets a large share there
    (or overflows).
    """
    lo, hi = dist.quantile_range(1e-150)
    far = (edges[1:] <= lo) | (edges[:-1] >= hi)
    total = m[2].sum()
    if not np.isfinite(total):
        raise FewbitError(f"the objective ∫ w f'² for {act.name} under {dist.spec} overflows the double "
                          "range: f' is too large where the weight has mass (scale the inputs down, or "
                          "use lighter tails)")
    if total > 0 and m[2, far].sum() > 1e-9 * total:
        raise FewbitError(f"the objective ∫ w f'² is infinite for {act.name} under {dist.spec}: "
                          "f' grows faster than the weight's tails decay (use lighter tails, "
                          "e.g. a larger df)")


ACTIVATION_EDGES = np.sinh(np.linspace(-np.arcsinh(1e3), np.arcsinh(1e3), 257))   # f' bends at |x| ~ 1
SPLIT_TOL = 1e-13     # a cell whose halves change a moment by more than this of its total is split
SPLIT_ROUNDS = 16


def _split_inexact(act, dist, edges: np.ndarray) -> np.ndarray:
    """Halve cells whose Gauss–Legendre moments disagree with the sum over their halves.

    Where cells are coarse for the weight (a peak of t with df near 0 is 0.2 wide where the
    asinh cells are 1 wide) the rule is inexact; halving until both agree to 1e-13 of the
    totals restores it. Cells of the usual grids already agree and are left as they are.
    """
    a, b = edges[:-1], edges[1:]
    done = [edges]
    total = None
    for _ in range(SPLIT_ROUNDS):
        mid = 0.5 * a + 0.5 * b
        whole = _gl_moments(act, dist, a, b)
        halves = _gl_moments(act, dist, a, mid) + _gl_moments(act, dist, mid, b)
        if total is None:
            total = np.abs(halves).sum(axis=1, keepdims=True)
        wide = (b - a) > 2 * MIN_CELL_ULPS * np.spacing(np.maximum(np.abs(a), np.abs(b)))
        bad = np.any(np.abs(whole - halves) > SPLIT_TOL * total, axis=0) & wide
        if not bad.any():
            break
        done.append(mid[bad])
        a, b = np.concatenate([a[bad], mid[bad]]), np.concatenate([mid[bad], b[bad]])
    return np.unique(np.concatenate(done))


def _gl_moments(act, dist, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, len(a)) Gauss–Legendre ∫_a^b w f'^p for p = 0, 1, 2 (a, b inside one smooth cell)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    half = 0.5 * (b - a)
    x = (0.5 * (a + b))[..., None] + half[..., None] * _GL_X       # (n, GL_ORDER)
    w = dist.pdf(x) * (half[..., None] * _GL_W)
    d = act.df(x)
    wd = w * d
    return np.stack([w.sum(-1), wd.sum(-1), (wd * d).sum(-1)])


# -- moments and errors of a partition ----------------------------------------------

def interval_moments(grid, s):
    """(3, len(s)+1) moments ∫ w f'^p of the intervals cut at the ascending points s."""
    return grid.interval_moments(np.concatenate([[-np.inf], s]), np.concatenate([s, [np.inf]]))


def levels_of(S):
    """Conditional means S1/S0 of each run (0 for an empty run)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(S[0] > 0, S[1] / S[0], 0.0)


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


def pieces_error(act, dist, edges, s, q_by_interval):
    """∫ w (f' - q)² over the union of cell edges and boundaries, Gauss–Legendre per piece."""
    inner = s[(s > edges[0]) & (s < edges[-1])]
    pts = np.union1d(edges, inner)
    a, b = pts[:-1], pts[1:]
    q = q_by_interval[np.searchsorted(s, 0.5 * (a + b), side="right")]
    half = 0.5 * (b - a)
    x = (0.5 * (a + b))[:, None] + half[:, None] * _GL_X
    r = act.df(x) - q[:, None]
    return float(np.sum(dist.pdf(x) * r * r * (half[:, None] * _GL_W)))


def sample_levels_error(cells, s, codes):
    """Levels (weighted mean f' over each code's values) and the exact weighted mean squared error."""
    c = codes[np.searchsorted(s, cells.values, side="right")]
    m = int(codes.max()) + 1
    w, d = cells.weight, cells.d
    sw = np.bincount(c, weights=w, minlength=m)
    y = np.bincount(c, weights=w * d, minlength=m) / np.where(sw > 0, sw, 1.0)
    r = d - y[c]
    return y, float(np.sum(w * r * r) / np.sum(w))


def samples_error(act, samples, boundaries, q_by_interval) -> tuple[float, float]:
    """(Σ w (f' - q)², Σ w f'²) / Σ w over the values of `samples` (w = 1 without weights)."""
    x, w = samples.values, samples.weights
    d = act.df(x)
    r = d - q_by_interval[np.searchsorted(boundaries, x, side="right")]
    if w is None:
        return float(np.mean(r * r)), float(np.mean(d * d))
    total = float(np.sum(w))
    return float(np.sum(w * r * r)) / total, float(np.sum(w * d * d)) / total


# -- samples ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SampleCells:
    """Unique sample values with their weights; f' evaluated once per unique value.

    values : (N,) ascending unique sample values. weight : (N,) count (or summed weight) / total.
    d : (N,) f'(values). A boundary between values[i-1] and values[i] sits at their midpoint.
    """

    values: np.ndarray
    weight: np.ndarray
    d: np.ndarray

    @property
    def total(self) -> np.ndarray:
        w, d = self.weight, self.d
        return np.array([w.sum(), (w * d).sum(), (w * d * d).sum()])

    def prefix(self) -> np.ndarray:
        """(3, N+1) prefix sums of w, w f', w f'² over the unique values."""
        w, d = self.weight, self.d
        p = np.zeros((3, w.size + 1))
        np.cumsum(np.stack([w, w * d, w * d * d]), axis=1, out=p[:, 1:])
        return p

    def split_points(self) -> np.ndarray:
        """(N-1,) midpoints between consecutive unique values: the candidate boundaries."""
        v = self.values
        with np.errstate(over="ignore"):
            gap = v[1:] - v[:-1]            # overflows only between values of opposite sign near ±max
        return np.where(np.isfinite(gap), v[:-1] + 0.5 * gap, 0.5 * v[:-1] + 0.5 * v[1:])

    # -- the cells interface (see Cells) --

    continuous = False    # boundaries sit between samples; the DP's exchange refinement is exact

    @property
    def size(self) -> int:
        return self.values.size

    @property
    def df_scale(self) -> float:
        return max(1.0, float(np.max(np.abs(self.d))))

    def cut_points(self, cuts) -> np.ndarray:
        return self.split_points()[cuts - 1]

    edge_points = cut_points      # the cells in x order are the cells by_value reorders

    def by_value(self) -> tuple[np.ndarray, np.ndarray]:
        """Values ascending in f' (stable), and their (3, N+1) prefix moments."""
        order = np.argsort(self.d, kind="stable")
        w, d = self.weight[order], self.d[order]
        wd = w * d
        P = np.zeros((3, d.size + 1))
        np.cumsum(np.stack([w, wd, wd * d]), axis=1, out=P[:, 1:])
        return order, P

    def dp_bins(self, exact_up_to: int, bins: int) -> np.ndarray | None:
        """None (the DP cuts every value) up to exact_up_to values; beyond, `bins` near-equal bins."""
        return None if self.size <= exact_up_to else bin_edges(self.size, bins)

    def merge_equal_levels(self, s: np.ndarray) -> np.ndarray:
        """Remove the boundaries between intervals whose levels agree to rounding, all at once."""
        levels, _ = sample_levels_error(self, s, np.arange(s.size + 1))
        same = np.abs(np.diff(levels)) <= 1e-13 * max(1.0, float(np.max(np.abs(levels))))
        return s[~same] if same.any() else s    # rounding in the prefix sums splits a constant f' "for free"

    def levels_for(self, s, codes, dp_levels: np.ndarray) -> np.ndarray:
        """Each code's weighted mean f', summed anew: prefix sums over many samples lose digits."""
        return sample_levels_error(self, s, codes)[0]

    def settle(self, s, codes, levels=None) -> tuple[np.ndarray, float]:
        """Levels (each code's weighted mean f'; exact sums, so `levels` is not needed) and the error."""
        return sample_levels_error(self, s, codes)

    def describe(self, core: bool) -> dict:
        """The solver record's words for the cells (the same for both methods)."""
        return {"unique_samples": int(self.size), "range": [float(self.values[0]), float(self.values[-1])]}


def make_sample_cells(act, values: np.ndarray, weights: np.ndarray | None = None) -> SampleCells:
    """Cells at the unique values; a value's weight is its count (or its weights summed)."""
    u, inverse, counts = np.unique(np.asarray(values, dtype=np.float64), return_inverse=True,
                                   return_counts=True)
    w = counts.astype(np.float64) if weights is None else np.bincount(inverse, weights, u.size)
    d = act.df(u)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(d * d)
    if bad.any():
        raise FewbitError(f"{act.name}: f'(x)² overflows at the sample x = {u[bad][0]:.6g}: "
                          "the objective is infinite; scale the inputs down")
    return SampleCells(values=u, weight=w / w.sum(), d=d)


def make_cells(act, dist, n: int = DEFAULT_GRID) -> Cells:
    """The cells of the objective: a grid of about n core cells, or the samples' unique values."""
    if isinstance(dist, Samples):
        return make_sample_cells(act, dist.values, dist.weights)
    return make_grid(act, dist, n)


def bin_edges(n_values: int, n_bins: int) -> np.ndarray:
    """(n_bins+1,) indices cutting n_values unique values into near-equal bins."""
    return np.unique(np.linspace(0, n_values, n_bins + 1).round().astype(np.int64))
