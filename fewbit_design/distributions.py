"""Input weights w(x) (input step): the parametric densities, and the spec strings that name any weight.

Parametric families are location-scale: pdf(x) = p((x - loc) / scale) / scale. cdf is
accurate (relatively) in the left tail and sf in the right tail; every family is symmetric
about loc. Empirical weights (``samples:PATH``) live in fewbit_design.samples; their names are
importable from here as well.
"""

from __future__ import annotations

import difflib
import functools
import math
import sys

import numpy as np

from .errors import FewbitError
from .samples import MAX_SAMPLES_BYTES, Samples, load_samples, read_samples, samples_from_array
from .special import _erfc, _log_beta, _t_lower_tail


DISTRIBUTIONS: dict[str, str] = {
    "normal": "normal[:MEAN[,STD]] Gaussian (alias gaussian), default normal:0,1",
    "uniform": "uniform[:A[,B]] flat on [A, B], default uniform:-1,1",
    "laplace": "laplace[:LOC[,SCALE]] double exponential, default laplace:0,1",
    "logistic": "logistic[:LOC[,SCALE]] logistic, default logistic:0,1",
    "student-t": "student-t:DF[,LOC[,SCALE]] Student's t (alias t), DF required, default LOC 0, SCALE 1",
    "samples": "samples:PATH the exact mean over values in .npy, .npz[#KEY], .pt/.pth, .csv/.txt; "
               "weighted mean from an .npz holding arrays 'values' and 'weights'",
}
MIN_T_DF = 0.05      # P(|T| > 1e300) < 1e-14 from here on: the designer's grid ends at ±1e300
_ALIASES = {"gaussian": "normal", "t": "student-t", "student_t": "student-t", "studentt": "student-t"}


def _check_tail(tail: float) -> None:
    if not 0.0 < tail < 0.5:
        raise FewbitError(f"quantile_range: tail must be in (0, 0.5), got {tail}")


