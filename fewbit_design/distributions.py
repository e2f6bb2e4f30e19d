"""Input weights w(x) (input step): parametric densities and empirical samples, parsed from spec strings.

Parametric families are location-scale: pdf(x) = p((x - loc) / scale) / scale. cdf is
accurate (relatively) in the left tail and sf in the right tail; every family is symmetric
about loc. The designer needs numpy and numba only; .pt files are read by fewbit_design.torch.samples, loaded only for them.
"""

from __future__ import annotations

import difflib
import hashlib
import functools
import math
import os
import re
import sys
import warnings
import zipfile

import numpy as np

from .errors import FewbitError
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


# ----------------------------------------------------------------------------- samples

class Samples:
    """An empirical input distribution: values with optional non-negative weights.

    The objective is the weighted mean over the values, Σ wᵢ (f'(xᵢ) − q(xᵢ))² / Σ wᵢ, with
    wᵢ = 1 for plain samples (so integer weights are the same as repeated values).

    Attributes
    ----------
    values : numpy.ndarray
        Sorted, finite, read-only float64 values.
    weights : numpy.ndarray or None
        Positive, finite, read-only float64 weights aligned with `values`; None for plain samples.
    params : dict
        ``{"path": str, "count": int, "sha256": str}``, plus ``"weighted": 1`` with weights; the
        digest is over ``values.tobytes()`` (then ``weights.tobytes()``).
    spec : str
        ``"samples:PATH"``.
    """

    name = "samples"

    def __init__(self, values: np.ndarray, path: str, weights: np.ndarray | None = None):
        values = np.ascontiguousarray(values, dtype=np.float64)
        values.setflags(write=False)
        self.values = values
        h = hashlib.sha256(values.tobytes())
        if weights is not None:
            weights = np.ascontiguousarray(weights, dtype=np.float64)
            if weights.shape != values.shape:
                raise FewbitError(f"{path}: {weights.size} weights for {values.size} values")
            weights.setflags(write=False)
            h.update(weights.tobytes())
        self.weights = weights
        self.params = {"path": path, "count": int(values.size), "sha256": h.hexdigest()}
        if weights is not None:
            self.params["weighted"] = 1

    @property
    def spec(self) -> str:
        return f"samples:{self.params['path']}"

    def to_dict(self) -> dict:
        """``{"name": "samples", "params": {"path", "count", "sha256"[, "weighted"]}}``."""
        return {"name": self.name, "params": dict(self.params)}

    def __eq__(self, other) -> bool:
        return isinstance(other, Samples) and self.params["sha256"] == other.params["sha256"]

    def __hash__(self) -> int:
        return hash(self.params["sha256"])

    def __repr__(self) -> str:
        w = ", weighted" if self.weights is not None else ""
        return f"Samples({self.params['path']!r}, count={self.values.size}{w})"


def _checked(values, source: str, weights=None):
    """Flattened finite float64 values, sorted; FewbitError for anything unusable.

    With `weights` (same size, finite, >= 0) returns ``(values, weights)``: values without
    weight are dropped, and the weights follow their values through the sort.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise FewbitError(f"{source}: values must be numeric (int or float), got dtype {values.dtype}")
    values = values.astype(np.float64).ravel()
    n = values.size
    if n == 0:
        raise FewbitError(f"{source}: no values")
    if weights is not None:
        weights = _checked_weights(weights, n, source)
    finite = np.isfinite(values)
    k = n - int(finite.sum())
    if k == n:
        raise FewbitError(f"{source}: all {n} values are NaN or infinite")
    if k:
        warnings.warn(f"{source}: dropped {k} non-finite values of {n}", stacklevel=3)
        values = values[finite]
        weights = None if weights is None else weights[finite]
    if weights is not None:
        live = weights > 0
        if not live.any():
            raise FewbitError(f"{source}: every weight of a finite value is 0")
        order = np.argsort(values[live], kind="stable")
        values, weights = values[live][order], weights[live][order]
    else:
        values = np.sort(values)
    if values[0] == values[-1]:
        raise FewbitError(f"{source}: all values are equal ({values[0]!r}); need a spread")
    return values if weights is None else (values, weights)


def _checked_weights(weights, n: int, source: str) -> np.ndarray:
    weights = np.asarray(weights)
    if weights.dtype.kind not in "fiu":
        raise FewbitError(f"{source}: weights must be numeric (int or float), got dtype {weights.dtype}")
    weights = weights.astype(np.float64).ravel()
    if weights.size != n:
        raise FewbitError(f"{source}: {weights.size} weights for {n} values")
    if not np.all(np.isfinite(weights)):
        raise FewbitError(f"{source}: weights must be finite")
    if np.any(weights < 0):
        raise FewbitError(f"{source}: weights must be >= 0, got {weights.min()!r}")
    return weights


MAX_SAMPLES_BYTES = 2 ** 28     # 256 MiB of values (33M float64), checked before reading or inflating
_HEADER = re.compile(r"[\"']?[A-Za-z_][\w .\-]*[\"']?")


def _check_size(path: str, nbytes: int, what: str) -> None:
    if nbytes > MAX_SAMPLES_BYTES:
        raise FewbitError(f"{path}: {what} {nbytes / 2**20:.0f} MiB, over the samples limit of "
                          f"{MAX_SAMPLES_BYTES / 2**20:.0f} MiB")


def _check_zip_members(path: str) -> None:
    """Refuse archives whose members would inflate beyond the limit (checked before inflating)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            _check_size(path, sum(i.file_size for i in zf.infolist()), "inflates to")


