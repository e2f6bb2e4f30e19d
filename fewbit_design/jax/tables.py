"""JAX runtime, its tables: a Table, a table file or a shipped table by name -> the constants
the JAX runtime needs (numpy only; the designer-side readers do the validation).

The resolving rules and messages are the torch runtime's (fewbit_design/torch/tables.py),
restated here because that module imports torch.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict

import numpy as np

from ..activations import get_activation
from ..errors import FewbitError
from ..formats import read_table
from ..table import Table, check_bits

__all__ = ["load_table", "default_table", "check_table", "resolve_table", "TableConstants",
           "table_constants", "DEFAULT_BITS", "DEFAULT_DISTRIBUTION"]

DEFAULT_BITS = 3
DEFAULT_DISTRIBUTION = "normal:0,1"


def canonical_params(activation: str, params: dict | None = None) -> dict:
    """The activation's parameters with the registry defaults filled in (floats)."""
    return dict(get_activation(activation, params or {}).params)


def load_table(source) -> Table:
    """A Table from a Table (returned as is) or a path to a table file (any format read_table knows)."""
    if isinstance(source, Table):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise FewbitError(f"table must be a Table or a path to a table file, got {type(source).__name__}")
    return read_table(os.fspath(source))


@functools.lru_cache(maxsize=None)
def _default_table(activation: str, bits: int, params: tuple) -> Table:
    from ..designer import design
    from ..shipped import shipped_table

    p = dict(params)
    table = shipped_table(activation, bits, params=p, distribution=DEFAULT_DISTRIBUTION)
    if table is not None:
        return table
    return design(activation, bits, distribution=DEFAULT_DISTRIBUTION, params=p, partition="auto")


def default_table(activation: str, bits: int = DEFAULT_BITS, params: dict | None = None) -> Table:
    """The shipped table for the activation (normal:0,1), or one designed once per process."""
    bits = check_bits(bits)
    p = canonical_params(activation, params)
    return _default_table(get_activation(activation).name, bits, tuple(sorted(p.items())))


def check_table(table: Table, activation: str, params: dict | None = None) -> None:
    """Refuse a table made for another activation or other parameter values."""
    want = get_activation(activation, params or {})
    if table.activation != want.name:
        raise FewbitError(f"table is for activation {table.activation!r}, not {want.name!r}")
    have = canonical_params(table.activation, table.params)
    if have != want.params:
        raise FewbitError(f"table for {table.activation!r} has parameters {have}, "
                          f"the activation has {want.params}")


def resolve_table(activation: str, params: dict | None, bits: int | None, table) -> Table:
    """The table a module uses: `table` (checked against the activation) or the default one."""
    if table is None:
        return default_table(activation, DEFAULT_BITS if bits is None else bits, params)
    table = load_table(table)
    check_table(table, activation, params)
    if bits is not None and bits != table.bits:
        raise FewbitError(f"bits={bits} disagrees with the table's bits={table.bits}")
    return table


def as_table(source, bits: int | None = None) -> Table:
    """`fewbit_activation`'s table argument: a Table, a table file, or a registry name
    (with `bits`, default 3) for the shipped table; `bits` must agree with a given table."""
    if isinstance(source, str) and not os.path.exists(source) and not os.path.splitext(source)[1] \
            and os.sep not in source:
        return default_table(source, DEFAULT_BITS if bits is None else bits)
    table = load_table(source)
    if bits is not None and bits != table.bits:
        raise FewbitError(f"bits={bits} disagrees with the table's bits={table.bits}")
    return table


def _round_up_f32(b: np.ndarray) -> np.ndarray:
    # smallest float32 >= b: for every float32 x, (x >= b32) == (x >= b) compared exactly
    b32 = b.astype(np.float32)
    low = b32.astype(np.float64) < b
    b32[low] = np.nextafter(b32[low], np.float32(np.inf))
    return b32


class TableConstants:
    """A table as numpy constants (closed over by the traced functions, never residuals).

    bits; bounds32 (m-1,) float32 rounded up; bounds64 (m-1,) float64; codes (m,) uint8;
    levels (L,) float32; activation name and its canonical params.
    """

    def __init__(self, table: Table):
        self.table = table
        self.bits = int(table.bits)
        self.bounds32 = _round_up_f32(np.asarray(table.boundaries, np.float64))
        self.bounds64 = np.asarray(table.boundaries, np.float64).copy()
        self.codes = np.asarray(table.codes).astype(np.uint8)
        self.levels = np.asarray(table.levels).astype(np.float32)
        self.name = table.activation
        self.params = canonical_params(table.activation, table.params)


CACHE_SIZE = 512
_CONSTANTS: OrderedDict = OrderedDict()


def table_constants(table: Table) -> TableConstants:
    """The TableConstants of `table`, built once per Table object; the entry holds the Table,
    so its id is not reused while cached; least recently used entries go first."""
    hit = _CONSTANTS.get(id(table))
    if hit is None or hit.table is not table:
        hit = _CONSTANTS[id(table)] = TableConstants(table)
        while len(_CONSTANTS) > CACHE_SIZE:
            _CONSTANTS.popitem(last=False)
    else:
        _CONSTANTS.move_to_end(id(table))
    return hit
