"""Runtime step, its tables (Table -> runtime): default tables, table files, matching checks,
device constants, and the runtime's one cache of device tensors."""

from __future__ import annotations

import functools
import os
import weakref
from collections import OrderedDict

import numpy as np
import torch

from ..activations import get_activation
from ..errors import FewbitError
from ..formats import read_table
from ..table import Table, check_bits

__all__ = ["default_table", "load_table", "resolve_table", "check_table", "table_constants", "cached",
           "clear_cache", "DEFAULT_BITS", "DEFAULT_DISTRIBUTION"]

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
    p = dict(params)
    from ..designer import design
    from ..shipped import shipped_table

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
        For the standard normal input distribution; cached in-process.
    """
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


def _round_up_f32(b: np.ndarray) -> np.ndarray:
    # smallest float32 >= b, so that (x >= b) == (x >= b32) for every float32 x
    b32 = b.astype(np.float32)
    low = b32.astype(np.float64) < b
    b32[low] = np.nextafter(b32[low], np.float32(np.inf))
    return b32


class TableConstants:
    """A table's small tensors on one device; shared by every call, never saved per call.

    Attributes
    ----------
    bits : int
    bounds32 : (m-1,) float32, boundaries rounded up to float32 (compare float32 x).
    bounds64 : (m-1,) float64, the exact boundaries (compare float64 x).
    code_map : (m,) uint8 interval -> code, or None for a contiguous table (code = interval).
    levels : (L,) float32 code -> derivative value.
    """

    def __init__(self, table: Table, device: torch.device):
        self.bits = int(table.bits)
        self.bounds32 = torch.from_numpy(_round_up_f32(table.boundaries)).to(device)
        self.bounds64 = torch.from_numpy(table.boundaries.copy()).to(device)
        contiguous = np.array_equal(table.codes, np.arange(table.codes.size))
        self.code_map = None if contiguous else torch.from_numpy(table.codes.astype(np.uint8)).to(device)
        self.levels = torch.from_numpy(table.levels.astype(np.float32)).to(device)


def table_constants(table: Table, device) -> TableConstants:
    """The cached TableConstants of `table` on `device`."""
    device = torch.device(device)
    return cached(("constants", device), (table,), lambda: TableConstants(table, device))


# -- the runtime's one cache ------------------------------------------------------------

CACHE_SIZE = 512   # entries: TableConstants (a few small tensors), code tables 64 KiB, prefix tables 128 KiB
_CACHE: OrderedDict = OrderedDict()


def cached(what: tuple, owners: tuple, build):
    """build(), once per `what` and per state of `owners` (Tables or tensors); least recently
    used entries go first.

    A Table is keyed by its id, a tensor by address, size and version (an in-place change
    rebuilds). Each owner is also held by weak reference (a tensor by its storage), which tells
    a live owner from a freed one whose id or address was handed out again. Modules pass a fresh
    dtype view of a buffer on every call; it shares the buffer's storage object (torch keeps one
    per storage), so it hits.
    """
    key = what + tuple((o.data_ptr(), o.numel(), o._version) if isinstance(o, torch.Tensor) else (id(o),)
                       for o in owners)
    referents = tuple(o.untyped_storage() if isinstance(o, torch.Tensor) else o for o in owners)
    hit = _CACHE.get(key)
    if hit is None or any(ref() is not r for ref, r in zip(hit[0], referents)):
        hit = _CACHE[key] = (tuple(weakref.ref(r) for r in referents), build())
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return hit[1]


def clear_cache() -> None:
    """Drop every cached device tensor (table constants, code and prefix tables); they are
    rebuilt on next use. For tests, or to free device memory after many tables."""
    _CACHE.clear()
