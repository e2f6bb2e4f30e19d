"""Table files: bit-exact round trips in every format, refusal of corrupt input, atomic writes."""

import json
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewbit_design import formats
from fewbit_design.errors import FewbitError
from fewbit_design.table import Table

FORMATS = formats.FORMATS


def make_table(bits=3, partition="contiguous", seed=0, n_intervals=None):
    rng = np.random.default_rng(seed)
    n_levels = 2 ** bits
    if partition == "contiguous":
        codes = np.arange(n_levels)
    else:
        n = n_intervals or 2 * n_levels
        codes = np.concatenate([np.arange(n_levels), rng.integers(0, n_levels, n - n_levels)])
        rng.shuffle(codes)
    boundaries = np.sort(rng.normal(size=codes.size - 1) * 2)
    levels = rng.normal(size=n_levels)
    return Table(activation="gelu", bits=bits, boundaries=boundaries, codes=codes, levels=levels,
                 mse=float(rng.random() * 1e-3), relative_error=float(rng.random() * 1e-2), params={},
                 distribution="normal", dist_params={"mean": 0.0, "std": 1.0}, partition=partition,
                 solver={"grid": 4096, "version": "0.1.0", "range": [-8.5, 8.5]})


def canonical(t: Table) -> str:
    """The canonical JSON text: equal strings mean bit-identical floats (repr) and types."""
    return json.dumps(t.to_dict())


def assert_same(a: Table, b: Table):
    assert canonical(a) == canonical(b)
    for key in formats.ARRAYS:
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), key


# -- round trips ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("partition", ["contiguous", "levelset"])
def test_round_trip_every_format_and_bits(fmt, bits, partition, tmp_path):
    t = make_table(bits, partition, seed=bits)
    path = tmp_path / f"t.{'h' if fmt == 'h' else fmt}"
    formats.write_table(t, path)
    assert_same(formats.read_table(path), t)
    assert_same(formats.loads(formats.dumps(t, fmt), fmt, source="mem"), t)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dumps_is_deterministic(fmt):
    t = make_table(4, "levelset")
    assert formats.dumps(t, fmt) == formats.dumps(make_table(4, "levelset"), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_interval_table(fmt):
    t = Table(activation="relu", bits=1, boundaries=[], codes=[0], levels=[0.5], mse=0.25,
              relative_error=0.5, distribution="normal", dist_params={"mean": 0.0, "std": 1.0})
    assert_same(formats.loads(formats.dumps(t, fmt), fmt, source="x"), t)


def test_format_from_path():
    assert [formats.format_from_path(p) for p in ("a.json", "b.YAML", "c.yml", "d.npz", "e.csv", "f.h", "g.cuh")] == \
        ["json", "yaml", "yaml", "npz", "csv", "h", "h"]
    with pytest.raises(FewbitError, match="t.txt"):
        formats.format_from_path("t.txt")
    with pytest.raises(FewbitError, match="unknown table format"):
        formats.dumps(make_table(), "xml")


# -- hypothesis: any valid table round-trips bit-exactly -----------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)           # subnormals and ±1.8e308 included
float32_range = st.floats(-3.4e38, 3.4e38)                         # levels beyond float32 are refused
nonneg = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
names = st.text(min_size=0, max_size=12)                            # unicode, quotes, newlines, '*/'
plain = st.one_of(st.integers(-2 ** 53, 2 ** 53), finite, st.text(max_size=8), st.booleans(), st.none())


@st.composite
def tables(draw):
    bits = draw(st.integers(1, 8))
    n_levels = draw(st.integers(1, 2 ** bits))
    partition = draw(st.sampled_from(["contiguous", "levelset"]))
    if partition == "contiguous":
        codes = list(range(n_levels))
    else:
        codes = draw(st.lists(st.integers(0, n_levels - 1), min_size=1, max_size=40))
    bounds = sorted(draw(st.lists(finite, min_size=len(codes) - 1, max_size=len(codes) - 1, unique=True)))
    return Table(activation=draw(names), bits=bits, boundaries=bounds, codes=codes,
                 levels=draw(st.lists(float32_range, min_size=n_levels, max_size=n_levels)),
                 mse=draw(nonneg), relative_error=draw(nonneg),
                 params=draw(st.dictionaries(st.text(max_size=6), st.one_of(finite, st.integers(-99, 99)), max_size=3)),
                 distribution=draw(names),
                 dist_params=draw(st.dictionaries(st.text(max_size=6), st.one_of(finite, st.text(max_size=8)), max_size=3)),
                 partition=partition,
                 solver=draw(st.dictionaries(st.text(max_size=6), plain, max_size=4)))


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=tables())
def test_hypothesis_round_trip(fmt, t):
    assert_same(formats.loads(formats.dumps(t, fmt), fmt, source="generated"), t)