def _fmt(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


# ----------------------------------------------------------------------------- parametric

@functools.lru_cache(maxsize=256)
def _left_quantile_std_cached(dist, tail: float) -> float:
    """The standardised left quantile: a pure function of the family, its shape and tail."""
    with np.errstate(over="ignore", under="ignore"):
        return dist._left_quantile_std(tail)


class Distribution:
    """A parametric input weight w, location-scale about `loc` with width `scale`.

    Attributes
    ----------
    name : str
        Canonical family name (a key of `DISTRIBUTIONS`).
    params : dict[str, float]
        Parameters in canonical order.
    spec : str
        Canonical spec string; ``parse_distribution(d.spec) == d``.
    kinks : tuple of float
        Ascending points where the pdf is not smooth.
    support : tuple of float
        ``(lo, hi)`` outside which the pdf is 0.
    """

    name = ""
    _param_names: tuple[str, ...] = ()
    _defaults: tuple[float, ...] = ()   # values of the trailing parameters when omitted
    kinks: tuple[float, ...] = ()
    support: tuple[float, float] = (-math.inf, math.inf)

    def __init__(self, *values: float):
        names, required = self._param_names, len(self._param_names) - len(self._defaults)
        if not required <= len(values) <= len(names):
            count = str(required) if required == len(names) else f"{required} to {len(names)}"
            raise FewbitError(f"{self.name}: expected {count} parameters ({', '.join(names)}), "
                              f"got {len(values)}")
        values = tuple(values) + self._defaults[len(values) - required:]
        self.params = {}
        for n, v in zip(names, values):
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise FewbitError(f"{self.name}: parameter {n} = {v!r} is not a number") from None
            if not math.isfinite(v):
                raise FewbitError(f"{self.name}: parameter {n} = {v} is not finite")
            self.params[n] = v + 0.0   # -0.0 -> 0.0: equal params give equal specs
        self._check()

    def _check(self) -> None:
        if self.scale <= 0:
            raise FewbitError(f"{self.name}: {self._param_names[-1]} must be > 0, got {self.scale}")

    # location and scale are the last two parameters (uniform overrides both)
    loc = property(lambda self: self.params[self._param_names[-2]])
    scale = property(lambda self: self.params[self._param_names[-1]])

    @property
    def spec(self) -> str:
        return f"{self.name}:{','.join(_fmt(v) for v in self.params.values())}"

    def _z(self, x) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (np.asarray(x, dtype=np.float64) - self.loc) / self.scale

    def pdf(self, x) -> np.ndarray:
        """Density at `x` (array-like), float64, 0 outside the support."""
        with np.errstate(over="ignore", under="ignore"):
            return self._pdf_std(self._z(x)) / self.scale

    def cdf(self, x) -> np.ndarray:
        """P(X <= x), relatively accurate in the left tail."""
        with np.errstate(over="ignore", under="ignore"):
            return self._cdf_std(self._z(x))

    def sf(self, x) -> np.ndarray:
        """P(X > x) = 1 - cdf(x), relatively accurate in the right tail."""
        with np.errstate(over="ignore", under="ignore"):
            return self._cdf_std(-self._z(x))   # every family is symmetric about loc

    def quantile_range(self, tail: float) -> tuple[float, float]:
        """``(lo, hi)`` with ``cdf(lo) = tail`` and ``sf(hi) = tail``, within the support.

        Parameters
        ----------
        tail : float
            Probability left out on each side, ``0 < tail < 0.5``.

        Where the quantile lies beyond the double range (t with df below ~1 and a tiny tail)
        the largest finite double is returned, and ``cdf(lo) > tail`` there.
        """
        _check_tail(tail)
        z = _left_quantile_std_cached(self, float(tail))
        big = sys.float_info.max
        return max(self.loc + self.scale * z, -big), min(self.loc - self.scale * z, big)

    def _left_quantile_std(self, tail: float) -> float:
        """Bisection for z < 0 with cdf_std(z) = tail, to adjacent floats."""
        cdf = lambda z: float(self._cdf_std(np.array([z]))[0])  # noqa: E731
        lo, hi = -1.0, 0.0
        while cdf(lo) > tail:
            lo, hi = 2.0 * lo, lo
            if lo == -math.inf:
                return lo
        for _ in range(2200):
            mid = 0.5 * (lo + hi)
            if mid == lo or mid == hi:
                break
            lo, hi = (lo, mid) if cdf(mid) > tail else (mid, hi)
        return lo if abs(cdf(lo) - tail) <= abs(cdf(hi) - tail) else hi

    def to_dict(self) -> dict:
        """``{"name": ..., "params": {...}}``, JSON-ready."""
        return {"name": self.name, "params": dict(self.params)}

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.params == other.params

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return f"Distribution({self.spec!r})"


class Normal(Distribution):
    name, _param_names, _defaults = "normal", ("mean", "std"), (0.0, 1.0)

    def _pdf_std(self, z):
        return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    def _cdf_std(self, z):
        return 0.5 * _erfc(-z / math.sqrt(2.0))   # erfc, not 1 - erf: relative accuracy in the tail


class Uniform(Distribution):
    name, _param_names, _defaults = "uniform", ("a", "b"), (-1.0, 1.0)

    def _check(self):
        if not self.params["a"] < self.params["b"]:
            raise FewbitError(f"uniform: need a < b, got a = {self.params['a']}, b = {self.params['b']}")
        if not math.isfinite(self.params["b"] - self.params["a"]):
            raise FewbitError("uniform: b - a overflows")

    loc = property(lambda self: 0.5 * (self.params["a"] + self.params["b"]))
    scale = property(lambda self: self.params["b"] - self.params["a"])
    kinks = property(lambda self: (self.params["a"], self.params["b"]))
    support = property(lambda self: (self.params["a"], self.params["b"]))

    def pdf(self, x):
        x = np.asarray(x, dtype=np.float64)
        a, b = self.support
        return np.where((x >= a) & (x <= b), 1.0 / (b - a), 0.0)

    # (x - a) / (b - a) directly: relative accuracy next to a, which loc/scale would lose
    def cdf(self, x):
        with np.errstate(over="ignore", invalid="ignore"):
            return np.clip((np.asarray(x, dtype=np.float64) - self.params["a"]) / self.scale, 0.0, 1.0)

    def sf(self, x):
        with np.errstate(over="ignore", invalid="ignore"):
            return np.clip((self.params["b"] - np.asarray(x, dtype=np.float64)) / self.scale, 0.0, 1.0)

    def quantile_range(self, tail):
        _check_tail(tail)
        a, b = self.support
        return a + tail * (b - a), b - tail * (b - a)


class Laplace(Distribution):
    name, _param_names, _defaults = "laplace", ("loc", "scale"), (0.0, 1.0)
    kinks = property(lambda self: (self.loc,))

    def _pdf_std(self, z):
        return 0.5 * np.exp(-np.abs(z))

    def _cdf_std(self, z):
        e = 0.5 * np.exp(-np.abs(z))
        return np.where(z < 0, e, 1.0 - e)

    def _left_quantile_std(self, tail):
        return math.log(2.0 * tail)


class Logistic(Distribution):
    name, _param_names, _defaults = "logistic", ("loc", "scale"), (0.0, 1.0)

    def _pdf_std(self, z):
        e = np.exp(-np.abs(z))
        return e / (1.0 + e) ** 2

    def _cdf_std(self, z):
        e = np.exp(-np.abs(z))   # in (0, 1]: no overflow for any z
        return np.where(z < 0, e / (1.0 + e), 1.0 / (1.0 + e))

    def _left_quantile_std(self, tail):
        return math.log(tail) - math.log1p(-tail)


class StudentT(Distribution):
    name, _param_names, _defaults = "student-t", ("df", "loc", "scale"), (0.0, 1.0)

    def _check(self):
        super()._check()
        if not self.params["df"] >= MIN_T_DF:
            raise FewbitError(f"student-t: df must be >= {MIN_T_DF} (heavier tails put mass beyond "
                              f"the double range), got {self.params['df']}")
        df = self.params["df"]
        self._log_beta = _log_beta(0.5 * df, 0.5)
        self._log_pdf0 = -0.5 * math.log(df) - self._log_beta

    def _pdf_std(self, z):
        df = self.params["df"]
        r = z * z / df
        big = r == np.inf   # there log1p(r) = 2 log|z| - log df + log1p(1 / r), the last 0
        l1 = np.where(big, 2.0 * np.log(np.where(big, np.abs(z), 1.0)) - math.log(df), np.log1p(r))
        return np.exp(self._log_pdf0 - 0.5 * (df + 1.0) * l1)

    def _cdf_std(self, z):
        tail = _t_lower_tail(z, self.params["df"], self._log_beta)
        return np.where(z <= 0, tail, 1.0 - tail)


_FAMILIES = {cls.name: cls for cls in (Normal, Uniform, Laplace, Logistic, StudentT)}


# ----------------------------------------------------------------------------- parsing

def parse_distribution(spec: str) -> Distribution | Samples:
    """Parse ``"NAME[:P1,P2,...]"`` or ``"samples:PATH"`` (see `DISTRIBUTIONS`).

    Raises
    ------
    FewbitError
        Unknown name, wrong parameter count, non-numeric or invalid parameters, unreadable samples.
    """
    if not isinstance(spec, str):
        raise FewbitError(f"distribution spec must be a string, got {type(spec).__name__}")
    head, _, rest = spec.strip().partition(":")
    name = head.strip().lower()
    name = _ALIASES.get(name, name)
    if name == "samples":
        path = rest.strip()
        if not path:
            raise FewbitError("samples: missing path (use samples:PATH)")
        return read_samples(path)
    if name not in _FAMILIES:
        known = sorted(set(DISTRIBUTIONS) | set(_ALIASES))
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise FewbitError(f"unknown distribution {head.strip()!r}{hint} (known: {', '.join(DISTRIBUTIONS)})")
    values = [v.strip() for v in rest.split(",")] if rest.strip() else []
    if any(v == "" for v in values):
        raise FewbitError(f"{name}: empty parameter in {spec.strip()!r}")
    return _FAMILIES[name](*values)


__all__ = ["DISTRIBUTIONS", "MIN_T_DF", "Distribution", "Normal", "Uniform", "Laplace", "Logistic", "StudentT",
           "parse_distribution",
           # the samples, defined in fewbit_design.samples
           "MAX_SAMPLES_BYTES", "Samples", "load_samples", "read_samples", "samples_from_array"]
