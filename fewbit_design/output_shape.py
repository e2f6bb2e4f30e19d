"""Output tables, shape step: where f' can be read back from y = f(x) plus a branch bit.

Found numerically from f and f' on the nodes of the designer's grid, with no per-activation
code: the sets of positive mass where f is constant ("flats": y says exactly where x is, so
f' must be constant there), the extrema of f (sign changes of f' away from the flats: none
means monotone, 0 branch bits; one is the branch point, 1 bit; more is refused), and per
branch the variable t = sign(y - y0)·|y - y0|^(1/p) in which f'(f⁻¹(y)) is smooth: p - 1 is
the order of the zero of f' at a stationary point x0 of the branch (p = 2 at a minimum,
p = 3 at an inflection where f' touches 0), p = 1 (t = y) without one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from .cells import _GL_W, _GL_X
from .errors import FewbitError

FLAT_MASS = 1e-15        # a flat with less mass than this is no set of positive mass: left to the fit
SIGNIFICANT = 1e-12      # |f'| below this times max|f'| has no reliable sign (far tails)
STATIONARY = 1e-3        # f' at 1e-4 from a branch end below this times max|f'|: a stationary end
MAX_POWER = 4


@dataclass(frozen=True)
class Flat:
    """A set [lo, hi] of x with mass > FLAT_MASS on which f = y and f' = df (both constant)."""

    lo: float
    hi: float
    y: float
    df: float
    mass: float


@dataclass(frozen=True)
class Branch:
    """x in (lo, hi), where f is monotone; g is a function of t = sign(y - y0)·|y - y0|^(1/power)."""

    lo: float
    hi: float
    y0: float
    power: int
    increasing: bool
    flats: tuple[Flat, ...] = ()


@dataclass(frozen=True)
class Shape:
    """The branches of f (one if monotone, two split at the branch point) and the branch point."""

    branches: tuple[Branch, ...]
    branch_point: tuple[float, float] | None   # (x0, y0) of the one extremum, None if monotone
    kind: str                                  # "monotone", "minimum" or "maximum"


def t_of(y, y0: float, power: int) -> np.ndarray:
    """The segment variable t = sign(y - y0)·|y - y0|^(1/power) (t = y - y0 for power 1)."""
    d = np.asarray(y, dtype=np.float64) - y0
    if power == 1:
        return d
    if power == 3:
        return np.cbrt(d)
    return np.sign(d) * np.abs(d) ** (1.0 / power)


def nodes(act, dist, edges: np.ndarray):
    """(x, w) Gauss–Legendre nodes and weights w·pdf on every cell of edges, (cells, GL order)."""
    a, b = edges[:-1], edges[1:]
    half = 0.5 * (b - a)
    x = (0.5 * (a + b))[:, None] + half[:, None] * _GL_X
    return x, dist.pdf(x) * (half[:, None] * _GL_W)


def find_shape(act, dist, edges: np.ndarray) -> Shape:
    """The flats, branches and branch point of f under the weight (see the module docstring).

    Raises FewbitError where y plus one bit cannot give f' back: more than one extremum, or a
    flat on which f' is not constant.
    """
    x, w = nodes(act, dist, edges)
    fx, fe = act.f(x), act.f(edges)
    d = act.df(x)
    flats = _flats(act, edges, x, w, fx, fe, d)
    on_flat = np.zeros(x.shape, dtype=bool)
    for fl in flats:
        on_flat |= (x >= fl.lo) & (x <= fl.hi)
    live = ~on_flat & (w > 0)
    scale = float(np.max(np.abs(d[live]))) if live.any() else 0.0
    sig = live & (np.abs(d) > SIGNIFICANT * scale)
    xs, sign = x[sig], np.sign(d[sig])
    turns = np.flatnonzero(sign[1:] != sign[:-1])
    if turns.size > 1:
        where = ", ".join(f"{0.5 * (xs[i] + xs[i + 1]):.3g}" for i in turns[:4])
        raise FewbitError(f"{act.name}: f has {turns.size} minima and maxima under {dist.spec} (near x = {where}): "
                          "y plus one branch bit cannot tell f' apart there; use a table over the input")
    lo_x, hi_x = float(edges[0]), float(edges[-1])
    if turns.size == 0:
        inc = bool(sign.size == 0 or sign[0] > 0)
        y0, p = _variable(act, dist, flats, lo_x, hi_x, scale, x[live], d[live])
        return Shape((Branch(-np.inf, np.inf, y0, p, inc, flats),), None, "monotone")
    i = int(turns[0])
    a, b = float(xs[i]), float(xs[i + 1])
    between = [fl for fl in flats if a <= fl.lo and fl.hi <= b]
    if between:             # the extremum is a flat: it belongs to the branch above
        x0, y0, x_end = between[0].lo, between[0].y, between[0].hi
    else:
        x0 = _root(act.df, a, b)
        y0, x_end = float(act.f(np.array([x0]))[0]), x0
    kind = "minimum" if sign[i] < 0 else "maximum"
    below = [fl for fl in flats if fl.hi <= x0]
    above = [fl for fl in flats if fl.lo >= x0]
    pb = _power(act, x0, -1, scale)
    pa = _power(act, x_end, +1, scale)
    return Shape((Branch(-np.inf, x0, y0, pb, kind == "maximum", tuple(below)),
                  Branch(x0, np.inf, y0, pa, kind == "minimum", tuple(above))), (x0, y0), kind)


