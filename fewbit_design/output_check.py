"""An independent check of an OutputTable's error: shares no cells, nodes or sums with the designer.

Rebuilt from the table alone (activation, distribution, branches, pieces), over x in the
weight's 1e-18 quantiles:

- y exact: composite Gauss–Legendre-16 on panels uniform in x between the breakpoints (the
  pieces' edges mapped back to x by bisection on f, the kinks of f', the flats' ends, the
  branch point), panels doubled until two passes agree to 1e-6.
- y in float16 / bfloat16: exact per rounding cell. Every value v of the dtype is the rounding
  of y in (v⁻, v⁺) (midpoints to its neighbours); that y-cell's preimage on a branch is one
  x-interval (f is monotone there), found by bisection, on which the integrand
  w(x)(f'(x) - G)² has the constant G = g(v) (or f'(f⁻¹(v)) for the floor).
- y in float32 (2^23 values an octave): y rounded pointwise on the composite rule.
"""

from __future__ import annotations

import numpy as np

from .activations import get_activation
from .distributions import parse_distribution
from .output_tables import OutputTable, round_to, rounding_cell, signed_zero

_X16, _W16 = np.polynomial.legendre.leggauss(16)
_X8, _W8 = np.polynomial.legendre.leggauss(8)
TAIL = 1e-18


def _gl(a, b, xs, ws):
    """(x, weights) of the rule (xs, ws) on each interval [a_i, b_i], shape (n, order)."""
    half = 0.5 * (b - a)
    return (0.5 * (a + b))[:, None] + half[:, None] * xs, half[:, None] * ws


def _inverse(f, v, a: float, b: float, increasing: bool) -> np.ndarray:
    """x in [a, b] with f(x) = v (clamped to the ends), by bisection; f monotone on [a, b]."""
    lo = np.full(np.shape(v), a, dtype=np.float64)
    hi = np.full(np.shape(v), b, dtype=np.float64)
    for _ in range(200):
        m = 0.5 * (lo + hi)
        up = (f(m) < v) if increasing else (f(m) > v)
        lo, hi = np.where(up, m, lo), np.where(up, hi, m)
        if np.all(hi - lo <= 4 * np.spacing(np.maximum(np.abs(lo), np.abs(hi)))):
            break
    return 0.5 * (lo + hi)


def _dtype_values(dtype: str) -> np.ndarray:
    """Every finite value of a 16-bit float dtype, ascending (one zero)."""
    bits = np.arange(1 << 16, dtype=np.uint32)
    with np.errstate(invalid="ignore"):
        v = (bits.astype(np.uint16).view(np.float16).astype(np.float64) if dtype == "float16"
             else (bits << 16).view(np.float32).astype(np.float64))
    return np.unique(v[np.isfinite(v)] + 0.0)


