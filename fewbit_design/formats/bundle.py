"""The bundle (Table -> file step): many tables in one compact JSON (the shipped tables, a
calibration's tables per module)."""

from __future__ import annotations

import json
import os

from .._atomic import atomic_write
from ..errors import FewbitError
from ..table import Table

BUNDLE_FORMAT = "fewbit-table-bundle"


def write_bundle(tables, path: str, *, modules: list | None = None) -> str:
    """Write many tables as one compact JSON ({format, version, tables: [canonical, ...]}).

    With `modules` (one JSON-ready dict per table, each with a "name"; a calibration's
    per-module record), the tables keep their order and the list is stored as "modules".
    """
    if modules is None:
        tables = sorted(tables, key=lambda t: (t.distribution, t.activation, t.bits))
    d = {"format": BUNDLE_FORMAT, "version": 1, "tables": [t.to_dict() for t in tables]}
    if modules is not None:
        if len(modules) != len(d["tables"]):
            raise FewbitError(f"{len(modules)} module records for {len(d['tables'])} tables")
        d["modules"] = [dict(m) for m in modules]
    for t in d["tables"]:
        t["solver"].pop("seconds", None)    # files of version 0.1.0 carried design()'s wall time
    data = (json.dumps(d, separators=(",", ":")) + "\n").encode()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return path
    except OSError:
        pass
    atomic_write(path, data)
    return path


def read_bundle(data: bytes, *, source: str, modules: bool = False):
    """Parse a bundle written by `write_bundle`; every table is validated.

    With ``modules=True`` returns ``(tables, modules)``: the per-table records, each a dict
    with a string "name" (refused when absent or not one per table).
    """
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise FewbitError(f"{source}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(d, dict) or d.get("format") != BUNDLE_FORMAT or d.get("version") != 1:
        raise FewbitError(f"{source}: not a {BUNDLE_FORMAT} version 1 file")
    if not isinstance(d.get("tables"), list):
        raise FewbitError(f"{source}: field 'tables' must be a list")
    tables = [Table.from_dict(t, source=f"{source}: tables[{i}]") for i, t in enumerate(d["tables"])]
    if not modules:
        return tables
    records = d.get("modules")
    if not isinstance(records, list) or len(records) != len(tables):
        raise FewbitError(f"{source}: field 'modules' must be a list of one record per table "
                          "(not a calibration bundle?)")
    for i, m in enumerate(records):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise FewbitError(f"{source}: modules[{i}] must be a mapping with a string 'name'")
    return tables, records