def _read_text(path: str, csv: bool) -> np.ndarray:
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    values, header_ok = [], csv
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values.append(float(line))
        except ValueError:
            # only a first line that reads as a column name is a header; anything else is bad data
            if header_ok and not values and _HEADER.fullmatch(line):
                header_ok = False
                continue
            raise FewbitError(f"{path}: line {i} is not a number: {line[:40]!r}") from None
        header_ok = False
    return np.array(values, dtype=np.float64)


def _read_npy(path: str) -> np.ndarray:
    with open(path, "rb") as fh:   # our handle: np.load leaks its own on a corrupt file
        values = np.load(fh, allow_pickle=False)
    if not isinstance(values, np.ndarray):   # np.load also opens zip archives
        raise FewbitError(f"{path}: not a .npy array file (an .npz archive?)")
    return values


def _read_npz(path: str, key: str | None) -> np.ndarray:
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
        keys = list(npz.files)
        if key is None and sorted(keys) == ["values", "weights"]:
            return npz["values"], npz["weights"]     # weighted samples
        if key is None and len(keys) != 1:
            raise FewbitError(f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
                              f"pick one with samples:{path}#KEY")
        if key is not None and key not in keys:
            raise FewbitError(f"{path}: no array {key!r}; it holds {', '.join(keys) or 'none'}")
        return npz[keys[0] if key is None else key]


def _read_torch(path: str) -> np.ndarray:
    try:
        from .torch.samples import read_samples
    except ImportError:
        raise FewbitError(f"{path}: reading .pt/.pth files needs torch (pip install torch)") from None
    return read_samples(path)


def load_samples(path: str) -> np.ndarray:
    """Read sample values from a file: sorted finite float64, non-finite ones dropped with a warning.

    A weighted file (an ``.npz`` holding exactly ``values`` and ``weights``) is refused here:
    read it with `read_samples`.

    Parameters
    ----------
    path : str
        ``.npy``, ``.npz`` (``file.npz#KEY`` picks an array), ``.pt``/``.pth`` (a tensor, or a
        dict/list holding exactly one), ``.csv``/``.txt`` (one value a line, ``#`` comments; a
        ``.csv`` may start with a header line). Any shape is flattened; no code in the file runs.

    Raises
    ------
    FewbitError
        Missing, unreadable or corrupt file, unknown extension, non-numeric values, no finite
        values, or all values equal.
    """
    values = _load(path)
    if isinstance(values, tuple):
        raise FewbitError(f"{os.fspath(path)}: holds values and weights; read it with read_samples")
    return _checked(values, os.fspath(path))


def read_samples(path: str) -> Samples:
    """`Samples` from a file: plain values (see `load_samples`), or weighted ones from an
    ``.npz`` holding exactly two arrays, ``values`` and ``weights`` (same size, finite, >= 0).
    """
    path = os.fspath(path)
    data = _load(path)
    if isinstance(data, tuple):
        values, weights = _checked(data[0], path, data[1])
        return Samples(values, path, weights)
    return Samples(_checked(data, path), path)


def _load(path):
    """The raw array of a samples file, or (values, weights) for a weighted .npz."""
    path = os.fspath(path)
    file, key = path, None
    if "#" in path and path.rsplit("#", 1)[0].lower().endswith(".npz"):
        file, key = path.rsplit("#", 1)
    ext = os.path.splitext(file)[1].lower()
    if not os.path.exists(file):
        raise FewbitError(f"{file}: no such file")
    if os.path.isdir(file):
        raise FewbitError(f"{file}: is a directory, not a samples file")
    _check_size(file, os.path.getsize(file), "is")
    if ext in (".npz", ".pt", ".pth"):
        try:
            _check_zip_members(file)
        except FewbitError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            pass                          # not a readable archive: the reader says what is wrong
    readers = {".npy": lambda: _read_npy(file), ".npz": lambda: _read_npz(file, key),
               ".pt": lambda: _read_torch(file), ".pth": lambda: _read_torch(file),
               ".csv": lambda: _read_text(file, csv=True), ".txt": lambda: _read_text(file, csv=False)}
    if ext not in readers:
        raise FewbitError(f"{file}: unknown samples extension {ext or '(none)'!r}; "
                          f"use one of {', '.join(readers)}")
    try:
        values = readers[ext]()
    except FewbitError:
        raise
    except Exception as exc:  # corrupt or unreadable: report, never a traceback
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise FewbitError(f"{file}: cannot read {ext} file: {detail}") from None
    return values


def samples_from_array(values, *, weights=None, source: str = "array") -> Samples:
    """A `Samples` from an array-like, with the same checks as `load_samples`.

    Parameters
    ----------
    values : array-like
        Numeric values of any shape.
    weights : array-like, optional
        Non-negative finite weights, one per value (any shape of the same size); values of
        weight 0 are dropped. Integer weights are the same as repeating values.
    source : str
        Name used in `params["path"]` and in messages.
    """
    if weights is None:
        return Samples(_checked(values, source), source)
    values, weights = _checked(values, source, weights)
    return Samples(values, source, weights)


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
