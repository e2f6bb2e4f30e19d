"""Activation registry (input step): name -> f, its derivative f', the kinks of f' and the parameters.

Defaults and the value of f' at a kink follow torch.nn and torch.autograd (float64).
Every f' here is evaluated stably: no overflow and no NaN for any finite x.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from .errors import FewbitError
from .labels import format_params, label

__all__ = ["Activation", "ActivationSpec", "REGISTRY", "get_activation", "parse_params"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_GELU_TANH_A, _GELU_TANH_B = math.sqrt(2.0 / math.pi), 0.044715
QUICK_GELU_K = 1.702          # x·σ(kx): the designer and the runtime (torch/reference.py) use this one


# ---------------------------------------------------------------- stable elementwise pieces

def _ndtr(x):
    """Φ(x) elementwise; numba (in special.py) is imported when GELU is first evaluated."""
    from .special import ndtr

    return ndtr(x)


def _clip40(x):
    # np.clip's value, at a third of its call overhead (df runs ~150 times per design)
    return np.minimum(np.maximum(x, -40.0), 40.0)


def _normal_pdf(x):
    x = _clip40(x)  # φ(40) underflows to 0 anyway; avoids x² overflow
    return np.exp(-0.5 * x * x) * 0.3989422804014327


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def _sigmoid_prime(x):
    e = np.exp(-np.abs(x))  # σ(x)σ(-x) = e / (1 + e)², symmetric in x
    return e / (1.0 + e) ** 2


def _softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _sech2(x):
    e = np.exp(-2.0 * np.abs(x))  # 1 − tanh² x without cancellation
    return 4.0 * e / (1.0 + e) ** 2


def _gelu_tanh_2u(x):
    x = np.clip(x, -1e3, 1e3)  # σ(2u) saturates long before; avoids x³ overflow
    return 2.0 * _GELU_TANH_A * (x + _GELU_TANH_B * x**3), x


def _gelu_tanh_df(x):
    # f = x·σ(2u) since (1 + tanh u)/2 = σ(2u); f' = σ(2u) + 2x·u'·σ(2u)σ(−2u)
    two_u, x = _gelu_tanh_2u(x)
    two_du = 2.0 * _GELU_TANH_A * (1.0 + 3.0 * _GELU_TANH_B * x * x)
    return _sigmoid(two_u) + x * two_du * _sigmoid_prime(two_u)


def _mish_parts(x):
    # t = tanh(softplus x) as a ratio of exponentials in e = exp(−|x|); returns t and 1 − t
    e = np.exp(-np.abs(x))
    pos = x >= 0
    den = np.where(pos, 1.0 + 2.0 * e + 2.0 * e * e, e * e + 2.0 * e + 2.0)
    t = np.where(pos, 1.0 + 2.0 * e, e * (e + 2.0)) / den
    return t, np.where(pos, 2.0 * e * e, 2.0) / den


def _mish_df(x):
    t, one_minus_t = _mish_parts(x)
    return t + x * (one_minus_t * (1.0 + t)) * _sigmoid(x)


def _softplus_f(x, beta, threshold):
    bx = beta * x  # torch: linear where beta·x > threshold
    return np.where(bx > threshold, x, _softplus(bx) / beta)


def _softplus_df(x, beta, threshold):
    bx = beta * x
    return np.where(bx > threshold, 1.0, _sigmoid(bx))


def _elu_f(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _elu_df(x, alpha):
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))  # f'(0) = alpha (torch)


def _hardswish_df(x):
    return np.where(x >= 3.0, 1.0, np.where(x > -3.0, x / 3.0 + 0.5, 0.0))  # torch: 0 at −3, 1 at 3


# ---------------------------------------------------------------- registry

def _fixed(*points):
    return lambda **params: points


@dataclass(frozen=True)
class ActivationSpec:
    """A registry entry: an activation family and its parameters.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"gelu"``.
    doc : str
        One-line description.
    defaults : dict of str to float
        Parameter defaults, as in ``torch.nn``.
    """

    name: str
    doc: str
    defaults: dict[str, float]
    _f: Callable = field(repr=False)                       # f(x, **params)
    _df: Callable = field(repr=False)                      # f'(x, **params)
    _kinks: Callable = field(default=_fixed(), repr=False)  # kinks(**params) -> x where f' is not smooth
    _jumps: Callable = field(default=_fixed(), repr=False)  # jumps(**params) -> x where f' is discontinuous
    _check: Callable = field(default=lambda **p: None, repr=False)  # -> message or None


def _spec(name, doc, f, df, defaults=None, kinks=_fixed(), jumps=_fixed(), check=lambda **p: None):
    return ActivationSpec(name, doc, dict(defaults or {}), f, df, kinks, jumps, check)


_SPECS = [
    _spec("relu", "max(0, x)", lambda x: np.maximum(x, 0.0),
          lambda x: np.where(x > 0, 1.0, 0.0), kinks=_fixed(0.0), jumps=_fixed(0.0)),
    _spec("leaky_relu", "x for x > 0, negative_slope·x below",
          lambda x, negative_slope: np.where(x > 0, x, negative_slope * x),
          lambda x, negative_slope: np.where(x > 0, 1.0, negative_slope), {"negative_slope": 0.01},
          kinks=lambda negative_slope: () if negative_slope == 1 else (0.0,),
          jumps=lambda negative_slope: () if negative_slope == 1 else (0.0,)),
    _spec("elu", "x for x > 0, alpha·(exp x − 1) below", _elu_f, _elu_df, {"alpha": 1.0},
          kinks=_fixed(0.0), jumps=lambda alpha: () if alpha == 1 else (0.0,)),
    _spec("celu", "x for x > 0, alpha·(exp(x/alpha) − 1) below",
          lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha)),
          lambda x, alpha: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0) / alpha)), {"alpha": 1.0},
          kinks=_fixed(0.0), check=lambda alpha: None if alpha > 0 else "alpha must be > 0"),
    _spec("selu", "scale·elu(x, alpha) with torch's constants",
          lambda x: _SELU_SCALE * _elu_f(x, _SELU_ALPHA),
          lambda x: _SELU_SCALE * _elu_df(x, _SELU_ALPHA), kinks=_fixed(0.0), jumps=_fixed(0.0)),
    _spec("gelu", "x·Φ(x) (erf form)", lambda x: x * _ndtr(x),
          lambda x: _ndtr(x) + _clip40(x) * _normal_pdf(x)),
    _spec("gelu_tanh", "x·(1 + tanh(√(2/π)(x + 0.044715x³)))/2 (torch approximate='tanh')",
          lambda x: x * _sigmoid(_gelu_tanh_2u(x)[0]), _gelu_tanh_df),
    _spec("silu", "x·σ(x)", lambda x: x * _sigmoid(x),
          lambda x: _sigmoid(x) + x * _sigmoid_prime(x)),
    _spec("mish", "x·tanh(softplus x)", lambda x: x * _mish_parts(x)[0], _mish_df),
    _spec("softplus", "log(1 + exp(beta·x))/beta, x where beta·x > threshold",
          _softplus_f, _softplus_df, {"beta": 1.0, "threshold": 20.0},
          kinks=lambda beta, threshold: (threshold / beta,),
          jumps=lambda beta, threshold: (threshold / beta,),
          check=lambda beta, threshold: None if beta > 0 else "beta must be > 0"),
    _spec("sigmoid", "σ(x) = 1/(1 + exp(−x))", _sigmoid, _sigmoid_prime),
    _spec("tanh", "tanh x", np.tanh, _sech2),
    _spec("hardtanh", "x clipped to [min_val, max_val]",
          lambda x, min_val, max_val: np.clip(x, min_val, max_val),
          lambda x, min_val, max_val: np.where((x > min_val) & (x < max_val), 1.0, 0.0),
          {"min_val": -1.0, "max_val": 1.0},
          kinks=lambda min_val, max_val: (min_val, max_val),
          jumps=lambda min_val, max_val: (min_val, max_val),
          check=lambda min_val, max_val: None if min_val < max_val else "min_val must be < max_val"),
    _spec("hardsigmoid", "0 below −3, x/6 + 1/2, 1 above 3", lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
          lambda x: np.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0),
          kinks=_fixed(-3.0, 3.0), jumps=_fixed(-3.0, 3.0)),
    _spec("hardswish", "x·hardsigmoid(x)", lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
          _hardswish_df, kinks=_fixed(-3.0, 3.0), jumps=_fixed(-3.0, 3.0)),
    _spec("relu6", "min(max(0, x), 6)", lambda x: np.clip(x, 0.0, 6.0),
          lambda x: np.where((x > 0.0) & (x < 6.0), 1.0, 0.0), kinks=_fixed(0.0, 6.0), jumps=_fixed(0.0, 6.0)),
    _spec("softsign", "x/(1 + |x|)", lambda x: x / (1.0 + np.abs(x)),
          lambda x: (1.0 / (1.0 + np.abs(x))) ** 2, kinks=_fixed(0.0)),
    _spec("logsigmoid", "log σ(x)", lambda x: -_softplus(-x), lambda x: _sigmoid(-x)),
    _spec("tanhshrink", "x − tanh x", lambda x: x - np.tanh(x), lambda x: np.tanh(x) ** 2),
    _spec("quick_gelu", "x·σ(1.702x)", lambda x: x * _sigmoid(QUICK_GELU_K * x),
          lambda x: _sigmoid(QUICK_GELU_K * x) + QUICK_GELU_K * x * _sigmoid_prime(QUICK_GELU_K * x)),
    _spec("squared_relu", "max(0, x)²", lambda x: np.maximum(x, 0.0) ** 2,
          lambda x: 2.0 * np.maximum(x, 0.0), kinks=_fixed(0.0)),
]

REGISTRY: dict[str, ActivationSpec] = {spec.name: spec for spec in _SPECS}
_ALIASES = {"swish": "silu", "gelu_erf": "gelu", "gelu_new": "gelu_tanh"}


# ---------------------------------------------------------------- bound activations

@dataclass(frozen=True)
class Activation:
    """An activation bound to parameter values.

    Attributes
    ----------
    name : str
        Registry name, or ``"module:function[:derivative]"`` for a custom activation.
    params : dict of str to float
        Parameter values, all defaults filled in.
    kinks : tuple of float
        Ascending x where f' is not smooth (a kink or a jump of f'); empty if smooth.
    jumps : tuple of float
        The subset of `kinks` where f' itself is discontinuous.
    """

    name: str
    params: dict[str, float]
    kinks: tuple[float, ...] = ()
    jumps: tuple[float, ...] = ()
    _f: Callable = field(default=None, repr=False, compare=False)
    _df: Callable = field(default=None, repr=False, compare=False)

    def __hash__(self):
        return hash((self.name, tuple(sorted(self.params.items()))))

    def __str__(self):
        return label(self.name, self.params)

    def _call(self, fn, x):
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(over="ignore", under="ignore"):
            y = fn(x.ravel(), **self.params)
        return np.asarray(y, dtype=np.float64).reshape(x.shape)

    def f(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the activation elementwise: float64 in, float64 out, same shape."""
        return self._call(self._f, x)

    def df(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the derivative f' elementwise; finite for every finite x."""
        return self._call(self._df, x)

    def to_dict(self) -> dict:
        """Return ``{"name": ..., "params": {...}}``; ``get_activation(**d)`` rebuilds it."""
        return {"name": self.name, "params": dict(self.params)}


def _numerical_derivative(f, x):
    """f'(x) by central differences at h, h/2, h/4, h/8 (h = max(1, |x|)/64), Richardson to O(h⁸)."""
    # error ~1e-13 for smooth f: rounding (eps/h) and truncation (O(h⁸)) balance near h = 1/64
    h = np.maximum(1.0, np.abs(x)) / 64.0 * 0.5 ** np.arange(4)[:, None]   # (4, n)
    xp, xm = x + h, x - h
    y = np.asarray(f(np.concatenate([xp.ravel(), xm.ravel()])), dtype=np.float64)
    d = (y[: xp.size].reshape(xp.shape) - y[xp.size:].reshape(xm.shape)) / (xp - xm)
    for k in (1, 2, 3):  # eliminate the h², h⁴, h⁶ terms in turn
        d = (4.0**k * d[1:] - d[:-1]) / (4.0**k - 1.0)
    return d[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _guarded(fn, label: str):
    """fn, made safe to call from the designer: stdout goes to stderr, SystemExit and any
    exception become FewbitError, and the result must be a real numeric array."""
    def call(x):
        try:
            with contextlib.redirect_stdout(sys.stderr):
                y = fn(x)
        except (Exception, SystemExit) as exc:
            raise FewbitError(f"{label} failed: {_first_line(exc)}") from None
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise FewbitError(f"{label} must return real numbers, returned dtype {y.dtype}")
        return y.astype(np.float64)
    return call


def _custom_activation(name: str, params: Mapping[str, float] | None) -> Activation:
    parts = name.split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise FewbitError(f"custom activation {name!r} must be module:function or module:function:derivative")
    if params:
        raise FewbitError(f"custom activation {name!r} takes no parameters (got {', '.join(params)})")
    module_name, *attrs = parts = [p.strip() for p in parts]
    name = ":".join(parts)
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        importlib.invalidate_caches()
        with contextlib.redirect_stdout(sys.stderr):   # a print at import must not spoil stdout
            module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise FewbitError(f"cannot import module {module_name[:60]!r} for custom activation {name[:80]!r}: "
                          f"{_first_line(exc)}") from None
    finally:
        sys.path.remove(cwd)
    fns = []
    probe = np.linspace(-4.0, 4.0, 9)
    for attr in attrs:
        try:
            fn = functools.reduce(getattr, attr.split("."), module)
        except AttributeError:
            raise FewbitError(f"module {module_name!r} has no attribute {attr!r} (custom activation {name!r})") from None
        if not callable(fn):
            raise FewbitError(f"{module_name}:{attr} is not callable (custom activation {name!r})")
        fn = _guarded(fn, f"{module_name}:{attr}")
        with np.errstate(all="ignore"):
            y = fn(probe.copy())
        if y.shape != probe.shape:
            raise FewbitError(f"{module_name}:{attr} must be elementwise: returned shape {y.shape} "
                              f"for input shape {probe.shape}")
        if not np.all(np.isfinite(y)):
            raise FewbitError(f"{module_name}:{attr} returned non-finite values on np.linspace(-4, 4, 9)")
        fns.append(fn)
    f = fns[0]
    df = fns[1] if len(fns) == 2 else functools.partial(_numerical_derivative, f)
    return Activation(name, {}, (), (), f, df)


def _resolve_params(spec: ActivationSpec, params: Mapping[str, float] | None) -> dict[str, float]:
    values = dict(spec.defaults)
    for key, value in (params or {}).items():
        if key not in spec.defaults:
            known = f"parameters: {', '.join(spec.defaults)}" if spec.defaults else "it takes none"
            raise FewbitError(f"activation {spec.name!r} has no parameter {key!r} ({known})")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FewbitError(f"activation {spec.name!r}: parameter {key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise FewbitError(f"activation {spec.name!r}: parameter {key} must be a finite number, got {value!r}")
        values[key] = number
    problem = spec._check(**values)
    if problem:
        got = format_params(values)
        raise FewbitError(f"activation {spec.name!r}: {problem} (got {got})")
    return values


def get_activation(name: str, params: Mapping[str, float] | None = None) -> Activation:
    """Look up an activation by name and bind its parameters.

    Parameters
    ----------
    name : str
        A registry name (case-insensitive, ``-`` same as ``_``, aliases ``swish``, ``gelu_erf``,
        ``gelu_new``), or ``"module:function"`` / ``"module:function:derivative"`` naming a
        vectorised numpy function importable from the current directory.
    params : mapping of str to float, optional
        Parameter values; missing ones take the torch.nn defaults.

    Returns
    -------
    Activation

    Raises
    ------
    FewbitError
        Unknown name or parameter, a non-finite or out-of-range value, or a custom function
        that cannot be imported or fails on a small test array.
    """
    if not isinstance(name, str):
        raise FewbitError(f"activation name must be a string, got {name!r}")
    if ":" in name:
        return _custom_activation(name.strip(), params)
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in REGISTRY:
        close = difflib.get_close_matches(key, [*REGISTRY, *_ALIASES], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FewbitError(f"unknown activation {name!r}{hint} (fewbit-design list shows all)")
    spec = REGISTRY[key]
    values = _resolve_params(spec, params)
    kinks = tuple(sorted({float(k) for k in spec._kinks(**values)}))
    jumps = tuple(sorted({float(k) for k in spec._jumps(**values)}))
    return Activation(spec.name, values, kinks, jumps, spec._f, spec._df)


def parse_params(items: Iterable[str]) -> dict[str, float]:
    """Parse ``["alpha=0.2", "beta=2"]`` into ``{"alpha": 0.2, "beta": 2.0}``.

    Raises
    ------
    FewbitError
        An item without ``=``, an empty name, a value that is not a number, or a name given twice.
    """
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise FewbitError(f"malformed parameter {item!r} (expected name=value, e.g. alpha=0.5)")
        try:
            number = float(value)
        except ValueError:
            raise FewbitError(f"parameter {key!r}: {value.strip()!r} is not a number") from None
        if key in params:
            raise FewbitError(f"parameter {key!r} given twice")
        params[key] = number
    return params
