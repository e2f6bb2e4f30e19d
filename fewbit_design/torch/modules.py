"""Runtime step, nn.Module wrappers: the torch.nn activations with a few-bit backward.

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

import numpy as np
import torch
from torch import nn

from ..errors import FewbitError
from ..formats import dumps, loads
from ..table import Table, format_params, label
from .functional import fewbit_apply
from .reference import FLOAT_DTYPES, TORCH_FORWARD
from .tables import TableConstants, canonical_params, resolve_table

__all__ = ["FewbitActivation", "ReLU", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
           "Softplus", "Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Hardswish", "ReLU6",
           "Softsign", "LogSigmoid", "Tanhshrink", "QuickGELU", "SquaredReLU", "make_module",
           "SAFE_GLOBALS"]


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


class _Named(FewbitActivation):
    name = ""

    def __init__(self, params=None, bits=None, table=None, inplace=False):
        super().__init__(self.name, params, bits=bits, table=table)
        self.inplace = inplace  # accepted for torch.nn compatibility; the input is never modified
        for key, value in self.params.items():
            setattr(self, key, value)  # torch.nn attribute names: negative_slope, alpha, beta, ...


class _Plain(_Named):
    """A named activation without parameters or `inplace`: only bits= and table=."""

    def __init__(self, *, bits=None, table=None):
        super().__init__(None, bits, table)


class ReLU(_Named):
    """max(0, x); see `FewbitActivation`."""
    name = "relu"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class LeakyReLU(_Named):
    """x for x > 0, negative_slope * x below; see `FewbitActivation`."""
    name = "leaky_relu"

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False, *, bits=None, table=None):
        super().__init__({"negative_slope": negative_slope}, bits, table, inplace)


class ELU(_Named):
    """x for x > 0, alpha * (exp(x) - 1) below; see `FewbitActivation`."""
    name = "elu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False, *, bits=None, table=None):
        super().__init__({"alpha": alpha}, bits, table, inplace)


class CELU(_Named):
    """x for x > 0, alpha * (exp(x / alpha) - 1) below; see `FewbitActivation`."""
    name = "celu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False, *, bits=None, table=None):
        super().__init__({"alpha": alpha}, bits, table, inplace)


class SELU(_Named):
    """scale * elu(x, alpha) with torch's constants; see `FewbitActivation`."""
    name = "selu"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class GELU(FewbitActivation):
    """x * Phi(x), or its tanh approximation with ``approximate='tanh'``; see `FewbitActivation`."""

    def __init__(self, approximate: str = "none", *, bits=None, table=None):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
        super().__init__("gelu_tanh" if approximate == "tanh" else "gelu", bits=bits, table=table)
        self.approximate = approximate

    def _args_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Named):
    """x * sigmoid(x); see `FewbitActivation`."""
    name = "silu"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class Mish(_Named):
    """x * tanh(softplus(x)); see `FewbitActivation`."""
    name = "mish"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class Softplus(_Named):
    """log(1 + exp(beta * x)) / beta, x where beta * x > threshold; see `FewbitActivation`."""
    name = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, *, bits=None, table=None):
        super().__init__({"beta": beta, "threshold": threshold}, bits, table)


class Sigmoid(_Plain):
    """1 / (1 + exp(-x)); see `FewbitActivation`."""
    name = "sigmoid"


class Tanh(_Plain):
    """tanh(x); see `FewbitActivation`."""
    name = "tanh"


class Hardtanh(_Named):
    """x clipped to [min_val, max_val]; see `FewbitActivation`."""
    name = "hardtanh"

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False, *,
                 bits=None, table=None):
        super().__init__({"min_val": min_val, "max_val": max_val}, bits, table, inplace)


class Hardsigmoid(_Named):
    """clip(x / 6 + 1/2, 0, 1); see `FewbitActivation`."""
    name = "hardsigmoid"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class Hardswish(_Named):
    """x * hardsigmoid(x); see `FewbitActivation`."""
    name = "hardswish"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class ReLU6(_Named):
    """min(max(0, x), 6); see `FewbitActivation`."""
    name = "relu6"

    def __init__(self, inplace: bool = False, *, bits=None, table=None):
        super().__init__(None, bits, table, inplace)


class Softsign(_Plain):
    """x / (1 + |x|); see `FewbitActivation`."""
    name = "softsign"


class LogSigmoid(_Plain):
    """log(sigmoid(x)); see `FewbitActivation`."""
    name = "logsigmoid"


class Tanhshrink(_Plain):
    """x - tanh(x); see `FewbitActivation`."""
    name = "tanhshrink"


class QuickGELU(_Plain):
    """x * sigmoid(1.702 x) (CLIP, Hugging Face ``quick_gelu``); see `FewbitActivation`."""
    name = "quick_gelu"


class SquaredReLU(_Plain):
    """relu(x)**2 (Primer, Hugging Face ``relu2``); see `FewbitActivation`."""
    name = "squared_relu"


# registry name -> module class; every name in TORCH_FORWARD has one
_NAMED = tuple(c for c in _Named.__subclasses__() if c is not _Plain) + tuple(_Plain.__subclasses__())
MODULES = {cls.name: cls for cls in _NAMED}
MODULES["gelu"] = MODULES["gelu_tanh"] = GELU

# for torch.serialization.safe_globals: a pickled few-bit module holds only these and plain data
SAFE_GLOBALS = (FewbitActivation, GELU, *_NAMED)


def make_module(activation: str, params: dict | None = None, *, bits=None, table=None) -> FewbitActivation:
    """The module class for a registry activation, built from its parameters."""
    name = canonical_name(activation)
    if name in ("gelu", "gelu_tanh"):
        return GELU("tanh" if name == "gelu_tanh" else "none", bits=bits, table=table)
    cls = MODULES.get(name)
    if cls is None:
        return FewbitActivation(name, params, bits=bits, table=table)
    return cls(**canonical_params(name, params), bits=bits, table=table)


def canonical_name(activation: str) -> str:
    """The registry name of `activation` (aliases resolved)."""
    from ..activations import get_activation
    return get_activation(activation).name
