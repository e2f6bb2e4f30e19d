"""Cells step: the exact, discretised form of the objective, its moments and the error quadrature.

For a parametric weight w the real line is cut into cells aligned to the kinks of f' and w;
each cell carries S0 = ∫w, S1 = ∫w f', S2 = ∫w f'² by Gauss–Legendre. The DP sees the
`core` cells (boundaries may only sit on their edges); the tails beyond the core are
folded into the two outer core cells, so the objective covers the whole real line.
`Grid.interval_moments(a, b)` integrates over any interval exactly (prefixes + partial cells),
which is what continuous refinement and `evaluate` use.

For samples the objective is the mean over the samples; cells are the unique values
(or, when there are too many, bins of them) and every integral is an exact sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FewbitError

GL_ORDER = 8
_GL_X, _GL_W = np.polynomial.legendre.leggauss(GL_ORDER)
CORE_TAIL = 1e-13     # core range: quantiles CORE_TAIL and 1 - CORE_TAIL
FAR_TAIL = 1e-300     # tail cells reach quantiles FAR_TAIL; the mass beyond is below double precision
FAR_EDGE = 1e300      # no cell edge lies beyond ±FAR_EDGE
TAIL_DT = 0.05        # spacing of tail cells in t, x = a·sinh(t) (geometric far out)


@dataclass(frozen=True, eq=False)
class Grid:
    """Cells over the real line and their cumulative moments.

    edges : (N+1,) all cell edges, ascending; the first and last reach the far tails
        (mass beyond them is below 1e-300).
    cum, rcum : (3, N+1) ∫_{-inf}^{edges[i]} and ∫_{edges[i]}^{+inf} of w f'^p, p = 0, 1, 2.
        Both are kept so that an interval's moments are a difference of two small numbers
        on whichever side of the median it lies (no cancellation against the total).
    core : (lo, hi) indices into edges: DP boundaries may sit on edges[lo+1 .. hi-1].
    """

    edges: np.ndarray
    cum: np.ndarray
    rcum: np.ndarray
    core: tuple[int, int]
    act: object
    dist: object

    @property
    def core_edges(self) -> np.ndarray:
        lo, hi = self.core
        return self.edges[lo:hi + 1]

    def core_prefix(self) -> np.ndarray:
        """(3, n+1) prefix moments over the core cells, tails folded into the outer cells."""
        lo, hi = self.core
        p = self.cum[:, lo:hi + 1].copy()
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


def make_grid(act, dist, n: int) -> Grid:
    """Grid with about n core cells for activation `act` under parametric weight `dist`."""
    lo, hi = dist.quantile_range(CORE_TAIL)
    flo, fhi = dist.quantile_range(FAR_TAIL)
    # beyond ±1e300 the weight is below double precision for every family we have; the bound
    # also keeps sums of two edges finite
    flo, fhi = max(min(flo, lo), -FAR_EDGE), min(max(fhi, hi), FAR_EDGE)
    # x = a·sinh(t): uniform near 0 where activations bend, geometric in heavy tails.
    core = np.sinh(np.linspace(np.arcsinh(lo), np.arcsinh(hi), n + 1))
    core[0], core[-1] = lo, hi
    left = _tail_edges(lo, flo)
    right = _tail_edges(hi, fhi)
    kinks = [k for k in (*act.kinks, *dist.kinks) if flo < k < fhi]
    edges = np.unique(np.concatenate([left, core, right, np.asarray(kinks, dtype=np.float64)]))
    edges = _merge_close(edges, keep=np.asarray([lo, hi, *kinks]))
    # f' is monotone inside every cell: a level f' = t crosses a cell at most once.
    edges = np.union1d(edges, _extrema(act.df, edges))
    with np.errstate(over="ignore", invalid="ignore"):     # a divergent objective is refused:
        m = _gl_moments(act, dist, edges[:-1], edges[1:])
        _check_finite_objective(m, edges, act, dist)
    cum = np.zeros((3, edges.size))
    np.cumsum(m, axis=1, out=cum[:, 1:])
    rcum = np.zeros((3, edges.size))
    np.cumsum(m[:, ::-1], axis=1, out=rcum[:, -2::-1])
    ilo = int(np.searchsorted(edges, lo))
    ihi = int(np.searchsorted(edges, hi))
    return Grid(edges=edges, cum=cum, rcum=rcum, core=(ilo, ihi), act=act, dist=dist)


def _check_finite_objective(m, edges, act, dist) -> None:
    """Refuse weights under which ∫ w f'² diverges (heavy tails, unbounded f').

    A convergent integral gets nothing measurable from beyond the 1e-150 quantiles; a
    divergent one, cut where the grid ends (the 1e-300 quantiles), gets a large share there
    (or overflows).
    """
    lo, hi = dist.quantile_range(1e-150)
    far = (edges[1:] <= lo) | (edges[:-1] >= hi)
    total = m[2].sum()
    if not np.isfinite(total) or (total > 0 and m[2, far].sum() > 1e-9 * total):
        raise FewbitError(f"the objective ∫ w f'² is infinite for {act.name} under {dist.spec}: "
                          "f' grows faster than the weight's tails decay (use lighter tails, "
                          "e.g. a larger df)")


def _tail_edges(start: float, end: float) -> np.ndarray:
    """Edges from start outward to end, spaced TAIL_DT in t = asinh(x)."""
    if end == start:
        return np.empty(0)
    ts, te = np.arcsinh(start), np.arcsinh(end)
    k = max(1, int(np.ceil(abs(te - ts) / TAIL_DT)))
    e = np.sinh(np.linspace(ts, te, k + 1))
    e[-1] = end
    return e


def _extrema(df, edges: np.ndarray) -> np.ndarray:
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
    ok = (x > edges[i - 1]) & (x < edges[i + 1]) & (np.abs(x - edges[i]) > 1e-12 * np.maximum(1, np.abs(x)))
    return x[ok]


def _merge_close(edges: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Drop edges closer than ~1e-12 relative to a neighbour, never dropping `keep`."""
    tol = 1e-12 * np.maximum(1.0, np.abs(edges))
    close = np.concatenate([[False], np.diff(edges) < tol[1:]])
    close &= ~np.isin(edges, keep)
    return edges[~close]


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


def segments_error(grid, s):
    """Levels (conditional means) of the intervals cut at s, and the exact error."""
    y = snap_constant_levels(grid, s, np.arange(s.size + 1), levels_of(interval_moments(grid, s)))
    return y, pieces_error(grid.act, grid.dist, grid.edges, s, y)


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


def sample_levels_error(act, values, s, codes):
    """Levels (mean f' over each code's samples) and the exact mean squared error."""
    d = act.df(values)
    c = codes[np.searchsorted(s, values, side="right")]
    m = int(codes.max()) + 1
    cnt = np.bincount(c, minlength=m).astype(np.float64)
    y = np.bincount(c, weights=d, minlength=m) / np.maximum(cnt, 1)
    r = d - y[c]
    return y, float(np.mean(r * r))



# -- samples ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SampleCells:
    """Unique sample values with their weights; f' evaluated once per unique value.

    values : (N,) ascending unique sample values. weight : (N,) count / total.
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
        return v[:-1] + 0.5 * (v[1:] - v[:-1])


def make_sample_cells(act, values: np.ndarray) -> SampleCells:
    u, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    return SampleCells(values=u, weight=counts / counts.sum(), d=act.df(u))


def bin_edges(n_values: int, n_bins: int) -> np.ndarray:
    """(n_bins+1,) indices cutting n_values unique values into near-equal bins."""
    return np.unique(np.linspace(0, n_values, n_bins + 1).round().astype(np.int64))
