"""Runtime step, model conversion: swap a model's activation modules for few-bit ones in place, and back."""

from __future__ import annotations

import os
import warnings

from torch import nn

from ..activations import REGISTRY
from ..errors import FewbitError
from .modules import FewbitActivation, canonical_name, make_module
from .tables import load_table

__all__ = ["convert", "unconvert", "activation_of", "convertible"]


def _torch_types() -> dict:
    """exact torch.nn type -> its registry entries (GELU: gelu and gelu_tanh, told apart by `select`)."""
    out: dict[type, list] = {}
    for spec in REGISTRY.values():
        if spec.module is not None and spec.in_torch_nn:
            out.setdefault(getattr(nn, spec.module), []).append(spec)
    return out


_TORCH_TYPES = _torch_types()

# Hugging Face transformers.activations class name -> registry name (matched by name, so
# transformers is never imported). The tanh-GELU formulas differ from F.gelu(tanh) in the
# last bits; GELUActivation(use_gelu_python=True) likewise differs from F.gelu.
_HF_NAMES = {hf: spec.name for spec in REGISTRY.values() for hf in spec.hf_classes}


def _torch_spec(entries):
    """(module -> (registry name, params) or None) for a torch.nn class: the entry its attributes select."""
    def spec(module):
        entry = next((e for e in entries if all(getattr(module, k) == v for k, v in e.select.items())), None)
        return None if entry is None else (entry.name, {k: getattr(module, k) for k in entry.defaults})
    return spec


def _known(kind: type):
    """(spec function, the known class) for a torch.nn or Hugging Face activation class, else None."""
    if kind in _TORCH_TYPES:
        return _torch_spec(_TORCH_TYPES[kind]), kind
    if kind.__name__ in _HF_NAMES and kind.__module__.startswith("transformers"):
        name = _HF_NAMES[kind.__name__]
        return (lambda m: (name, {})), kind
    return None


def activation_of(module: nn.Module, extra: dict | None = None):
    """(registry name, params) that `module` computes, or None if it is not a known activation.

    `extra` maps a class to a registry name or to (name, params); it wins over the built-ins.
    A subclass of a known class counts when it keeps that class's forward.
    """
    kind = type(module)
    if extra and kind in extra:
        spec = extra[kind]
        name, params = (spec, {}) if isinstance(spec, str) else spec
        return canonical_name(name), dict(params or {})
    for base in kind.__mro__:
        known = _known(base)
        if known is not None:
            return known[0](module) if kind.forward is base.forward else None
    return None


def _spec(module: nn.Module, extra: dict | None):
    """(registry name, params) of a module `convert` handles: a known activation or a few-bit one."""
    if isinstance(module, FewbitActivation):
        return module.activation, module.params
    return activation_of(module, extra)


def _unknown_subclass(module: nn.Module) -> str | None:
    """The known activation class `module` derives from while overriding its forward, if any."""
    for base in type(module).__mro__[1:]:
        if _known(base) is not None and type(module).forward is not base.forward:
            return base.__name__
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


def convertible(model: nn.Module, include=None, exclude=None, extra: dict | None = None) -> list:
    """The modules `convert` handles: (qualified name, module, (registry name, params)), each
    module once, under the first name it is found at (a shared module is one entry). Few-bit
    modules are among them (convert replaces one when its table differs from the one asked for)."""
    out, seen = [], set()
    for _, _, qualified, child in _children(model):
        spec = _spec(child, extra)
        if spec is None or (include and not include(child, qualified)) or (exclude and exclude(child, qualified)):
            continue
        if id(child) not in seen:
            seen.add(id(child))
            out.append((qualified, child, spec))
    return out


def _bundle_tables(model, bundle, include, exclude, extra) -> dict:
    """id(module) -> table from a calibration bundle, refused unless it matches the model exactly."""
    from ..calibration import Calibration
    from .tables import check_activation

    if not isinstance(bundle, Calibration):
        bundle = Calibration.load(bundle)
    found = {q: (m, spec) for q, m, spec in convertible(model, include, exclude, extra)}
    problems = []
    unknown = [n for n in bundle if n not in found]
    if unknown:
        problems.append(f"not activations of the model: {', '.join(unknown)}")
    uncovered = [q for q in found if q not in bundle]
    if uncovered:
        problems.append(f"no table for: {', '.join(uncovered)}")
    for q in bundle:
        if q in found:
            try:
                check_activation(bundle[q], *found[q][1])
            except FewbitError as e:
                problems.append(f"{q}: {e}")
    if problems:
        raise FewbitError("calibration bundle does not match the model; " + "; ".join(problems))
    return {id(m): bundle[q] for q, (m, _) in found.items()}


