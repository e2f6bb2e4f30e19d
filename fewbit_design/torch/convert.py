"""Runtime step, model conversion: swap a model's activation modules for few-bit ones in place, and back."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import FewbitError
from .modules import FewbitActivation, canonical_name, make_module
from .tables import load_table

__all__ = ["convert", "unconvert", "activation_of"]

# exact torch.nn type -> (registry name, params) of an instance
_TORCH_TYPES: dict[type, Callable] = {
    nn.ReLU: lambda m: ("relu", {}),
    nn.LeakyReLU: lambda m: ("leaky_relu", {"negative_slope": m.negative_slope}),
    nn.ELU: lambda m: ("elu", {"alpha": m.alpha}),
    nn.CELU: lambda m: ("celu", {"alpha": m.alpha}),
    nn.SELU: lambda m: ("selu", {}),
    nn.GELU: lambda m: ("gelu_tanh" if m.approximate == "tanh" else "gelu", {}),
    nn.SiLU: lambda m: ("silu", {}),
    nn.Mish: lambda m: ("mish", {}),
    nn.Softplus: lambda m: ("softplus", {"beta": m.beta, "threshold": m.threshold}),
    nn.Sigmoid: lambda m: ("sigmoid", {}),
    nn.Tanh: lambda m: ("tanh", {}),
    nn.Hardtanh: lambda m: ("hardtanh", {"min_val": m.min_val, "max_val": m.max_val}),
    nn.Hardsigmoid: lambda m: ("hardsigmoid", {}),
    nn.Hardswish: lambda m: ("hardswish", {}),
    nn.ReLU6: lambda m: ("relu6", {}),
    nn.Softsign: lambda m: ("softsign", {}),
    nn.LogSigmoid: lambda m: ("logsigmoid", {}),
    nn.Tanhshrink: lambda m: ("tanhshrink", {}),
}

# Hugging Face transformers.activations class name -> registry name (matched by name, so
# transformers is never imported). The tanh-GELU formulas differ from F.gelu(tanh) in the
# last bits; GELUActivation(use_gelu_python=True) likewise differs from F.gelu.
_HF_NAMES = {
    "GELUActivation": "gelu",
    "NewGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh",
    "QuickGELUActivation": "quick_gelu",
    "SiLUActivation": "silu",
    "MishActivation": "mish",
    "ReLUSquaredActivation": "squared_relu",
}


def activation_of(module: nn.Module, extra: dict | None = None):
    """(registry name, params) that `module` computes, or None if it is not a known activation.

    `extra` maps a class to a registry name or to (name, params); it wins over the built-ins.
    """
    kind = type(module)
    if extra and kind in extra:
        spec = extra[kind]
        name, params = (spec, {}) if isinstance(spec, str) else spec
        return canonical_name(name), dict(params or {})
    if kind in _TORCH_TYPES:
        return _TORCH_TYPES[kind](module)
    if kind.__name__ in _HF_NAMES and kind.__module__.startswith("transformers"):
        return _HF_NAMES[kind.__name__], {}
    return None


def _load_tables(tables: dict | None) -> dict:
    out = {}
    for key, source in (tables or {}).items():
        table = load_table(source)
        name = canonical_name(key)
        if table.activation != name:
            raise FewbitError(f"tables[{key!r}] is a table for activation {table.activation!r}, not {name!r}")
        out[name] = table
    return out


def _children(model: nn.Module, prefix: str = ""):
    # (parent, attribute name, qualified name, child); few-bit modules are not entered
    for key, child in model._modules.items():
        if child is None:
            continue
        qualified = f"{prefix}{key}"
        yield model, key, qualified, child
        if not isinstance(child, FewbitActivation):
            yield from _children(child, qualified + ".")


def convert(model: nn.Module, bits: int = 3, tables: dict | None = None, include=None, exclude=None,
            extra: dict | None = None) -> list:
    """Replace the activation modules inside `model` by few-bit ones, in place.

    Parameters
    ----------
    model : nn.Module
        Converted in place (the root module itself is never replaced).
    bits : int
        Code width for activations without an entry in `tables`.
    tables : dict, optional
        Activation name -> Table or table file path; the table's own bits are used.
        A table made for another activation, or for other parameter values than a
        module's, is refused (FewbitError) before anything is replaced.
    include, exclude : callable, optional
        Filters ``(module, qualified_name) -> bool``: convert a module only if `include`
        says True (default all) and `exclude` does not.
    extra : dict, optional
        More classes to convert: ``{MyGELU: "gelu", MyLeaky: ("leaky_relu", {"negative_slope": 0.2})}``.

    Returns
    -------
    list of (str, str, FewbitActivation)
        Qualified name, the old module's type name and the new module, in model order.
        Recognised: the torch.nn activations (exact types) and the Hugging Face classes
        GELUActivation, NewGELUActivation, GELUTanh, FastGELUActivation, QuickGELUActivation,
        SiLUActivation, MishActivation, ReLUSquaredActivation (by class name).
    """
    known = _load_tables(tables)
    plan, made = [], {}
    for parent, key, qualified, child in _children(model):
        spec = activation_of(child, extra)
        if spec is None or (include and not include(child, qualified)) or (exclude and exclude(child, qualified)):
            continue
        if id(child) not in made:  # a module shared by several parents stays shared
            name, params = spec
            table = known.get(canonical_name(name))
            try:
                new = make_module(name, params, bits=None if table else bits, table=table)
            except FewbitError as e:
                raise FewbitError(f"cannot convert {qualified} ({type(child).__name__}): {e}") from None
            object.__setattr__(new, "original", child)
            made[id(child)] = new
        plan.append((parent, key, qualified, child, made[id(child)]))
    for parent, key, _, _, new in plan:  # nothing is replaced before every module is built
        parent._modules[key] = new
    return [(qualified, type(child).__name__, new) for _, _, qualified, child, new in plan]


def unconvert(model: nn.Module) -> list:
    """Put back the modules that `convert` replaced, in place.

    Returns
    -------
    list of (str, str, nn.Module)
        Qualified name, the few-bit module's type name and the restored module.
        Few-bit modules built directly (not by `convert`) stay.
    """
    plan = [(parent, key, qualified, child) for parent, key, qualified, child in _children(model)
            if isinstance(child, FewbitActivation) and child.original is not None]
    for parent, key, _, child in plan:
        parent._modules[key] = child.original
    return [(qualified, type(child).__name__, child.original) for _, _, qualified, child in plan]
