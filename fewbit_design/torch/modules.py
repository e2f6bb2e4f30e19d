"""Runtime step, nn.Module wrappers: the torch.nn activations with a few-bit backward.

One class per torch module name in the registry (activations.py), generated from its entries.
Each takes the torch.nn constructor arguments (``inplace`` is accepted and ignored: the
input is never overwritten) plus keyword-only ``bits`` (default 3) and ``table`` (a Table
or a path to a table file; its activation and parameters must match the module's).

Checkpoints: a module's ``state_dict`` holds its table as ``_extra_state`` (the canonical
JSON table as a uint8 tensor, so ``torch.load(weights_only=True)`` and safetensors take it).
Loading a different table is an error naming the module; a checkpoint without the entry
(saved before conversion) loads and the module keeps its table. Pickled whole, a module
keeps its table as a JSON string: allowlist `SAFE_GLOBALS` (and the model's other
classes) with ``torch.serialization.safe_globals`` to load it with ``weights_only=True``.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from ..activations import REGISTRY, get_activation
from ..errors import FewbitError
from ..formats import dumps, loads
from ..table import Table, format_params, label
from .functional import fewbit_apply
from .reference import FLOAT_DTYPES, TORCH_FORWARD
from .tables import TableConstants, canonical_params, resolve_table

__all__ = ["FewbitActivation", "make_module", "SAFE_GLOBALS"]   # and the generated classes, below


class FewbitActivation(nn.Module):
    """Any registry activation with a few-bit backward.

    Parameters
    ----------
    activation : str
        Registry name (``"gelu"``, ``"leaky_relu"``, ...).
    params : dict, optional
        Activation parameters; registry (= torch.nn) defaults filled in.
    bits : int, optional
        Code width 1..8 (default 3); must agree with `table` when both are given.
    table : Table or path, optional
        The derivative table; default: the shipped / designed table for N(0, 1) inputs.

    Attributes
    ----------
    table : Table
        The table in use (``table.bits`` codes per element are saved for backward).
    original : nn.Module or None
        The module this one replaced (set by `convert`, restored by `unconvert`).
    """

    def __init__(self, activation: str, params: dict | None = None, *, bits: int | None = None,
                 table: Table | str | None = None):
        super().__init__()
        self.params = canonical_params(activation, params)
        self.table = resolve_table(activation, self.params, bits, table)
        self.activation = self.table.activation
        if self.activation not in TORCH_FORWARD:
            raise ValueError(f"activation {activation!r} has no torch implementation in fewbit_design.torch")
        self.bits = int(self.table.bits)
        object.__setattr__(self, "original", None)  # unregistered: not in state_dict or children
        # The table's constants as non-persistent buffers: they follow .to(device) and are seen
        # by torch.compile as module state; float values are kept as integer bit patterns so
        # that .half() / .to(dtype) cannot round them. Never saved per call.
        c = TableConstants(self.table, torch.device("cpu"))
        self.register_buffer("_bounds32", c.bounds32.view(torch.int32), persistent=False)
        self.register_buffer("_bounds64", c.bounds64.view(torch.int64), persistent=False)
        self.register_buffer("_code_map", c.code_map, persistent=False)
        self.register_buffer("_levels", c.levels.view(torch.int32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"fewbit activations take a floating tensor, got {x.dtype}")
        return fewbit_apply(x, self.activation, self.params, self.bits, *self._table_tensors())

    def _table_tensors(self) -> tuple:
        """(bounds32, bounds64, code_map, levels): float views of the buffers, made again when a
        buffer is replaced (.to(), load_state_dict(assign=True), FSDP); in eager mode reused
        between calls (a view costs about a microsecond and a half)."""
        b = self._buffers
        owners = (b["_bounds32"], b["_bounds64"], b["_code_map"], b["_levels"])
        eager = not torch.compiler.is_compiling()     # tracing: no attribute written
        held = self.__dict__.get("_views") if eager else None
        if held is not None and all(a is o for a, o in zip(held[0], owners)):
            return held[1]
        views = (owners[0].view(torch.float32), owners[1].view(torch.float64), owners[2], owners[3].view(torch.float32))
        if eager:
            self.__dict__["_views"] = (owners, views)
        return views

    # -- checkpoints: the table travels as canonical JSON, never as a pickled object ----------
    def get_extra_state(self) -> torch.Tensor:
        return torch.frombuffer(bytearray(dumps(self.table, "json")), dtype=torch.uint8)

    def set_extra_state(self, state) -> None:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
            raise FewbitError("the checkpoint's entry is not a few-bit table (expected a uint8 tensor of JSON)")
        saved = loads(state.cpu().numpy().tobytes(), "json", source="checkpoint table")
        mine = self.table
        same = (saved.activation == mine.activation and saved.bits == mine.bits
                and canonical_params(saved.activation, saved.params) == self.params
                and all(np.array_equal(getattr(saved, k), getattr(mine, k)) for k in ("boundaries", "codes", "levels")))
        if not same:
            raise FewbitError(f"the checkpoint's table {saved!r} differs from the module's {mine!r}; "
                              f"build the module with the checkpoint's table (table= or convert(tables=...))")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        try:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
        except FewbitError as e:
            error_msgs.append(f"{prefix}_extra_state: {e}")
        if prefix + "_extra_state" in missing_keys:  # a checkpoint of the unconverted model
            missing_keys.remove(prefix + "_extra_state")

    def __getstate__(self):
        state = {k: v for k, v in super().__getstate__().items() if k != "_views"}   # views: rebuilt on use
        return {**state, "table": dumps(state["table"], "json").decode()}  # a str: weights_only loads it

    def __setstate__(self, state):
        table = state.get("table")
        if isinstance(table, str):
            state = {**state, "table": loads(table.encode(), "json", source="pickled few-bit module")}
        super().__setstate__(state)

    def _args_repr(self) -> str:
        return format_params(self.params)

    def extra_repr(self) -> str:
        t = self.table
        dist = label(t.distribution, t.dist_params)
        head = self._args_repr()
        return (f"{head + ', ' if head else ''}bits={self.bits}, table={dist} {t.partition} "
                f"({t.n_intervals} intervals, rel_err={t.relative_error:.3g})")


# -- one class per torch module name in the registry, generated from its entries -------------

_P = inspect.Parameter


class _Named(FewbitActivation):
    """A torch.nn-style class of one or more registry entries (GELU: gelu, gelu_tanh); the
    constructor's `select` arguments pick the entry."""

    _entries: tuple = ()

    def _setup(self, given: inspect.BoundArguments) -> None:
        given.apply_defaults()
        args = given.arguments
        spec = self._pick(args)
        super().__init__(spec.name, {k: args[k] for k in spec.defaults}, bits=args["bits"], table=args["table"])
        for key, value in self.params.items():
            setattr(self, key, value)  # torch.nn attribute names: negative_slope, alpha, beta, ...
        for key in spec.select:
            setattr(self, key, args[key])
        if spec.inplace:
            self.inplace = args["inplace"]  # accepted for torch.nn compatibility; the input is never modified

    @classmethod
    def _pick(cls, args: dict):
        for spec in cls._entries:
            if all(args[k] == v for k, v in spec.select.items()):
                return spec
        key = next(iter(cls._entries[0].select))
        choices = " or ".join(repr(spec.select[key]) for spec in cls._entries)
        raise ValueError(f"{key} must be {choices}, got {args[key]!r}")

    def _args_repr(self) -> str:
        picked = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._entries[0].select)
        return ", ".join(filter(None, (format_params(self.params), picked)))