class _Branch:
    """One branch of the table, clipped to [a, b], with its breakpoints in x."""

    def __init__(self, act, table, k, a, b, dtype):
        br = table.branches[k]
        self.act, self.table, self.k, self.br = act, table, k, br
        self.a, self.b = max(a, br.lo), min(b, br.hi)
        t = br.edges
        y = br.y0 + np.sign(t) * np.abs(t) ** br.power
        x_piece = _inverse(act.f, y, self.a, self.b, br.increasing)
        extra = [*act.kinks, *act.jumps, *[e for fl in br.flats for e in (fl.lo, fl.hi)]]
        for fl in br.flats:      # the open part's y that rounds onto the flat's y: a panel of its own
            extra.extend(_inverse(act.f, np.asarray(rounding_cell(fl.y, dtype)), self.a, self.b, br.increasing))
        pts = np.concatenate([[self.a, self.b], x_piece, np.asarray(extra, dtype=np.float64)])
        self.breaks = np.unique(pts[(pts >= self.a) & (pts <= self.b)])

    def g(self, y, dtype):
        return self.table.derivative(y, np.full(np.shape(y), self.k), dtype)

    def exact(self, v, dtype):
        """f'(f⁻¹(v)) on this branch (v clamped to its range); flats' f' where v is a flat's y."""
        x = _inverse(self.act.f, signed_zero(v), self.a, self.b, self.br.increasing)
        out = self.act.df(x)
        for fl in self.br.flats:
            out = np.where(v == round_to(fl.y, dtype), fl.df, out)
        return out

    def composite(self, integrand, panels: int) -> float:
        a, b = self.breaks[:-1], self.breaks[1:]
        s = np.linspace(0.0, 1.0, panels + 1)
        pa = (a[:, None] + (b - a)[:, None] * s[:-1]).ravel()
        pb = (a[:, None] + (b - a)[:, None] * s[1:]).ravel()
        x, wq = _gl(pa, pb, _X16, _W16)
        return float(np.sum(integrand(x) * wq))

    def converged(self, integrand, start: int = 8, top: int = 4096) -> float:
        prev, n = self.composite(integrand, start), start
        while n < top:
            n *= 2
            cur = self.composite(integrand, n)
            if abs(cur - prev) <= 1e-6 * abs(cur) + 1e-300:
                return cur
            prev = cur
        return prev

    def cells16(self, dtype):
        """(errors of g, of the exact inverse): ∫ w (f' - G)² over the preimage of every rounding cell."""
        f = self.act.f
        ya, yb = float(f(np.array([self.a]))[0]), float(f(np.array([self.b]))[0])
        lo_y, hi_y = min(ya, yb), max(ya, yb)
        v = _dtype_values(dtype)
        mids = 0.5 * (v[1:] + v[:-1])
        keep = np.flatnonzero((mids > lo_y) & (mids < hi_y))
        xb = _inverse(f, mids[keep], self.a, self.b, self.br.increasing)
        xs = np.concatenate([[self.a, self.b], xb, self.breaks])
        order = np.argsort(xs, kind="stable")
        xs = xs[order]
        a, b = xs[:-1], xs[1:]
        live = b > a
        a, b = a[live], b[live]
        x, wq = _gl(a, b, _X8, _W8)
        yv = round_to(f(0.5 * (a + b)), dtype)        # one rounded value per sub-interval
        dist_w = self.table_dist.pdf(x) * wq
        d = self.act.df(x)
        e_g = float(np.sum(dist_w * (d - self.g(yv, dtype)[:, None]) ** 2))
        e_x = float(np.sum(dist_w * (d - self.exact(yv, dtype)[:, None]) ** 2))
        return e_g, e_x


def check_output(table: OutputTable, *, dtype: str | None = None) -> dict:
    """Relative errors of `table` by the independent quadrature (module docstring).

    Returns {"relative": y exact, "rounded": g on y in dtype, "floor": f'∘f⁻¹ on y in dtype,
    "denominator": ∫ w f'², "dtype": dtype}; dtype defaults to the table's y_dtype.
    """
    dtype = table.y_dtype if dtype is None else dtype
    act = get_activation(table.activation, table.params)
    dist = parse_distribution(table.distribution)
    a, b = dist.quantile_range(TAIL)
    denom = exact = rounded = floor = 0.0
    for k in range(len(table.branches)):
        br = _Branch(act, table, k, a, b, dtype)
        br.table_dist = dist
        denom += br.converged(lambda x: dist.pdf(x) * act.df(x) ** 2)
        here = br.converged(lambda x: dist.pdf(x) * (act.df(x) - br.g(act.f(x), "float64")) ** 2)
        exact += here
        if dtype in ("float16", "bfloat16"):
            e_g, e_x = br.cells16(dtype)
        elif dtype == "float64":
            e_g, e_x = here, 0.0
        else:
            def err(fn, br=br):
                return lambda x: dist.pdf(x) * (act.df(x) - fn(round_to(act.f(x), dtype))) ** 2
            e_g = br.composite(err(lambda y: br.g(y, dtype)), 512)
            e_x = br.composite(err(lambda y: br.exact(y, dtype)), 512)
        rounded += e_g
        floor += e_x
    rel = (lambda e: e / denom if denom > 0 else 0.0)
    return {"relative": rel(exact), "rounded": rel(rounded), "floor": rel(floor), "denominator": denom, "dtype": dtype}
