"""Runtime step, its tables (Table -> runtime): device constants and the runtime's one cache of
device tensors; the rules every runtime shares (default tables, table files, the activation
check) are runtime_tables', re-exported here."""

from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np
import torch

from ..runtime_tables import (DEFAULT_BITS, DEFAULT_DISTRIBUTION, canonical_params, check_activation,
                              default_table, load_table, resolve_table, round_up_f32)
from ..table import Table

__all__ = ["default_table", "load_table", "resolve_table", "check_activation", "canonical_params",
           "TableConstants", "table_constants", "cached", "clear_cache", "DEFAULT_BITS", "DEFAULT_DISTRIBUTION"]


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
        self.bounds32 = torch.from_numpy(round_up_f32(table.boundaries)).to(device)
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
