"""CSV (Table -> file step): '# key: value' metadata, then the intervals, then the levels.

    # format: fewbit-table
    # version: 1
    # activation: gelu
    # activation.params: {}
    ...
    interval,lower,upper,code        one row per interval; lower/upper are the boundaries
    0,-inf,-1.25,0                   (x is in the interval when lower <= x < upper)
    ...
                                     (blank line)
    code,level
    0,-0.0833
    ...
"""

from __future__ import annotations

import csv
import io
import json
import math

from ..errors import FewbitError
from ._common import _no_duplicates, _parse_float, _parse_int

_CSV_TEXT_KEYS = ("format", "activation", "distribution", "partition")
_CSV_KEYS = ("format", "version", "activation", "activation.params", "bits", "distribution",
             "distribution.params", "partition", "error.mse", "error.relative", "solver")
_INTERVAL_HEADER = ["interval", "lower", "upper", "code"]
_LEVEL_HEADER = ["code", "level"]
_CSV_END = "# end"   # the last line: a truncated file is refused, not read as a shorter table


def _csv_text(s: str) -> str:
    plain = s == s.strip() and s.isprintable() and not s.startswith('"') and s != ""
    return s if plain else json.dumps(s)


def _dump_csv(d: dict) -> str:
    flat = {"format": d["format"], "version": d["version"],
            "activation": d["activation"]["name"], "activation.params": d["activation"]["params"],
            "bits": d["bits"],
            "distribution": d["distribution"]["name"], "distribution.params": d["distribution"]["params"],
            "partition": d["partition"],
            "error.mse": d["error"]["mse"], "error.relative": d["error"]["relative"],
            "solver": d["solver"]}
    lines = [f"# {k}: {_csv_text(v) if k in _CSV_TEXT_KEYS else json.dumps(v)}"
             for k, v in flat.items()]
    b = d["boundaries"]
    edges = [-math.inf, *b, math.inf]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(_INTERVAL_HEADER)
    for i, c in enumerate(d["codes"]):
        w.writerow([i, repr(float(edges[i])), repr(float(edges[i + 1])), c])
    w.writerow([])
    w.writerow(_LEVEL_HEADER)
    for i, v in enumerate(d["levels"]):
        w.writerow([i, repr(float(v))])
    return "\n".join(lines) + "\n" + out.getvalue() + _CSV_END + "\n"


def _load_csv(text: str, source: str) -> dict:
    meta, rows = {}, []
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[-1].strip() != _CSV_END:
        raise FewbitError(f"{source}: truncated or not a fewbit table CSV (the last line must be '{_CSV_END}')")
    for n, line in enumerate(lines[:-1], 1):
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition(":")
            key, value = key.strip(), value.strip()
            if not sep or key not in _CSV_KEYS:
                raise FewbitError(f"{source}: line {n}: unknown metadata line {line[:60]!r}")
            if key in meta:
                raise FewbitError(f"{source}: field '{key}' is given twice")
            try:
                if key in _CSV_TEXT_KEYS and not value.startswith('"'):
                    meta[key] = value
                else:
                    meta[key] = json.loads(value, object_pairs_hook=_no_duplicates(f"{source}: field '{key}'"))
            except json.JSONDecodeError as e:
                raise FewbitError(f"{source}: field '{key}' is not valid JSON ({e.msg})") from None
        else:
            rows.append((n, line))
    for key in _CSV_KEYS:
        if key not in meta:
            raise FewbitError(f"{source}: missing field '{key}'")
    # sections: the intervals, a blank line, the levels
    sections, cur = [], []
    for n, line in rows:
        if line.strip() == "":
            if cur:
                sections.append(cur)
                cur = []
        else:
            cur.append((n, next(csv.reader([line]))))
    if cur:
        sections.append(cur)
    if len(sections) != 2:
        raise FewbitError(f"{source}: expected two sections (intervals, levels), found {len(sections)}")
    intervals, levels = sections
    for sec, header, name in ((intervals, _INTERVAL_HEADER, "intervals"), (levels, _LEVEL_HEADER, "levels")):
        if sec[0][1] != header:
            raise FewbitError(f"{source}: line {sec[0][0]}: the {name} section must start with "
                              f"'{','.join(header)}'")
        for i, (n, row) in enumerate(sec[1:]):
            if len(row) != len(header):
                raise FewbitError(f"{source}: line {n}: expected {len(header)} columns, got {len(row)}")
            if _parse_int(row[0], f"{source}: line {n}: column '{header[0]}'") != i:
                raise FewbitError(f"{source}: line {n}: column '{header[0]}' should be {i}")
    lowers = [_parse_float(r[1], f"{source}: line {n}: field 'boundaries'") for n, r in intervals[1:]]
    uppers = [_parse_float(r[2], f"{source}: line {n}: field 'boundaries'") for n, r in intervals[1:]]
    if not lowers or lowers[0] != -math.inf or uppers[-1] != math.inf:
        raise FewbitError(f"{source}: field 'boundaries': the first interval must start at -inf "
                          f"and the last end at inf")
    for i in range(len(lowers) - 1):
        if uppers[i] != lowers[i + 1] and not (math.isnan(uppers[i]) and math.isnan(lowers[i + 1])):
            raise FewbitError(f"{source}: line {intervals[i + 2][0]}: field 'boundaries': "
                              f"interval {i + 1} must start where interval {i} ends")
    return {"format": meta["format"], "version": meta["version"],
            "activation": {"name": meta["activation"], "params": meta["activation.params"]},
            "bits": meta["bits"],
            "distribution": {"name": meta["distribution"], "params": meta["distribution.params"]},
            "partition": meta["partition"],
            "boundaries": uppers[:-1],
            "codes": [_parse_int(r[3], f"{source}: line {n}: field 'codes'") for n, r in intervals[1:]],
            "levels": [_parse_float(r[1], f"{source}: line {n}: field 'levels'") for n, r in levels[1:]],
            "error": {"mse": meta["error.mse"], "relative": meta["error.relative"]},
            "solver": meta["solver"]}