# -- corrupt input: refused with one line naming the file, never a traceback ----------

def _refused(data: bytes, fmt: str, *fragments: str):
    with pytest.raises(FewbitError) as info:
        formats.loads(data, fmt, source="bad-file")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("bad-file"), msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_bytes_refused(fmt):
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 100, 5000):
        _refused(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), fmt)
    _refused(b"\x00" * 64, fmt)
    _refused(b"[1, 2, 3]\n", fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_refused(fmt):
    data = formats.dumps(make_table(3, "levelset"), fmt)
    body = data.rstrip()
    cuts = sorted(set(np.linspace(0, len(body) - 1, 60).astype(int)) | {len(body) - 1, len(body) - 2})
    for cut in cuts:
        _refused(data[:cut], fmt)


def _edit(fmt: str, t: Table, change) -> bytes:
    """Serialise the canonical mapping of `t` after `change(d)`, bypassing Table's checks."""
    d = t.to_dict()
    change(d)
    if fmt == "h":
        return formats._dump_header(d, "fewbit_t").encode()
    dumper = {"json": formats._dump_json, "yaml": formats._dump_yaml, "csv": formats._dump_csv,
              "npz": formats._dump_npz}[fmt]
    out = dumper(d)
    return out if isinstance(out, bytes) else out.encode()


EDITS = {
    "non-ascending boundary": (lambda d: d["boundaries"].__setitem__(1, d["boundaries"][0] - 1.0), "boundaries"),
    "code out of range": (lambda d: d["codes"].__setitem__(2, 99), "codes"),
    "negative code": (lambda d: d["codes"].__setitem__(0, -1), "codes"),
    "NaN level": (lambda d: d["levels"].__setitem__(0, math.nan), "levels"),
    "infinite boundary": (lambda d: d["boundaries"].__setitem__(-1, math.inf), "boundaries"),
    "wrong version": (lambda d: d.__setitem__("version", 2), "version"),
    "bits out of range": (lambda d: d.__setitem__("bits", 9), "bits"),
    "too many levels": (lambda d: d.__setitem__("bits", 2), "levels"),
    "lengths differ": (lambda d: d["codes"].pop(), "codes"),
    "NaN error": (lambda d: d["error"].__setitem__("mse", math.nan), "error.mse"),
    "bad partition": (lambda d: d.__setitem__("partition", "spiral"), "partition"),
    "not our format": (lambda d: d.__setitem__("format", "other"), "format"),
    "missing bits": (lambda d: d.pop("bits"), "bits"),
    "missing format": (lambda d: d.pop("format"), "format"),
    "level beyond float32": (lambda d: d["levels"].__setitem__(0, 1e39), "levels"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edited_files_refused(fmt, edit):
    change, field = EDITS[edit]
    if fmt == "csv" and edit == "lengths differ":
        field = "boundaries"      # one row per interval: a dropped code shows as a dropped interval
    if fmt == "h" and edit == "NaN level":
        field = "levels[0]"
    t = make_table(3, "levelset")
    if edit == "missing bits" and fmt in ("csv", "h"):      # their writers need 'bits': edit the text
        text = formats.dumps(t, fmt).decode()
        data = text.replace("# bits: 3\n", "").replace('"bits": 3, ', "").encode()
        assert data != text.encode()
    elif edit == "missing format" and fmt in ("csv", "h"):
        text = formats.dumps(t, fmt).decode()
        data = text.replace("# format: fewbit-table\n", "").replace('"format": "fewbit-table", ', "").encode()
        assert data != text.encode()
    else:
        data = _edit(fmt, t, change)
    _refused(data, fmt, field)


def test_csv_hand_edits_refused():
    text = formats.dumps(make_table(2), "csv").decode()
    lines = text.splitlines()
    i = lines.index("interval,lower,upper,code")
    row = lines[i + 2].split(",")
    row[1] = "0.123456"                                   # no longer where the previous interval ends
    bad = lines[:i + 2] + [",".join(row)] + lines[i + 3:]
    _refused(("\n".join(bad) + "\n").encode(), "csv", "boundaries")
    _refused(text.replace("# bits: 2", "# bits: two").encode(), "csv", "bits")
    _refused(text.replace("code,level", "code,value").encode(), "csv", "levels")
    _refused(text.replace("# partition:", "# colour: blue\n# partition:").encode(), "csv", "colour")


def test_header_hand_edits_refused():
    text = formats.dumps(make_table(2), "h").decode()
    _refused(text.replace("_levels[4] = {", "_levels[4] = {0x1p3, ").encode(), "h", "levels")
    _refused(text.replace("_codes[4]", "_codes[5]").encode(), "h", "codes")
    _refused(text.replace("fewbit-table-json: {", "fewbit-table-json: {{").encode(), "h", "metadata")


def test_npz_refuses_pickles_and_single_arrays(tmp_path):
    import io
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _refused(buf.getvalue(), "npz")
    buf = io.BytesIO()
    np.savez(buf, meta=np.array([{"a": 1}], dtype=object), boundaries=np.zeros(3),
             codes=np.arange(4), levels=np.zeros(4))
    _refused(buf.getvalue(), "npz", "meta")


def test_read_table_names_missing_file(tmp_path):
    with pytest.raises(FewbitError, match="nope.json"):
        formats.read_table(tmp_path / "nope.json")


# -- atomic writes -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_write_leaves_existing_file_intact(fmt, tmp_path, monkeypatch):
    path = tmp_path / f"t.{fmt}"
    old = make_table(2)
    formats.write_table(old, path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        formats.write_table(make_table(5, seed=3), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]             # no temporary file left behind


# -- the C header compiles and computes the same q(x) --------------------------------

@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_header_compiles_and_agrees(tmp_path):
    t = make_table(3, "levelset")
    formats.write_table(t, tmp_path / "gelu-3bit.h")
    xs = np.concatenate([t.boundaries, np.nextafter(t.boundaries, -np.inf), [-1e300, 0.0, 1e300, -5e-324]])
    src = tmp_path / "main.c"
    src.write_text(
        '#include <stdio.h>\n#include "gelu-3bit.h"\n'
        f"static const double xs[{xs.size}] = {{{', '.join(repr(float(x)) for x in xs)}}};\n"
        "int main(void) {\n"
        f"  for (int i = 0; i < {xs.size}; i++)\n"
        '    printf("%d %d %a\\n", fewbit_gelu_3bit_interval(xs[i]), fewbit_gelu_3bit_code(xs[i]), '
        "fewbit_gelu_3bit_level(xs[i]));\n"
        "  for (int i = 0; i < FEWBIT_GELU_3BIT_N_LEVELS; i++) printf(\"L %a\\n\", fewbit_gelu_3bit_levels[i]);\n"
        "  for (int i = 0; i < FEWBIT_GELU_3BIT_N_BOUNDARIES; i++) printf(\"B %a\\n\", fewbit_gelu_3bit_boundaries[i]);\n"
        "  return 0;\n}\n")
    exe = tmp_path / "main"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True, cwd=tmp_path)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    rows = [line.split() for line in out if line[0] not in "LB"]
    assert [int(r[0]) for r in rows] == t.interval(xs).tolist()
    assert [int(r[1]) for r in rows] == t.code(xs).tolist()
    assert [float.fromhex(r[2]) for r in rows] == t.q(xs).tolist()
    # decimal literals in the header are exact: the compiled doubles equal the table's bit for bit
    assert [float.fromhex(line[2:]) for line in out if line[0] == "L"] == t.levels.tolist()
    assert [float.fromhex(line[2:]) for line in out if line[0] == "B"] == t.boundaries.tolist()


# -- the text summary (write-only) and samples paths written relative to the file ----------

def test_text_is_written_never_read(tmp_path):
    t = make_table(2)
    text = formats.dumps(t, "text").decode()
    assert text.splitlines()[0].startswith(f"{t.activation}: 2-bit contiguous table for inputs ~ ")
    assert len(text.splitlines()) == 5 + t.n_intervals
    assert formats.write_table(t, tmp_path / "t.txt", "text") == str(tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == text
    for call in (lambda: formats.loads(text.encode(), "text"), lambda: formats.read_table(tmp_path / "t.txt", "text")):
        with pytest.raises(FewbitError) as info:
            call()
        assert str(info.value) == "the text summary is not read back; expected one of json, yaml, npz, csv, h"


def test_write_table_base_rewrites_a_relative_samples_path(tmp_path):
    d = make_table(2).to_dict()
    d["distribution"] = {"name": "samples", "params": {"path": "acts.npy", "count": 3, "sha256": "0" * 64}}
    t = Table.from_dict(d)
    (tmp_path / "a").mkdir()

    def written(path, **kw):
        return formats.read_table(formats.write_table(t, path, **kw)).dist_params["path"]

    assert written(tmp_path / "a" / "kept.json") == "acts.npy"               # no base: as it is
    assert written(tmp_path / "a" / "t.json", base=tmp_path) == os.path.join("..", "acts.npy")
    assert written(tmp_path / "a" / "t.csv", base=tmp_path / "a") == "acts.npy"
    d["distribution"]["params"]["path"] = str(tmp_path / "acts.npy")          # absolute: as it is
    assert formats.read_table(formats.write_table(Table.from_dict(d), tmp_path / "a" / "abs.json", base="x")
                              ).dist_params["path"] == str(tmp_path / "acts.npy")