def _at(fn, x: float) -> float:
    return float(fn(np.array([x]))[0])


def _root(fn, a: float, b: float) -> float:
    """A sign change of fn in [a, b] (fn(a), fn(b) of opposite signs), by bisection to the last double."""
    sa = np.sign(_at(fn, a))
    while True:
        m = 0.5 * (a + b)
        if m in (a, b):
            return a if abs(_at(fn, a)) <= abs(_at(fn, b)) else b
        fm = _at(fn, m)
        if fm == 0:
            return m
        a, b = (m, b) if np.sign(fm) == sa else (a, m)


def _smallest(fn, a: float, b: float) -> tuple[float, float]:
    """(x, fn(x)) at the minimum of a unimodal fn on [a, b], by golden-section search."""
    r = 0.5 * (np.sqrt(5.0) - 1.0)
    for _ in range(120):            # the bracket shrinks by 0.618 a step: far below a double's spacing
        c, d = b - r * (b - a), a + r * (b - a)
        a, b = (a, d) if fn(c) < fn(d) else (c, b)
    x = 0.5 * (a + b)
    return x, fn(x)


def _flats(act, edges, x, w, fx, fe, d) -> tuple[Flat, ...]:
    """Maximal runs of cells on which f is constant, their ends found to the last double."""
    const = np.all(fx == fe[:-1, None], axis=1) & (fe[1:] == fe[:-1])
    out = []
    j, n = 0, const.size
    while j < n:
        if not const[j]:
            j += 1
            continue
        k = j
        while k + 1 < n and const[k + 1] and fe[k + 1] == fe[j]:
            k += 1
        c = float(fe[j]) + 0.0          # -0.0 and 0.0 are one value of y
        lo = _flat_end(act, c, float(edges[j]), float(edges[j - 1]) if j > 0 else None)
        hi = _flat_end(act, c, float(edges[k + 1]), float(edges[k + 2]) if k + 2 < edges.size else None)
        mass = float(w[j:k + 1].sum())
        if mass > FLAT_MASS:
            df = d[j:k + 1]
            spread = float(df.max() - df.min())
            if spread > 1e-12 * max(1.0, float(np.abs(df).max())):
                raise FewbitError(f"{act.name}: f = {c:.6g} on x in [{lo:.4g}, {hi:.4g}] (mass {mass:.2g}) but f' takes "
                                  f"values {df.min():.6g} to {df.max():.6g} there: y cannot tell them apart")
            out.append(Flat(lo, hi, c, float(np.median(df)), mass))
        j = k + 1
    return tuple(out)


def _flat_end(act, c: float, inside: float, outside: float | None) -> float:
    """The end of the set where f = c, between `inside` (f = c) and `outside` (a cell edge beyond)."""
    if outside is None or float(act.f(np.array([outside]))[0]) == c:
        return inside
    a, b = inside, outside
    for _ in range(200):            # bisection on "f(x) == c"
        m = 0.5 * (a + b)
        if m in (a, b):
            break
        if float(act.f(np.array([m]))[0]) == c:
            a = m
        else:
            b = m
    return a


def _power(act, x0: float, direction: int, scale: float) -> int:
    """p with |f'(x0 + δ)| ~ |δ|^(p-1) on the side `direction` of x0 (1 where f' does not vanish there)."""
    if scale <= 0:
        return 1
    h = 1e-4 * max(1.0, abs(x0))
    v = np.abs(act.df(np.array([x0 + direction * h, x0 + direction * h / 2])))
    if not (v[0] <= STATIONARY * scale) or v[1] <= 0:
        return 1
    order = float(np.log2(v[0] / v[1]))
    k = round(order)
    return 1 + k if abs(order - k) < 0.25 and 1 <= k < MAX_POWER else 1


def _variable(act, dist, flats, lo_x, hi_x, scale, xs, ds) -> tuple[float, int]:
    """(y0, p) for a monotone f: at the stationary point with the most weight near it, else (0, 1).

    Candidates: the ends of the flats (f' may vanish as x leaves them) and the interior
    local minima of |f'| that reach 0 (f' touching 0 without changing sign).
    """
    cands = []
    for fl in flats:
        for end, direction in ((fl.lo, -1), (fl.hi, +1)):
            if lo_x < end < hi_x:
                cands.append((end, direction))
    a = np.abs(ds)
    for i in np.flatnonzero((a[1:-1] < a[:-2]) & (a[1:-1] < a[2:]) & (a[1:-1] < STATIONARY * scale)) + 1:
        x, value = _smallest(lambda v: abs(_at(act.df, v)), float(xs[i - 1]), float(xs[i + 1]))
        if value <= SIGNIFICANT * scale:
            cands.append((x, +1))
    best = (0.0, 1, -1.0)
    for end, direction in cands:
        p = _power(act, end, direction, scale)
        mass = float(dist.pdf(np.array([end]))[0])
        if p > 1 and mass > best[2]:
            best = (float(act.f(np.array([end]))[0]), p, mass)
    return best[0], best[1]
