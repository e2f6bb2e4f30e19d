"""JAX runtime, its tables: a Table, a table file or a shipped table by name -> the constants
the JAX runtime needs (numpy only; the designer-side readers do the validation).

The resolving rules and messages are runtime_tables', shared with the torch runtime and
re-exported here.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from ..runtime_tables import (DEFAULT_BITS, DEFAULT_DISTRIBUTION, canonical_params, check_activation,
                              check_bits_of, default_table, load_table, resolve_table, round_up_f32)
from ..table import Table

__all__ = ["load_table", "default_table", "check_activation", "resolve_table", "as_table", "TableConstants",
           "table_constants", "DEFAULT_BITS", "DEFAULT_DISTRIBUTION"]


def as_table(source, bits: int | None = None) -> Table:
    """`fewbit_activation`'s table argument: a Table, a table file, or a registry name
    (with `bits`, default 3) for the shipped table; `bits` must agree with a given table."""
    if isinstance(source, str) and not os.path.exists(source) and not os.path.splitext(source)[1] \
            and os.sep not in source:
        return default_table(source, DEFAULT_BITS if bits is None else bits)
    return check_bits_of(load_table(source), bits)


class TableConstants:
    """A table as numpy constants (closed over by the traced functions, never residuals).

    bits; bounds32 (m-1,) float32 rounded up; bounds64 (m-1,) float64; codes (m,) uint8;
    levels (L,) float32; activation name and its canonical params.
    """

    def __init__(self, table: Table):
        self.table = table
        self.bits = int(table.bits)
        self.bounds32 = round_up_f32(table.boundaries)
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
