"""JAX runtime, flax modules: one nnx.Module class per registry activation, generated from the
registry (fewbit_design/activations.py), and a swap of activation-function attributes.

    act = fewbit_design.jax.modules.GELU(bits=3)       # or table=Table / "path.json"
    y = act(x)                                          # jax.nn.gelu(x) forward, 3-bit backward
"""

from __future__ import annotations

import functools
import importlib
import inspect

from flax import nnx

from ..activations import REGISTRY
from ..errors import FewbitError
from .functional import JAX_FORWARD, fewbit_activation
from .tables import resolve_table

__all__ = ["FewbitActivation", "MODULES", "swap_activations"]

class _Static:
    """A Table held as static module data: hashed and compared by identity (Table is unhashable)."""

    def __init__(self, table):
        self.table = table

    def __hash__(self):
        return id(self.table)

    def __eq__(self, other):
        return isinstance(other, _Static) and other.table is self.table

    def __repr__(self):
        t = self.table
        return f"{t.activation}, {t.bits} bits, {t.partition}"


class FewbitActivation(nnx.Module):
    """f(x) with a few-bit backward; the subclasses below fix `activation`.

    Parameters (keyword-only)
    ----------
    bits : int, optional
        Code width 1..8 for the shipped/default table (default 3); must agree with `table`.
    table : Table or path, optional
        The table to use; checked against the activation and its parameters.
    **params : float
        Activation parameters (e.g. negative_slope=0.2); registry defaults otherwise.
    """

    activation: str = ""

    def __init__(self, *, bits: int | None = None, table=None, **params):
        self._table = _Static(resolve_table(self.activation, params, bits, table))

    @property
    def table(self):
        return self._table.table

    def __call__(self, x):
        return fewbit_activation(x, self.table)

    def __repr__(self):
        return f"{type(self).__name__}({self._table!r})"


def _make(name: str) -> type:
    spec = REGISTRY[name]
    cls = type(spec.jax_module, (FewbitActivation,),
               {"activation": name, "__doc__": f"{spec.doc}, with a few-bit backward "
                f"(parameters: {', '.join(spec.defaults) or 'none'}).", "__module__": __name__})
    return cls


MODULES = {name: _make(name) for name in REGISTRY if name in JAX_FORWARD}
globals().update({cls.__name__: cls for cls in MODULES.values()})
__all__ += [cls.__name__ for cls in MODULES.values()]


def _jax_function(path: str):
    """The function at a dotted path ("jax.nn.gelu"), or None where this jax or flax lacks it."""
    owner, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(owner), attr, None)
    except ImportError:
        return None


def _swap_targets() -> dict:
    """jax function -> the registry entries it computes (their `jax_functions`), for attributes
    called as act(x)."""
    out: dict = {}
    for spec in REGISTRY.values():
        for path in spec.jax_functions:
            fn = _jax_function(path)
            if fn is not None and spec not in out.setdefault(fn, []):
                out[fn].append(spec)
    return out


def _target(value, targets: dict):
    """(registry name, params) that `value` computes, or None. A keyword the function takes
    that is a registry parameter is passed on; one in the entries' `jax_select` picks the entry,
    jax's default deciding where it is not given (jax.nn.gelu is approximate=True: gelu_tanh)."""
    fn, kwargs = value, {}
    if isinstance(value, functools.partial):
        if value.args:
            return None
        fn, kwargs = value.func, dict(value.keywords)
    try:
        entries = targets.get(fn)
    except TypeError:      # unhashable attribute
        return None
    if entries is None:
        return None
    try:
        taken = inspect.signature(fn).parameters
    except (TypeError, ValueError):    # no signature to read: no keyword is taken
        taken = {}
    chosen = {k: kwargs.pop(k, taken[k].default) for k in entries[0].jax_select}
    spec = next((e for e in entries if e.jax_select == chosen), None)
    if spec is None or set(kwargs) - (set(spec.defaults) & set(taken)):
        return None
    return spec.name, {k: float(v) for k, v in kwargs.items()}


def swap_activations(model: nnx.Module, *, bits: int = 3, tables: dict | None = None) -> list[str]:
    """Replace activation functions that nnx modules hold as attributes by few-bit modules.

    Only attributes are swapped (``self.act = jax.nn.silu``), taken to be called as
    ``act(x)``: jax's defaults decide (``jax.nn.gelu`` is approximate=True, so GELUTanh), and a
    ``functools.partial`` with keywords is honoured (``partial(jax.nn.gelu, approximate=False)``
    is GELU, ``partial(jax.nn.leaky_relu, negative_slope=0.2)`` a LeakyReLU with a table
    designed for 0.2). A call written inside ``__call__`` (``jax.nn.gelu(x)``) cannot be
    reached without monkey-patching, which this does not do. jax.nn.softplus is not torch's
    (no threshold) and is left alone.

    Parameters
    ----------
    model : nnx.Module, changed in place.
    bits : int
        Code width of the shipped tables used.
    tables : dict, optional
        registry name -> Table or path, overriding the shipped table.

    Returns
    -------
    list of str : the swapped attributes' paths ("block.act").
    """
    targets = _swap_targets()
    swapped = []
    for path, module in list(nnx.iter_modules(model)):
        for attr, value in list(vars(module).items()):
            hit = _target(value, targets)
            if hit is None:
                continue
            name, params = hit
            table = (tables or {}).get(name)
            new = MODULES[name](bits=None if table is not None else bits, table=table, **params)
            setattr(module, attr, nnx.data(new))   # the function was static; the module is data
            swapped.append(".".join(str(p) for p in (*path, attr)))
    if not swapped:
        raise FewbitError(f"{type(model).__name__} holds no activation function as an attribute to swap")
    return swapped
