"""Runtime step, the table rules every runtime shares (Table -> runtime): the default table,
table files, the activation check, float32 boundaries. numpy only: the torch and JAX runtimes
and calibration import it.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .activations import get_activation
from .errors import FewbitError
from .formats import read_table
from .table import Table, check_bits

__all__ = ["DEFAULT_BITS", "DEFAULT_DISTRIBUTION", "canonical_params", "load_table", "default_table",
           "check_activation", "resolve_table", "check_bits_of", "round_up_f32"]

DEFAULT_BITS = 3
DEFAULT_DISTRIBUTION = "normal:0,1"   # what the default (uncalibrated) tables assume


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
    from .designer import design
    from .shipped import shipped_table

    p = dict(params)
    table = shipped_table(activation, bits, params=p, distribution=DEFAULT_DISTRIBUTION)
    if table is not None:
        return table
    return design(activation, bits, distribution=DEFAULT_DISTRIBUTION, params=p, partition="auto")


def default_table(activation: str, bits: int = DEFAULT_BITS, params: dict | None = None) -> Table:
    """The default table for an activation: shipped if there is one, else designed once.

    Parameters
    ----------
    activation : str
        Registry name.
    bits : int
        Code width in 1..8.
    params : dict, optional
        Activation parameters; defaults filled in.

    Returns
    -------
    Table
        For DEFAULT_DISTRIBUTION (the standard normal); cached in-process.
    """
    bits = check_bits(bits)
    p = canonical_params(activation, params)
    return _default_table(get_activation(activation).name, bits, tuple(sorted(p.items())))


def check_activation(table: Table, activation: str, params: dict | None = None) -> None:
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
    check_activation(table, activation, params)
    return check_bits_of(table, bits)


def check_bits_of(table: Table, bits: int | None) -> Table:
    """`table`, unless `bits` (None: any) disagrees with its bits."""
    if bits is not None and bits != table.bits:
        raise FewbitError(f"bits={bits} disagrees with the table's bits={table.bits}")
    return table


def round_up_f32(b: np.ndarray) -> np.ndarray:
    """The smallest float32 >= b, element-wise: for every float32 x, (x >= b32) == (x >= b)."""
    b = np.asarray(b, np.float64)
    b32 = b.astype(np.float32)
    low = b32.astype(np.float64) < b
    b32[low] = np.nextafter(b32[low], np.float32(np.inf))
    return b32
