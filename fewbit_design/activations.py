"""Activation registry (input step): one entry per activation, and everything known about it.

An entry holds f and f' (numpy, float64), the kinks of f', the parameters and their defaults,
the aliases, the torch and jax forwards, the torch.nn and flax module names and arguments, the
transformers names and the fused-kernel flags. The runtimes, convert's maps and ``fewbit-design
list`` are derived from it: adding an activation is one entry here (and its tests).
Defaults and the value of f' at a kink follow torch.nn and torch.autograd (float64).
Every f' here is evaluated stably (the pieces are in activation_math.py).
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

from . import activation_math as m
from .errors import FewbitError
from .labels import format_params, label

__all__ = ["Activation", "ActivationSpec", "REGISTRY", "get_activation", "parse_params"]

QUICK_GELU_K = 1.702          # x·σ(kx): f, f' and both runtimes' forwards below use this one


# ---------------------------------------------------------------- registry

def _fixed(*points):
    return lambda **params: points


@dataclass(frozen=True)
class ActivationSpec:
    """A registry entry: one activation family and everything the package knows about it.

    Modules, convert's maps, the kernels' flags, both runtimes' forwards and ``fewbit-design
    list`` are derived from these entries; tests/test_registry.py checks them against torch.nn
    and transformers.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"gelu"``.
    doc : str
        One-line description.
    defaults : dict of str to float
        Parameter defaults, as in ``torch.nn`` (the keywords of f, f' and both forwards).
    aliases : tuple of str
        Other names `get_activation` takes.
    torch_forward, jax_forward : callable or None
        ``(F, x, **params) -> y`` with ``F = torch.nn.functional``, bit for bit what torch.nn
        computes; ``(jax, x, **params) -> y`` with the ``jax`` module. The framework is passed
        in at call time, so the registry imports neither.
    module, module_doc : str or None
        The torch module's class name (torch.nn's spelling, ``fewbit_design.torch.<module>``)
        and its docstring's first clause (given by the class's first entry).
    select : dict
        Constructor arguments (torch.nn's attribute names) that pick this entry among the
        entries of one class: GELU's ``approximate``.
    inplace : bool
        Whether the constructor takes torch.nn's ``inplace`` (accepted, ignored).
    in_torch_nn : bool
        Whether torch.nn has the class (convert swaps its instances).
    jax_module : str or None
        The flax module's class name (default `module`).
    jax_functions : tuple of str
        Dotted paths of jax functions that compute it (jax.swap_activations swaps them);
        `jax_select` holds their keyword values that pick this entry.
    hf_classes, hf_keys : tuple of str
        transformers.activations class names that compute it (convert matches them by name),
        and the ACT2FN keys whose module computes it.
    fused, fused_param : int, str or None
        ACT id of the fused Triton forward (triton_kernels._activation; 0: y comes from torch),
        and the one parameter that kernel takes.
    """

    name: str
    doc: str
    defaults: dict[str, float]
    _f: Callable = field(repr=False)                       # f(x, **params)
    _df: Callable = field(repr=False)                      # f'(x, **params)
    _kinks: Callable = field(default=_fixed(), repr=False)  # kinks(**params) -> x where f' is not smooth
    _jumps: Callable = field(default=_fixed(), repr=False)  # jumps(**params) -> x where f' is discontinuous
    _check: Callable = field(default=lambda **p: None, repr=False)  # -> message or None
    aliases: tuple[str, ...] = ()
    torch_forward: Callable | None = field(default=None, repr=False)
    jax_forward: Callable | None = field(default=None, repr=False)
    module: str | None = None
    module_doc: str = ""
    select: dict = field(default_factory=dict)
    inplace: bool = True
    in_torch_nn: bool = True
    jax_module: str | None = None
    jax_functions: tuple[str, ...] = ()
    jax_select: dict = field(default_factory=dict)
    hf_classes: tuple[str, ...] = ()
    hf_keys: tuple[str, ...] = ()
    fused: int = 0
    fused_param: str | None = None

    def __post_init__(self):
        if self.jax_module is None:
            object.__setattr__(self, "jax_module", self.module)


def _spec(name, doc, f, df, defaults=None, kinks=_fixed(), jumps=_fixed(), check=lambda **p: None, **rest):
    return ActivationSpec(name, doc, dict(defaults or {}), f, df, kinks, jumps, check, **rest)


def _positive(key):
    return lambda **p: None if p[key] > 0 else f"{key} must be > 0"


_SPECS = [
    _spec("relu", "max(0, x)", lambda x: np.maximum(x, 0.0),
          lambda x: np.where(x > 0, 1.0, 0.0), kinks=_fixed(0.0), jumps=_fixed(0.0),
          torch_forward=lambda F, x: F.relu(x), jax_forward=lambda jax, x: jax.nn.relu(x),
          module="ReLU", module_doc="max(0, x)", jax_functions=("jax.nn.relu",), hf_keys=("relu",), fused=1),
    _spec("leaky_relu", "x for x > 0, negative_slope·x below",
          lambda x, negative_slope: np.where(x > 0, x, negative_slope * x),
          lambda x, negative_slope: np.where(x > 0, 1.0, negative_slope), {"negative_slope": 0.01},
          kinks=lambda negative_slope: () if negative_slope == 1 else (0.0,),
          jumps=lambda negative_slope: () if negative_slope == 1 else (0.0,),
          torch_forward=lambda F, x, negative_slope: F.leaky_relu(x, negative_slope),
          jax_forward=lambda jax, x, negative_slope: jax.nn.leaky_relu(x, negative_slope),
          module="LeakyReLU", module_doc="x for x > 0, negative_slope * x below",
          jax_functions=("jax.nn.leaky_relu",), hf_keys=("leaky_relu",), fused=7, fused_param="negative_slope"),
    _spec("elu", "x for x > 0, alpha·(exp x − 1) below", m.elu_f, m.elu_df, {"alpha": 1.0},
          kinks=_fixed(0.0), jumps=lambda alpha: () if alpha == 1 else (0.0,),
          torch_forward=lambda F, x, alpha: F.elu(x, alpha), jax_forward=lambda jax, x, alpha: jax.nn.elu(x, alpha),
          module="ELU", module_doc="x for x > 0, alpha * (exp(x) - 1) below", jax_functions=("jax.nn.elu",)),
    _spec("celu", "x for x > 0, alpha·(exp(x/alpha) − 1) below",
          lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0) / alpha)),
          lambda x, alpha: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0) / alpha)), {"alpha": 1.0},
          kinks=_fixed(0.0), check=_positive("alpha"),
          torch_forward=lambda F, x, alpha: F.celu(x, alpha), jax_forward=lambda jax, x, alpha: jax.nn.celu(x, alpha),
          module="CELU", module_doc="x for x > 0, alpha * (exp(x / alpha) - 1) below", jax_functions=("jax.nn.celu",)),
    _spec("selu", "scale·elu(x, alpha) with torch's constants",
          lambda x: m.SELU_SCALE * m.elu_f(x, m.SELU_ALPHA),
          lambda x: m.SELU_SCALE * m.elu_df(x, m.SELU_ALPHA), kinks=_fixed(0.0), jumps=_fixed(0.0),
          torch_forward=lambda F, x: F.selu(x), jax_forward=lambda jax, x: jax.nn.selu(x),
          module="SELU", module_doc="scale * elu(x, alpha) with torch's constants", jax_functions=("jax.nn.selu",)),
    _spec("gelu", "x·Φ(x) (erf form)", lambda x: x * m.ndtr(x),
          lambda x: m.ndtr(x) + m.clip40(x) * m.normal_pdf(x), aliases=("gelu_erf",),
          torch_forward=lambda F, x: F.gelu(x), jax_forward=lambda jax, x: jax.nn.gelu(x, approximate=False),
          module="GELU", module_doc="x * Phi(x), or its tanh approximation with ``approximate='tanh'``",
          select={"approximate": "none"}, inplace=False,
          jax_functions=("jax.nn.gelu",), jax_select={"approximate": False},
          hf_classes=("GELUActivation",), hf_keys=("gelu", "gelu_python"), fused=2),
    _spec("gelu_tanh", "x·(1 + tanh(√(2/π)(x + 0.044715x³)))/2 (torch approximate='tanh')",
          m.gelu_tanh_f, m.gelu_tanh_df, aliases=("gelu_new",),
          torch_forward=lambda F, x: F.gelu(x, approximate="tanh"),
          jax_forward=lambda jax, x: jax.nn.gelu(x, approximate=True),
          module="GELU", select={"approximate": "tanh"}, inplace=False, jax_module="GELUTanh",
          jax_functions=("jax.nn.gelu",), jax_select={"approximate": True},
          hf_classes=("NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "FastGELUActivation",
                      "AccurateGELUActivation"),
          hf_keys=("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast", "gelu_accurate"), fused=3),
    _spec("silu", "x·σ(x)", lambda x: m.x_sigmoid_kx(x, 1.0), lambda x: m.x_sigmoid_kx_df(x, 1.0),
          aliases=("swish",), torch_forward=lambda F, x: F.silu(x), jax_forward=lambda jax, x: jax.nn.silu(x),
          module="SiLU", module_doc="x * sigmoid(x)", jax_functions=("jax.nn.silu", "jax.nn.swish"),
          hf_classes=("SiLUActivation",), hf_keys=("silu", "swish"), fused=4),
    _spec("mish", "x·tanh(softplus x)", m.mish_f, m.mish_df,
          torch_forward=lambda F, x: F.mish(x), jax_forward=lambda jax, x: jax.nn.mish(x),
          module="Mish", module_doc="x * tanh(softplus(x))", jax_functions=("jax.nn.mish",),
          hf_classes=("MishActivation",), hf_keys=("mish",)),
    _spec("softplus", "log(1 + exp(beta·x))/beta, x where beta·x > threshold",
          m.softplus_f, m.softplus_df, {"beta": 1.0, "threshold": 20.0},
          kinks=lambda beta, threshold: (threshold / beta,),
          jumps=lambda beta, threshold: (threshold / beta,), check=_positive("beta"),
          torch_forward=lambda F, x, beta, threshold: F.softplus(x, beta, threshold),
          # torch's form, linear where beta·x > threshold (jax.nn.softplus has no threshold: not swapped)
          jax_forward=lambda jax, x, beta, threshold: jax.numpy.where(
              beta * x > threshold, x, jax.nn.softplus(beta * x) / beta),
          module="Softplus", module_doc="log(1 + exp(beta * x)) / beta, x where beta * x > threshold", inplace=False),
    _spec("sigmoid", "σ(x) = 1/(1 + exp(−x))", m.sigmoid, m.sigmoid_prime,
          torch_forward=lambda F, x: x.sigmoid(), jax_forward=lambda jax, x: jax.nn.sigmoid(x),
          module="Sigmoid", module_doc="1 / (1 + exp(-x))", inplace=False, jax_functions=("jax.nn.sigmoid",),
          hf_keys=("sigmoid",), fused=5),
    _spec("tanh", "tanh x", np.tanh, m.sech2,
          torch_forward=lambda F, x: x.tanh(), jax_forward=lambda jax, x: jax.numpy.tanh(x),
          module="Tanh", module_doc="tanh(x)", inplace=False, jax_functions=("jax.numpy.tanh", "flax.nnx.tanh"),
          hf_keys=("tanh",), fused=6),
    _spec("hardtanh", "x clipped to [min_val, max_val]",
          lambda x, min_val, max_val: np.clip(x, min_val, max_val),
          lambda x, min_val, max_val: np.where((x > min_val) & (x < max_val), 1.0, 0.0),
          {"min_val": -1.0, "max_val": 1.0},
          kinks=lambda min_val, max_val: (min_val, max_val),
          jumps=lambda min_val, max_val: (min_val, max_val),
          check=lambda min_val, max_val: None if min_val < max_val else "min_val must be < max_val",
          torch_forward=lambda F, x, min_val, max_val: F.hardtanh(x, min_val, max_val),
          jax_forward=lambda jax, x, min_val, max_val: jax.numpy.clip(x, min_val, max_val),
          module="Hardtanh", module_doc="x clipped to [min_val, max_val]", jax_functions=("jax.nn.hard_tanh",)),
    _spec("hardsigmoid", "0 below −3, x/6 + 1/2, 1 above 3", lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
          lambda x: np.where((x > -3.0) & (x < 3.0), 1.0 / 6.0, 0.0),
          kinks=_fixed(-3.0, 3.0), jumps=_fixed(-3.0, 3.0),
          torch_forward=lambda F, x: F.hardsigmoid(x), jax_forward=lambda jax, x: jax.nn.hard_sigmoid(x),
          module="Hardsigmoid", module_doc="clip(x / 6 + 1/2, 0, 1)", jax_functions=("jax.nn.hard_sigmoid",)),
    _spec("hardswish", "x·hardsigmoid(x)", lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
          m.hardswish_df, kinks=_fixed(-3.0, 3.0), jumps=_fixed(-3.0, 3.0),
          torch_forward=lambda F, x: F.hardswish(x), jax_forward=lambda jax, x: jax.nn.hard_swish(x),
          module="Hardswish", module_doc="x * hardsigmoid(x)", jax_functions=("jax.nn.hard_swish",),
          hf_keys=("hardswish",)),
    _spec("relu6", "min(max(0, x), 6)", lambda x: np.clip(x, 0.0, 6.0),
          lambda x: np.where((x > 0.0) & (x < 6.0), 1.0, 0.0), kinks=_fixed(0.0, 6.0), jumps=_fixed(0.0, 6.0),
          torch_forward=lambda F, x: F.relu6(x), jax_forward=lambda jax, x: jax.nn.relu6(x),
          module="ReLU6", module_doc="min(max(0, x), 6)", jax_functions=("jax.nn.relu6",), hf_keys=("relu6",)),
    _spec("softsign", "x/(1 + |x|)", lambda x: x / (1.0 + np.abs(x)),
          lambda x: (1.0 / (1.0 + np.abs(x))) ** 2, kinks=_fixed(0.0),
          torch_forward=lambda F, x: F.softsign(x), jax_forward=lambda jax, x: jax.nn.soft_sign(x),
          module="Softsign", module_doc="x / (1 + |x|)", inplace=False, jax_functions=("jax.nn.soft_sign",)),
    _spec("logsigmoid", "log σ(x)", lambda x: -m.softplus(-x), lambda x: m.sigmoid(-x),
          torch_forward=lambda F, x: F.logsigmoid(x), jax_forward=lambda jax, x: jax.nn.log_sigmoid(x),
          module="LogSigmoid", module_doc="log(sigmoid(x))", inplace=False, jax_functions=("jax.nn.log_sigmoid",)),
    _spec("tanhshrink", "x − tanh x", lambda x: x - np.tanh(x), lambda x: np.tanh(x) ** 2,
          torch_forward=lambda F, x: F.tanhshrink(x), jax_forward=lambda jax, x: x - jax.numpy.tanh(x),
          module="Tanhshrink", module_doc="x - tanh(x)", inplace=False),
    _spec("quick_gelu", "x·σ(1.702x)", lambda x: m.x_sigmoid_kx(x, QUICK_GELU_K),
          lambda x: m.x_sigmoid_kx_df(x, QUICK_GELU_K),
          torch_forward=lambda F, x: x * (QUICK_GELU_K * x).sigmoid(),
          jax_forward=lambda jax, x: x * jax.nn.sigmoid(QUICK_GELU_K * x),
          module="QuickGELU", module_doc="x * sigmoid(1.702 x) (CLIP, Hugging Face ``quick_gelu``)",
          inplace=False, in_torch_nn=False, hf_classes=("QuickGELUActivation",), hf_keys=("quick_gelu",)),
    _spec("squared_relu", "max(0, x)²", lambda x: np.maximum(x, 0.0) ** 2,
          lambda x: 2.0 * np.maximum(x, 0.0), kinks=_fixed(0.0),
          torch_forward=lambda F, x: F.relu(x).square(), jax_forward=lambda jax, x: jax.numpy.square(jax.nn.relu(x)),
          module="SquaredReLU", module_doc="relu(x)**2 (Primer, Hugging Face ``relu2``)", inplace=False,
          in_torch_nn=False, hf_classes=("ReLUSquaredActivation",), hf_keys=("relu2",)),
]

REGISTRY: dict[str, ActivationSpec] = {spec.name: spec for spec in _SPECS}
_ALIASES = {alias: spec.name for spec in _SPECS for alias in spec.aliases}


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