def convert(model: nn.Module, bits: int = 3, tables=None, include=None, exclude=None,
            extra: dict | None = None) -> list:
    """Replace the activation modules inside `model` by few-bit ones, in place.

    Parameters
    ----------
    model : nn.Module
        Converted in place. The root module itself cannot be replaced: a bare activation
        (``convert(nn.GELU())``) is refused with FewbitError (use `make_module` or a module class).
    bits : int
        Code width for activations without an entry in `tables`.
    tables : dict, optional
        Activation name -> Table or table file path; the table's own bits are used.
        A table made for another activation, or for other parameter values than a
        module's, is refused (FewbitError) before anything is replaced.
        Or a calibration bundle (`fewbit_design.calibration.Calibration`, or the path of
        one saved by `Calibration.save`): module name -> table; it must name exactly the
        modules to convert (after include/exclude), each with a table for its activation,
        else it is refused with the names listed.
    include, exclude : callable, optional
        Filters ``(module, qualified_name) -> bool``: convert a module only if `include`
        says True (default all) and `exclude` does not.
    extra : dict, optional
        More classes to convert: ``{MyGELU: "gelu", MyLeaky: ("leaky_relu", {"negative_slope": 0.2})}``.

    Returns
    -------
    list of (str, str, FewbitActivation)
        Qualified name, the old module's type name and the new module, in model order.
        Recognised: the torch.nn activations and the Hugging Face classes GELUActivation,
        NewGELUActivation, GELUTanh, FastGELUActivation, QuickGELUActivation, SiLUActivation,
        MishActivation, ReLUSquaredActivation (by class name), and their subclasses that keep
        the forward. A few-bit module whose table differs from the one asked for (other bits,
        or another entry in `tables`) is replaced too; `unconvert` still restores the module
        that was there before the first conversion. Subclasses that override the forward are
        left alone with a warning naming them (pass them in `extra`), and so is a model in
        which no activation module was found at all.
    """
    from ..calibration import Calibration

    if _spec(model, extra) is not None:
        raise FewbitError(f"convert works in place on a model's submodules; the model itself is an activation "
                          f"({type(model).__name__}); build the few-bit one with fewbit_design.torch.make_module "
                          f"or a module class (fewbit_design.torch.GELU, ...), or wrap it in nn.Sequential")
    per_module = None
    if isinstance(tables, (Calibration, str, os.PathLike)):
        per_module, tables = _bundle_tables(model, tables, include, exclude, extra), None
    known = _load_tables(tables)
    plan, made, skipped, seen = [], {}, [], False
    for parent, key, qualified, child in _children(model):
        fewbit = isinstance(child, FewbitActivation)
        spec = _spec(child, extra)
        if spec is None:
            base = _unknown_subclass(child)
            if base is not None:
                skipped.append(f"{qualified} ({type(child).__name__}, a subclass of {base} with its own forward)")
            continue
        seen = True
        if (include and not include(child, qualified)) or (exclude and exclude(child, qualified)):
            continue
        if id(child) not in made:  # a module shared by several parents stays shared
            name, params = spec
            table = known.get(canonical_name(name)) if per_module is None else per_module[id(child)]
            try:
                new = make_module(name, params, bits=None if table else bits, table=table)
            except FewbitError as e:
                raise FewbitError(f"cannot convert {qualified} ({type(child).__name__}): {e}") from None
            if fewbit and new.table == child.table:
                new = None  # already what was asked for
            elif new is not None:
                original = child.original if fewbit and child.original is not None else child
                object.__setattr__(new, "original", original)
            made[id(child)] = new
        if made[id(child)] is not None:
            plan.append((parent, key, qualified, child, made[id(child)]))
    for parent, key, _, _, new in plan:  # nothing is replaced before every module is built
        parent._modules[key] = new
    if skipped:
        warnings.warn("convert left these modules alone: " + "; ".join(skipped)
                      + ". Pass them in extra={Class: 'activation name'} if they compute that activation.",
                      stacklevel=2)
    elif not seen:
        warnings.warn(f"convert found no activation module in {type(model).__name__} (activations called as "
                      f"functions inside forward, such as F.gelu, cannot be swapped)", stacklevel=2)
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
