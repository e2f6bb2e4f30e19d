"""Table files (Table -> file step): the canonical JSON and the same content as YAML, NPZ, CSV
and a C/CUDA header; and the bundle, many tables in one compact JSON (the shipped tables).

Every format round-trips a Table bit-exactly (floats are written as Python's shortest
round-trip ``repr``, or stored as raw float64 in NPZ). Every reader validates through
``Table.from_dict`` and fails with a one-line FewbitError naming the file and the field.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import zipfile

import numpy as np

from .errors import FewbitError
from ._version import __version__
from ._atomic import atomic_write
from .table import FORMATS, Table

EXTENSIONS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".npz": "npz",
              ".csv": "csv", ".h": "h", ".cuh": "h"}
ARRAYS = ("boundaries", "codes", "levels")
BUNDLE_FORMAT = "fewbit-table-bundle"



def format_from_path(path: str | os.PathLike) -> str:
    """The format named by a file's extension (.json .yaml/.yml .npz .csv .h/.cuh)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in EXTENSIONS:
        raise FewbitError(f"{os.fspath(path)}: cannot tell the table format from the extension "
                          f"{ext or '(none)'!r}; name one of {', '.join(FORMATS)}")
    return EXTENSIONS[ext]


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise FewbitError(f"unknown table format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def dumps(table: Table, fmt: str, *, c_name: str | None = None) -> bytes:
    """Serialise `table` in format `fmt`. `c_name` sets the C identifier prefix (format "h")."""
    _check_format(fmt)
    if fmt == "json":
        return _dump_json(table.to_dict()).encode()
    if fmt == "yaml":
        return _dump_yaml(table.to_dict()).encode()
    if fmt == "npz":
        return _dump_npz(table.to_dict())
    if fmt == "csv":
        return _dump_csv(table.to_dict()).encode()
    return _dump_header(table.to_dict(), c_name or _c_name_for(table)).encode()


def loads(data: bytes, fmt: str, *, source: str = "table") -> Table:
    """Parse and validate a table; raise FewbitError naming `source` and the field."""
    _check_format(fmt)
    try:
        if fmt == "npz":
            d = _load_npz(data, source)
        else:
            text = _decode(data, source)
            d = {"json": _load_json, "yaml": _load_yaml, "csv": _load_csv, "h": _load_header}[fmt](text, source)
        _check_solver(d, source)
        return Table.from_dict(d, source=source)
    except FewbitError:
        raise
    except (ValueError, TypeError, OverflowError, KeyError, IndexError, RecursionError) as e:
        # A safety net: malformed content that slipped past the field checks.
        raise FewbitError(f"{source}: malformed {fmt} table ({type(e).__name__}: {_one_line(e)})") from None


def write_table(table: Table, path: str | os.PathLike, fmt: str | None = None) -> str:
    """Write `table` to `path` atomically; the format comes from the extension unless given."""
    path = os.fspath(path)
    fmt = _check_format(fmt) if fmt else format_from_path(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    atomic_write(path, dumps(table, fmt, c_name=_c_identifier(f"fewbit_{stem}")))
    return path


def read_table(path: str | os.PathLike, fmt: str | None = None) -> Table:
    """Read and validate a table file; the format comes from the extension unless given."""
    path = os.fspath(path)
    fmt = _check_format(fmt) if fmt else format_from_path(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_TABLE_BYTES:
            raise FewbitError(f"{path}: {size / 2**20:.0f} MiB, over the table limit of "
                              f"{MAX_TABLE_BYTES / 2**20:.0f} MiB")
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise FewbitError(f"{path}: cannot read ({e.strerror or e})") from None
    return loads(data, fmt, source=path)


# -- helpers shared by the readers ---------------------------------------------------

def _one_line(e) -> str:
    return " ".join(str(e).split())[:200]


def _decode(data: bytes, source: str) -> str:
    if not isinstance(data, (bytes, bytearray)):
        raise FewbitError(f"{source}: expected bytes, got {type(data).__name__}")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FewbitError(f"{source}: not UTF-8 text (byte {e.start})") from None


def _check_solver(d, source: str) -> None:
    """The solver block is free-form but must stay plain, finite JSON."""
    if not isinstance(d, dict) or "solver" not in d:
        return

    budget = [100_000]      # YAML aliases can make a small file a huge tree

    def walk(v, where):
        budget[0] -= 1
        if budget[0] < 0:
            raise FewbitError(f"{source}: field 'solver' is too large")
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise FewbitError(f"{source}: field '{where}' has a non-string key {k!r}")
                walk(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise FewbitError(f"{source}: field '{where}' must be finite, got {v!r}")
        elif not (v is None or isinstance(v, (str, int, bool))):
            raise FewbitError(f"{source}: field '{where}' must be plain JSON, got {type(v).__name__}")

    walk(d["solver"], "solver")


# -- JSON: the canonical form, one top-level key per line -----------------------------

def _dump_json(d: dict) -> str:
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items())
    return "{\n" + body + "\n}\n"


def _no_duplicates(source: str):
    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise FewbitError(f"{source}: field {k[:60]!r} is given twice")
            d[k] = v
        return d
    return hook


def _load_json(text: str, source: str):
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(source))
    except json.JSONDecodeError as e:
        raise FewbitError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


# -- YAML: the same mapping; PyYAML writes floats as repr (bit-exact) -----------------

def _yaml():
    import yaml
    return yaml


def _dump_yaml(d: dict) -> str:
    yaml = _yaml()
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    # the arrays last, levels the very last as a flow list: a truncated file never parses as a table
    d = {**{k: v for k, v in d.items() if k not in ARRAYS}, **{k: d[k] for k in ARRAYS}}
    return yaml.dump(d, Dumper=dumper, sort_keys=False, default_flow_style=None, width=100)


def _unique_key_loader(yaml, source: str):
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str) and key in seen:
                    raise FewbitError(f"{source}: field {key[:60]!r} is given twice "
                                      f"(line {key_node.start_mark.line + 1})")
                if isinstance(key, str):
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_yaml_map)
    return Loader


