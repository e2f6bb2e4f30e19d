"""JAX runtime, flax modules: one nnx.Module class per registry activation, generated from the
registry (fewbit_design/activations.py), and a swap of activation-function attributes.

    act = fewbit_design.jax.modules.GELU(bits=3)       # or table=Table / "path.json"
    y = act(x)                                          # jax.nn.gelu(x) forward, 3-bit backward
"""

from __future__ import annotations

from flax import nnx

from ..activations import REGISTRY
from ..errors import FewbitError
from .functional import JAX_FORWARD, fewbit_activation
from .tables import resolve_table

__all__ = ["FewbitActivation", "MODULES", "swap_activations"]

# registry name -> class name (torch.nn's spelling where there is one)
CLASS_NAMES = {
    "relu": "ReLU", "leaky_relu": "LeakyReLU", "elu": "ELU", "celu": "CELU", "selu": "SELU",
    "gelu": "GELU", "gelu_tanh": "GELUTanh", "silu": "SiLU", "mish": "Mish", "softplus": "Softplus",
    "sigmoid": "Sigmoid", "tanh": "Tanh", "hardtanh": "Hardtanh", "hardsigmoid": "Hardsigmoid",
    "hardswish": "Hardswish", "relu6": "ReLU6", "softsign": "Softsign", "logsigmoid": "LogSigmoid",
    "tanhshrink": "Tanhshrink", "quick_gelu": "QuickGELU", "squared_relu": "SquaredReLU",
}


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
    cls = type(CLASS_NAMES[name], (FewbitActivation,),
               {"activation": name, "__doc__": f"{spec.doc}, with a few-bit backward "
                f"(parameters: {', '.join(spec.defaults) or 'none'}).", "__module__": __name__})
    return cls


MODULES = {name: _make(name) for name in REGISTRY if name in JAX_FORWARD}
globals().update({cls.__name__: cls for cls in MODULES.values()})
__all__ += [cls.__name__ for cls in MODULES.values()]

_FUNCTIONS = {}   # jax function object -> registry name, for swap_activations


def _functions():
    if not _FUNCTIONS:
        import jax

        pairs = {"relu": jax.nn.relu, "selu": jax.nn.selu, "silu": jax.nn.silu, "mish": jax.nn.mish,
                 "sigmoid": jax.nn.sigmoid, "tanh": jax.numpy.tanh, "hardsigmoid": jax.nn.hard_sigmoid,
                 "hardswish": jax.nn.hard_swish, "relu6": jax.nn.relu6, "softsign": jax.nn.soft_sign,
                 "logsigmoid": jax.nn.log_sigmoid}
        pairs.update({"silu": jax.nn.swish} if jax.nn.swish is not jax.nn.silu else {})
        for fn_name in ("relu", "selu", "silu", "sigmoid", "tanh"):   # nnx re-exports these
            if hasattr(nnx, fn_name):
                _FUNCTIONS[getattr(nnx, fn_name)] = fn_name
        _FUNCTIONS.update({fn: name for name, fn in pairs.items()})
    return _FUNCTIONS


def swap_activations(model: nnx.Module, *, bits: int = 3, tables: dict | None = None) -> list[str]:
    """Replace activation functions that nnx modules hold as attributes by few-bit modules.

    Only attributes are swapped (``self.act = jax.nn.silu``): a call written inside
    ``__call__`` (``jax.nn.gelu(x)``) cannot be reached without monkey-patching, so write such
    models with an activation attribute or a FewbitActivation. Parameterised functions
    (jax.nn.gelu's approximate flag, leaky_relu's slope) are ambiguous as attributes and are
    not swapped; set a module (``GELU()``, ``LeakyReLU(negative_slope=0.2)``) instead.

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
    fns = _functions()
    swapped = []
    for path, module in list(nnx.iter_modules(model)):
        for attr, value in list(vars(module).items()):
            try:
                name = fns.get(value)
            except TypeError:      # unhashable attribute
                continue
            if name is None:
                continue
            table = (tables or {}).get(name)
            new = MODULES[name](bits=None if table is not None else bits, table=table)
            setattr(module, attr, nnx.data(new))   # the function was static; the module is data
            swapped.append(".".join(str(p) for p in (*path, attr)))
    if not swapped:
        raise FewbitError(f"{type(model).__name__} holds no activation function as an attribute to swap")
    return swapped