def _signature(spec) -> inspect.Signature:
    """torch.nn's order: the parameters, the selecting arguments, inplace; then bits, table."""
    args = [_P("self", _P.POSITIONAL_OR_KEYWORD)]
    args += [_P(k, _P.POSITIONAL_OR_KEYWORD, default=v, annotation="float") for k, v in spec.defaults.items()]
    args += [_P(k, _P.POSITIONAL_OR_KEYWORD, default=v, annotation="str") for k, v in spec.select.items()]
    if spec.inplace:
        args.append(_P("inplace", _P.POSITIONAL_OR_KEYWORD, default=False, annotation="bool"))
    return inspect.Signature([*args, _P("bits", _P.KEYWORD_ONLY, default=None),
                              _P("table", _P.KEYWORD_ONLY, default=None)])


def _module_class(name: str, entries: tuple) -> type:
    signature = _signature(entries[0])

    def __init__(self, *args, **kwargs):
        self._setup(signature.bind(self, *args, **kwargs))

    __init__.__signature__ = signature
    __init__.__qualname__ = f"{name}.__init__"
    __init__.__module__ = __name__
    doc = f"{entries[0].module_doc}; see `FewbitActivation`."
    return type(name, (_Named,), {"__init__": __init__, "_entries": entries, "__doc__": doc,
                                  "__module__": __name__, "__qualname__": name})


def _module_classes() -> tuple:
    by_name: dict[str, list] = {}
    for spec in REGISTRY.values():
        if spec.module is not None:
            by_name.setdefault(spec.module, []).append(spec)
    return tuple(_module_class(name, tuple(entries)) for name, entries in by_name.items())


_CLASSES = _module_classes()
globals().update({cls.__name__: cls for cls in _CLASSES})   # ReLU, LeakyReLU, ..., GELU, ...
__all__ += [cls.__name__ for cls in _CLASSES]

# registry name -> module class (GELU serves gelu and gelu_tanh)
MODULES = {spec.name: cls for cls in _CLASSES for spec in cls._entries}

# for torch.serialization.safe_globals: a pickled few-bit module holds only these and plain data
SAFE_GLOBALS = (FewbitActivation, *_CLASSES)


def make_module(activation: str, params: dict | None = None, *, bits=None, table=None) -> FewbitActivation:
    """The module class for a registry activation, built from its parameters."""
    name = canonical_name(activation)
    cls = MODULES.get(name)
    if cls is None:
        return FewbitActivation(name, params, bits=bits, table=table)
    return cls(**canonical_params(name, params), **REGISTRY[name].select, bits=bits, table=table)


def canonical_name(activation: str) -> str:
    """The registry name of `activation` (aliases resolved)."""
    return get_activation(activation).name