def _load_yaml(text: str, source: str):
    yaml = _yaml()
    loader = _unique_key_loader(yaml, source)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise FewbitError(f"{source}: not valid YAML ({problem}{where})") from None


# -- NPZ: raw float64/int64 arrays plus the rest of the mapping as a JSON string -----

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)   # fixed, so the same table gives the same bytes


def _dump_npz(d: dict) -> bytes:
    meta = {k: v for k, v in d.items() if k not in ARRAYS}
    arrays = {"boundaries": np.asarray(d["boundaries"], dtype=np.float64),
              "codes": np.asarray(d["codes"], dtype=np.int64),
              "levels": np.asarray(d["levels"], dtype=np.float64),
              "meta": np.array(json.dumps(meta))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), member.getvalue())
    return buf.getvalue()


MAX_TABLE_BYTES = 64 * 2 ** 20     # a table file, and what an NPZ table may inflate to


def _load_npz(data: bytes, source: str) -> dict:
    try:                   # sizes from the zip directory, before anything is inflated
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            inflated = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        inflated = 0                        # not an archive: np.load says what is wrong
    if inflated > MAX_TABLE_BYTES:
        raise FewbitError(f"{source}: the NPZ inflates to {inflated / 2**20:.0f} MiB, over the table "
                          f"limit of {MAX_TABLE_BYTES / 2**20:.0f} MiB")
    try:
        npz = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except Exception as e:   # numpy raises many types on garbage: ValueError, BadZipFile, EOFError, OSError
        raise FewbitError(f"{source}: not a valid NPZ file ({_one_line(e) or type(e).__name__})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise FewbitError(f"{source}: not a valid NPZ file (a single array, not an archive)")
    with npz:
        missing = [k for k in ("meta", *ARRAYS) if k not in npz.files]
        if missing:
            raise FewbitError(f"{source}: missing field '{missing[0]}'")
        out = {}
        for key in ("meta", *ARRAYS):
            try:
                out[key] = npz[key]
            except Exception as e:
                raise FewbitError(f"{source}: field '{key}' is unreadable ({_one_line(e) or type(e).__name__})") from None
    meta = out.pop("meta")
    if meta.dtype.kind != "U" or meta.ndim != 0:
        raise FewbitError(f"{source}: field 'meta' must be a JSON string")
    try:
        d = json.loads(str(meta), object_pairs_hook=_no_duplicates(f"{source}: field 'meta'"))
    except json.JSONDecodeError as e:
        raise FewbitError(f"{source}: field 'meta' is not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise FewbitError(f"{source}: field 'meta' must be a JSON mapping")
    d.update(out)
    return d


# -- CSV: '# key: value' metadata, then the intervals, then the levels ----------------
#
#   # format: fewbit-table
#   # version: 1
#   # activation: gelu
#   # activation.params: {}
#   ...
#   interval,lower,upper,code        one row per interval; lower/upper are the boundaries
#   0,-inf,-1.25,0                   (x is in the interval when lower <= x < upper)
#   ...
#                                    (blank line)
#   code,level
#   0,-0.0833
#   ...

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


def _parse_float(tok: str, where: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise FewbitError(f"{where} is not a number: {tok[:40]!r}") from None


def _parse_int(tok: str, where: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,18}", tok.strip()):
        raise FewbitError(f"{where} is not an integer: {tok[:40]!r}")
    return int(tok)


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


# -- C/CUDA header: static const arrays, a lookup function, the metadata as JSON ------

_HEADER_TEMPLATE = """\
/* fewbit table: {title}
 * relative error {rel:.6g} (mse {mse:.6g}); generated by fewbit-design {version}.
 *
 * q(x) = levels[codes[i]] where i = the number of boundaries <= x: {p}_level(x).
 * In CUDA code (__CUDACC__) the arrays are __device__ and the functions device-only;
 * define FEWBIT_STORAGE and FEWBIT_FN before including to choose otherwise.
 *
 * fewbit-table-json: {meta}
 */
#ifndef {guard}
#define {guard}

#ifndef FEWBIT_STORAGE
#ifdef __CUDACC__
#define FEWBIT_STORAGE static __device__ const
#else
#define FEWBIT_STORAGE static const
#endif
#endif
#ifndef FEWBIT_FN
#ifdef __CUDACC__
#define FEWBIT_FN static __device__ __forceinline__
#else
#define FEWBIT_FN static inline
#endif
#endif

#define {P}_BITS {bits}
#define {P}_N_BOUNDARIES {nb}
#define {P}_N_INTERVALS {ni}
#define {P}_N_LEVELS {nl}

{boundaries_decl}
FEWBIT_STORAGE unsigned char {p}_codes[{ni}] = {{{codes}}};
FEWBIT_STORAGE double {p}_levels[{nl}] = {{{levels}}};

/* Interval of x: the number of boundaries <= x (NaN goes to the last interval). */
FEWBIT_FN int {p}_interval(double x) {{
{interval_body}
}}

/* The {bits}-bit code stored for x. */
FEWBIT_FN unsigned char {p}_code(double x) {{ return {p}_codes[{p}_interval(x)]; }}

/* The derivative value q(x) used by the backward pass. */
FEWBIT_FN double {p}_level(double x) {{ return {p}_levels[{p}_code(x)]; }}

#endif /* {guard} */
"""

_SEARCH = """\
    int lo = 0, hi = {nb};  /* invariant: boundaries[0..lo) <= x < boundaries[hi..{nb}) */
    if (x != x) return {nb};
    while (lo < hi) {{
        int mid = (lo + hi) / 2;
        if ({p}_boundaries[mid] <= x) lo = mid + 1; else hi = mid;
    }}
    return lo;"""


def _c_identifier(s: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", s)
    return s if not s[:1].isdigit() else f"_{s}"


def _c_name_for(table: Table) -> str:
    return _c_identifier(f"fewbit_{table.activation}_{table.bits}bit_{table.distribution}")


def _c_list(values, per_line: int) -> str:
    items = list(values)
    if len(items) <= per_line:
        return ", ".join(items)
    chunks = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "\n    " + ",\n    ".join(chunks) + "\n"


def _dump_header(d: dict, prefix: str) -> str:
    meta = {k: v for k, v in d.items() if k not in ARRAYS}
    # '/' only occurs inside JSON strings, where '\/' is a valid escape: no '*/' can close the comment
    meta_json = json.dumps(meta, ensure_ascii=True).replace("/", "\\/")
    nb, ni, nl = len(d["boundaries"]), len(d["codes"]), len(d["levels"])
    p = prefix
    if nb:
        boundaries_decl = (f"FEWBIT_STORAGE double {p}_boundaries[{nb}] = "
                           f"{{{_c_list((repr(float(v)) for v in d['boundaries']), 4)}}};")
        interval_body = _SEARCH.format(nb=nb, p=p)
    else:
        boundaries_decl = f"/* {p}_boundaries: none (one interval) */"
        interval_body = "    (void)x;\n    return 0;"
    act, dist = d["activation"], d["distribution"]
    params = ", ".join(f"{k}={v}" for k, v in act["params"].items())
    dparams = ", ".join(f"{k}={v}" for k, v in dist["params"].items())
    title = f"{act['name']}({params}), {d['bits']} bits, {dist['name']}({dparams}), {d['partition']} partition"
    title = "".join(ch if ch.isprintable() else "?" for ch in title).replace("*/", "* /")
    return _HEADER_TEMPLATE.format(
        title=title, rel=d["error"]["relative"], mse=d["error"]["mse"], version=__version__,
        meta=meta_json, guard=f"{p.upper()}_H_", p=p, P=p.upper(), bits=d["bits"],
        nb=nb, ni=ni, nl=nl, boundaries_decl=boundaries_decl, interval_body=interval_body,
        codes=_c_list((str(int(c)) for c in d["codes"]), 16),
        levels=_c_list((repr(float(v)) for v in d["levels"]), 4))


_C_ARRAY = re.compile(r"FEWBIT_STORAGE\s+(?:double|unsigned char)\s+(\w+?)_(boundaries|codes|levels)"
                      r"\s*\[\s*(\d+)\s*\]\s*=\s*\{([^}]*)\}\s*;")
_C_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_C_META = re.compile(r"^ \* fewbit-table-json: (.*)$", re.MULTILINE)
_C_END = re.compile(r"#endif /\* \w+_H_ \*/\s*$")


def _load_header(text: str, source: str) -> dict:
    if not _C_END.search(text):
        raise FewbitError(f"{source}: truncated or not a fewbit table header (no closing '#endif' line)")
    m = _C_META.search(text)
    if not m:
        raise FewbitError(f"{source}: not a fewbit table header (no 'fewbit-table-json:' metadata line)")
    try:
        d = json.loads(m.group(1), object_pairs_hook=_no_duplicates(source))
    except json.JSONDecodeError as e:
        raise FewbitError(f"{source}: the metadata line is not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise FewbitError(f"{source}: the metadata line must be a JSON mapping")
    found = {}
    code = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    for am in _C_ARRAY.finditer(code):
        key, size, body = am.group(2), int(am.group(3)), am.group(4)
        if key in found:
            raise FewbitError(f"{source}: field '{key}' is declared twice")
        toks = [t.strip() for t in body.split(",")]
        toks = toks[:-1] if toks and toks[-1] == "" else toks
        if len(toks) != size:
            raise FewbitError(f"{source}: field '{key}' declares {size} values but lists {len(toks)}")
        vals = []
        for i, t in enumerate(toks):
            if key == "codes":
                vals.append(_parse_int(t, f"{source}: field 'codes[{i}]'"))
            elif _C_FLOAT.fullmatch(t):
                vals.append(float(t))
            else:
                raise FewbitError(f"{source}: field '{key}[{i}]' is not a decimal number: {t[:40]!r}")
        found[key] = vals
    prefixes = {am.group(1) for am in _C_ARRAY.finditer(code)}
    if "boundaries" not in found and re.search(r"^/\* \w+_boundaries: none \(one interval\) \*/$", text, re.M):
        found["boundaries"] = []
    for key in ARRAYS:
        if key not in found:
            raise FewbitError(f"{source}: missing field '{key}' (no array declaration found)")
    d.update(found)
    # the code (macros, functions) must be what these arrays give: an edited lookup would
    # make C disagree with the table that is checked
    if len(prefixes) != 1:
        raise FewbitError(f"{source}: the arrays must share one prefix, found {len(prefixes)}")
    try:
        expected = _dump_header({**d, "boundaries": [float(v) for v in d["boundaries"]]}, prefixes.pop())
    except (KeyError, TypeError, ValueError, AttributeError):
        return d                    # malformed: Table.from_dict names the field
    if _strip_c_comments(expected) != _strip_c_comments(text):
        raise FewbitError(f"{source}: the header's code (macros or lookup functions) differs from "
                          "what its arrays give: edited after it was written?")
    return d


def _strip_c_comments(text: str) -> str:
    return "\n".join(line.rstrip() for line in re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL).splitlines()
                     if line.strip())


# -- the bundle: many tables in one compact JSON (the shipped tables) ----------------

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

