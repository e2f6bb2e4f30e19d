"""Table files: bit-exact round trips in every format, refusal of corrupt input, atomic writes."""

import io
import json
import math
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewbit_design import __version__, formats
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


# ==================================================================================================
# Claims. Table files, pinned byte for byte and message for message (fewbit_design/formats/).
#
# The tests above check round trips and that corrupt input is refused; the ones below pin what a
# user sees: the exact bytes each writer produces, each reader's one-line message for each kind
# of bad input, the size limits from both sides, the C prefix, and the bundle. Written against
# formats' surviving mutants (README, "Tests as strong as the claims, and mutation testing").
# ==================================================================================================


def small(**kw):
    args = dict(activation="gelu", bits=2, boundaries=[-1.5, 0.0, 0.75], codes=[0, 1, 2, 3],
                levels=[-0.125, 0.25, 1.0, 1.5], mse=0.001, relative_error=0.01, params={"a": 1.0},
                distribution="normal", dist_params={"mean": 0.0, "std": 1.0}, partition="contiguous",
                solver={"grid": 64, "seconds": 1.5})
    args.update(kw)
    return Table(**args)


def wide():
    """3 bits, level set, 17 intervals: every array is longer than one C line."""
    return Table(activation="tanh", bits=3, boundaries=[float(i) - 8 for i in range(16)],
                 codes=[i % 8 for i in range(17)], levels=[i / 8 for i in range(8)], mse=0.0,
                 relative_error=0.0, distribution="normal", dist_params={}, partition="levelset")


def refused(data, fmt, message, source="bad"):
    with pytest.raises(FewbitError) as info:
        formats.loads(data, fmt, source=source)
    assert str(info.value) == message
    return info


# -- the writers, byte for byte ---------------------------------------------------------

JSON = """\
{
  "format": "fewbit-table",
  "version": 1,
  "activation": {"name": "gelu", "params": {"a": 1.0}},
  "bits": 2,
  "distribution": {"name": "normal", "params": {"mean": 0.0, "std": 1.0}},
  "partition": "contiguous",
  "boundaries": [-1.5, 0.0, 0.75],
  "codes": [0, 1, 2, 3],
  "levels": [-0.125, 0.25, 1.0, 1.5],
  "error": {"mse": 0.001, "relative": 0.01},
  "solver": {"grid": 64, "seconds": 1.5}
}
"""

YAML = """\
format: fewbit-table
version: 1
activation:
  name: gelu
  params: {a: 1.0}
bits: 2
distribution:
  name: normal
  params: {mean: 0.0, std: 1.0}
partition: contiguous
error: {mse: 0.001, relative: 0.01}
solver: {grid: 64, seconds: 1.5}
boundaries: [-1.5, 0.0, 0.75]
codes: [0, 1, 2, 3]
levels: [-0.125, 0.25, 1.0, 1.5]
"""

CSV = """\
# format: fewbit-table
# version: 1
# activation: gelu
# activation.params: {"a": 1.0}
# bits: 2
# distribution: normal
# distribution.params: {"mean": 0.0, "std": 1.0}
# partition: contiguous
# error.mse: 0.001
# error.relative: 0.01
# solver: {"grid": 64, "seconds": 1.5}
interval,lower,upper,code
0,-inf,-1.5,0
1,-1.5,0.0,1
2,0.0,0.75,2
3,0.75,inf,3

code,level
0,-0.125
1,0.25
2,1.0
3,1.5
# end
"""

HEADER = """\
/* fewbit table: gelu(a=1.0), 2 bits, normal(mean=0.0, std=1.0), contiguous partition
 * relative error 0.01 (mse 0.001); generated by fewbit-design VERSION.
 *
 * q(x) = levels[codes[i]] where i = the number of boundaries <= x: fewbit_gelu_2bit_normal_level(x).
 * In CUDA code (__CUDACC__) the arrays are __device__ and the functions device-only;
 * define FEWBIT_STORAGE and FEWBIT_FN before including to choose otherwise.
 *
 * fewbit-table-json: {"format": "fewbit-table", "version": 1, "activation": {"name": "gelu", "params": {"a": 1.0}}, \
"bits": 2, "distribution": {"name": "normal", "params": {"mean": 0.0, "std": 1.0}}, "partition": "contiguous", \
"error": {"mse": 0.001, "relative": 0.01}, "solver": {"grid": 64, "seconds": 1.5}}
 */
#ifndef FEWBIT_GELU_2BIT_NORMAL_H_
#define FEWBIT_GELU_2BIT_NORMAL_H_

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

#define FEWBIT_GELU_2BIT_NORMAL_BITS 2
#define FEWBIT_GELU_2BIT_NORMAL_N_BOUNDARIES 3
#define FEWBIT_GELU_2BIT_NORMAL_N_INTERVALS 4
#define FEWBIT_GELU_2BIT_NORMAL_N_LEVELS 4

FEWBIT_STORAGE double fewbit_gelu_2bit_normal_boundaries[3] = {-1.5, 0.0, 0.75};
FEWBIT_STORAGE unsigned char fewbit_gelu_2bit_normal_codes[4] = {0, 1, 2, 3};
FEWBIT_STORAGE double fewbit_gelu_2bit_normal_levels[4] = {-0.125, 0.25, 1.0, 1.5};

/* Interval of x: the number of boundaries <= x (NaN goes to the last interval). */
FEWBIT_FN int fewbit_gelu_2bit_normal_interval(double x) {
    int lo = 0, hi = 3;  /* invariant: boundaries[0..lo) <= x < boundaries[hi..3) */
    if (x != x) return 3;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (fewbit_gelu_2bit_normal_boundaries[mid] <= x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* The 2-bit code stored for x. */
FEWBIT_FN unsigned char fewbit_gelu_2bit_normal_code(double x) \
{ return fewbit_gelu_2bit_normal_codes[fewbit_gelu_2bit_normal_interval(x)]; }

/* The derivative value q(x) used by the backward pass. */
FEWBIT_FN double fewbit_gelu_2bit_normal_level(double x) \
{ return fewbit_gelu_2bit_normal_levels[fewbit_gelu_2bit_normal_code(x)]; }

#endif /* FEWBIT_GELU_2BIT_NORMAL_H_ */
""".replace("VERSION", __version__)


@pytest.mark.parametrize("fmt, text", [("json", JSON), ("yaml", YAML), ("csv", CSV), ("h", HEADER)],
                         ids=["json", "yaml", "csv", "h"])
def test_mutant_text_formats_byte_for_byte(fmt, text):
    assert formats.dumps(small(), fmt).decode() == text
    assert formats.loads(text.encode(), fmt, source="s") == small()


def test_mutant_yaml_wraps_flow_lists_at_100_columns():
    t = Table(activation="tanh", bits=8, boundaries=[i / 64 for i in range(23)], codes=list(range(24)),
              levels=[0.0] * 24, mse=0.0, relative_error=0.0)
    text = formats.dumps(t, "yaml").decode()
    assert ("\nboundaries: [0.0, 0.015625, 0.03125, 0.046875, 0.0625, 0.078125, 0.09375, 0.109375, 0.125, 0.140625, "
            "0.15625,\n  0.171875, 0.1875, 0.203125, 0.21875, 0.234375, 0.25, 0.265625, 0.28125, 0.296875, 0.3125, "
            "0.328125,\n  0.34375]\ncodes: [") in text
    assert formats.loads(text.encode(), "yaml", source="s") == t


def test_mutant_yaml_is_plain_safe_yaml():
    # a tuple in the solver block (as a caller may build it) is written as a plain list, as in JSON
    t = small(solver={"range": (-8.5, 8.5)})
    text = formats.dumps(t, "yaml").decode()
    assert "\nsolver:\n  range: [-8.5, 8.5]\n" in text and "!!" not in text
    assert formats.loads(text.encode(), "yaml", source="s").solver == {"range": [-8.5, 8.5]}


def test_mutant_header_array_text_inside_a_comment_is_not_an_array():
    # the title comment spans lines; an activation name that reads like a declaration stays in it
    t = small(activation="FEWBIT_STORAGE double q_codes[1] = {0};")
    text = formats.dumps(t, "h", c_name="p").decode()
    assert text.startswith("/* fewbit table: FEWBIT_STORAGE double q_codes[1] = {0};(a=1.0)")
    assert formats.loads(text.encode(), "h", source="s") == t


def test_mutant_header_wraps_long_arrays_and_names_the_prefix():
    text = formats.dumps(wide(), "h", c_name="p").decode()
    assert ("FEWBIT_STORAGE double p_boundaries[16] = {\n    -8.0, -7.0, -6.0, -5.0,\n    -4.0, -3.0, -2.0, -1.0,\n"
            "    0.0, 1.0, 2.0, 3.0,\n    4.0, 5.0, 6.0, 7.0\n};") in text
    assert ("FEWBIT_STORAGE unsigned char p_codes[17] = {\n    0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7,\n"
            "    0\n};") in text
    assert "FEWBIT_STORAGE double p_levels[8] = {\n    0.0, 0.125, 0.25, 0.375,\n    0.5, 0.625, 0.75, 0.875\n};" in text
    assert "#ifndef P_H_\n" in text and "#define P_N_INTERVALS 17\n" in text
    assert formats.loads(text.encode(), "h", source="s") == wide()


def test_mutant_one_interval_header():
    t = Table(activation="relu", bits=1, boundaries=[], codes=[0], levels=[0.5], mse=0.25, relative_error=0.5)
    text = formats.dumps(t, "h").decode()
    assert "/* fewbit_relu_1bit_normal_boundaries: none (one interval) */\n" in text
    assert "FEWBIT_FN int fewbit_relu_1bit_normal_interval(double x) {\n    (void)x;\n    return 0;\n}" in text
    assert formats.loads(text.encode(), "h", source="s") == t
    # without the comment line, the boundaries are missing
    refused(text.replace("/* fewbit_relu_1bit_normal_boundaries: none (one interval) */", "").encode(), "h",
            "bad: missing field 'boundaries' (no array declaration found)")


def test_mutant_header_title_and_metadata_cannot_close_the_comment():
    t = small(activation="a*/b\tc/d", params={}, dist_params={"k": "x/y"})
    text = formats.dumps(t, "h", c_name="p").decode()
    assert text.startswith("/* fewbit table: a* /b?c/d(), 2 bits, normal(k=x/y), contiguous partition\n")
    assert ' * fewbit-table-json: {"format": "fewbit-table", "version": 1, "activation": {"name": "a*\\/b\\tc\\/d", ' \
           '"params": {}}' in text
    assert text.count("*/") == text.count("/*") == 6                     # each '*/' closes a comment we opened
    assert formats.loads(text.encode(), "h", source="s") == t


def test_mutant_header_title_params_and_ascii_metadata():
    t = small(activation="é", params={"a": 1.0, "b": 2}, dist_params={})
    text = formats.dumps(t, "h", c_name="p").decode()
    assert text.startswith("/* fewbit table: é(a=1.0, b=2), 2 bits, normal(), contiguous partition\n")
    assert ' * fewbit-table-json: {"format": "fewbit-table", "version": 1, "activation": {"name": "\\u00e9", ' \
           '"params": {"a": 1.0, "b": 2}}' in text
    assert formats.loads(text.encode(), "h", source="s") == t


def test_mutant_header_prefix_from_table_file_name_or_argument(tmp_path):
    t = small()
    assert "fewbit_gelu_2bit_normal_level(double x)" in formats.dumps(t, "h").decode()
    assert "fewbit_gelu_2bit_normal_level(double x)" in formats.dumps(t, "h", c_name=None).decode()
    assert "my_t_level(double x)" in formats.dumps(t, "h", c_name="my_t").decode()
    t2 = small(activation="leaky relu", distribution="samples:a.npy")
    assert "fewbit_leaky_relu_2bit_samples_a_npy_level(double x)" in formats.dumps(t2, "h").decode()
    path = tmp_path / "GeLU-2.v1.cuh"
    assert formats.write_table(t, path) == str(path)
    assert "fewbit_GeLU_2_v1_level(double x)" in path.read_text()
    assert "#ifndef FEWBIT_GELU_2_V1_H_" in path.read_text()


def test_mutant_npz_layout():
    data = formats.dumps(small(), "npz")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == ["boundaries.npy", "codes.npy", "levels.npy", "meta.npy"]
        assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        arrays = {i.filename[:-4]: np.lib.format.read_array(io.BytesIO(zf.read(i)), allow_pickle=False)
                  for i in infos}
    assert arrays["boundaries"].dtype == np.float64 and arrays["boundaries"].tolist() == [-1.5, 0.0, 0.75]
    assert arrays["codes"].dtype == np.int64 and arrays["codes"].tolist() == [0, 1, 2, 3]
    assert arrays["levels"].dtype == np.float64 and arrays["levels"].tolist() == [-0.125, 0.25, 1.0, 1.5]
    meta = json.loads(str(arrays["meta"]))
    assert arrays["meta"].ndim == 0 and meta == {k: v for k, v in small().to_dict().items() if k not in formats.ARRAYS}
    assert list(meta) == ["format", "version", "activation", "bits", "distribution", "partition", "error", "solver"]


@pytest.mark.parametrize("name, written", [
    ("gelu", "gelu"), ("x:y #", "x:y #"), ("é", "é"), (" gelu", '" gelu"'), ("gelu ", '"gelu "'),
    ("a\tb", '"a\\tb"'), ('"q', '"\\"q"'), ("", '""')])
def test_mutant_csv_text_fields_quoted_only_when_needed(name, written):
    t = small(activation=name, distribution=name)
    text = formats.dumps(t, "csv").decode()
    assert f"# activation: {written}\n" in text and f"# distribution: {written}\n" in text
    assert formats.loads(text.encode(), "csv", source="s") == t


# -- loads, read_table, write_table ---------------------------------------------------------

def test_mutant_format_names_and_extensions():
    assert formats.format_from_path("A.CUH") == "h" and formats.format_from_path(b"t.yml".decode()) == "yaml"
    with pytest.raises(FewbitError) as info:
        formats.format_from_path("dir.v2/t.txt")
    assert str(info.value) == ("dir.v2/t.txt: cannot tell the table format from the extension '.txt'; "
                               "name one of json, yaml, npz, csv, h")
    with pytest.raises(FewbitError) as info:
        formats.format_from_path("table")
    assert str(info.value) == ("table: cannot tell the table format from the extension '(none)'; "
                               "name one of json, yaml, npz, csv, h")
    for call in (lambda: formats.dumps(small(), "xml"), lambda: formats.loads(b"", "XML"),
                 lambda: formats.write_table(small(), "t.json", "xml"), lambda: formats.read_table("t.json", "xml")):
        with pytest.raises(FewbitError) as info:
            call()
        assert str(info.value).startswith("unknown table format ") and \
            str(info.value).endswith("; expected one of json, yaml, npz, csv, h")


def test_mutant_loads_default_source_and_bytes_only():
    with pytest.raises(FewbitError) as info:
        formats.loads(b"{}", "json")
    assert str(info.value) == "table: missing field 'format'"
    refused("{}", "json", "bad: expected bytes, got str")
    refused(b'{"a": "\xff"}', "yaml", "bad: not UTF-8 text (byte 7)")
    assert formats.loads(bytearray(JSON.encode()), "json", source="s") == small()
    assert formats.loads(bytearray(formats.dumps(small(), "npz")), "npz", source="s") == small()


def test_mutant_safety_net_names_the_format_and_error():
    refused(b"[" * 100_000, "json", "bad: malformed json table (RecursionError: maximum recursion depth exceeded "
            "while decoding a JSON array from a unicode string)")


def test_mutant_write_table_format_argument_and_atomic_target(tmp_path):
    path = tmp_path / "table.txt"
    assert formats.write_table(small(), path, "json") == str(path)
    assert path.read_text() == JSON
    assert formats.read_table(path, "json") == small()
    with pytest.raises(FewbitError, match="extension '.txt'"):
        formats.read_table(path)
    with pytest.raises(FileNotFoundError):
        formats.write_table(small(), tmp_path / "no" / "t.json")


def test_mutant_read_table_size_limit_from_both_sides(tmp_path, monkeypatch):
    assert formats.MAX_TABLE_BYTES == 64 * 2 ** 20
    over = tmp_path / "over.json"
    with open(over, "wb") as fh:                    # sparse: nothing is written
        fh.truncate(100 * 2 ** 20)
    with pytest.raises(FewbitError) as info:
        formats.read_table(over)
    assert str(info.value) == f"{over}: 100 MiB, over the table limit of 64 MiB"
    just_over = tmp_path / "just_over.json"
    with open(just_over, "wb") as fh:
        fh.truncate(64 * 2 ** 20 + 1)
    with pytest.raises(FewbitError, match="over the table limit"):
        formats.read_table(just_over)
    at = tmp_path / "at.json"
    at.write_text(JSON)
    with monkeypatch.context() as m:               # a file of exactly the limit is read; one byte less refuses it
        m.setattr(formats, "MAX_TABLE_BYTES", len(JSON))
        assert formats.read_table(at) == small()
        m.setattr(formats, "MAX_TABLE_BYTES", len(JSON) - 1)
        with pytest.raises(FewbitError) as info:
            formats.read_table(at)
        assert str(info.value) == f"{at}: 0 MiB, over the table limit of 0 MiB"


def test_mutant_read_table_names_an_unreadable_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# format: fewbit-table\n")
    with pytest.raises(FewbitError) as info:
        formats.read_table(bad)
    assert str(info.value) == f"{bad}: truncated or not a fewbit table CSV (the last line must be '# end')"
    with pytest.raises(FewbitError) as info:
        formats.read_table(tmp_path / "nope.json")
    assert str(info.value) == f"{tmp_path / 'nope.json'}: cannot read (No such file or directory)"
    with pytest.raises(FewbitError) as info:
        formats.read_table(tmp_path, "json")
    assert str(info.value) == f"{tmp_path}: cannot read (Is a directory)"


# -- the solver block ----------------------------------------------------------------------

def _with_solver(solver_yaml: str) -> bytes:
    return YAML.replace("solver: {grid: 64, seconds: 1.5}", f"solver: {solver_yaml}").encode()


@pytest.mark.parametrize("solver, message", [
    ("{a: [1, {2: x}]}", "bad: field 'solver.a[1]' has a non-string key 2"),
    ("{a: {b: .nan}}", "bad: field 'solver.a.b' must be finite, got nan"),
    ("{a: [0, -.inf]}", "bad: field 'solver.a[1]' must be finite, got -inf"),
    ("{a: 2020-01-02}", "bad: field 'solver.a' must be plain JSON, got date"),
    ("{a: [1, !!binary aGk=]}", "bad: field 'solver.a[1]' must be plain JSON, got bytes"),
    ("[1]", "bad: field 'solver' must be a mapping"),
])
def test_mutant_solver_must_stay_plain_finite_json(solver, message):
    refused(_with_solver(solver), "yaml", message)


def test_mutant_solver_fields_of_every_plain_type_are_kept():
    solver = {"s": "x", "i": -3, "b": True, "n": None, "f": 0.5, "l": [1, [2.5, "y"], {"k": False}], "d": {}}
    t = formats.loads(_with_solver(json.dumps(solver)), "yaml", source="s")
    assert t.solver == solver
    t = formats.loads(JSON.replace('{"grid": 64, "seconds": 1.5}', json.dumps(solver)).encode(), "json", source="s")
    assert t.solver == solver
    no_solver = JSON.replace(',\n  "solver": {"grid": 64, "seconds": 1.5}', "")
    assert formats.loads(no_solver.encode(), "json", source="s").solver == {}


def test_mutant_solver_size_limit_from_both_sides():
    # 100 000 values in all (the mapping itself is one): accepted; one more is refused
    ok = {"x": list(range(99_998))}
    t = formats.loads(JSON.replace('{"grid": 64, "seconds": 1.5}', json.dumps(ok)).encode(), "json", source="s")
    assert len(t.solver["x"]) == 99_998
    big = {"x": list(range(99_999))}
    refused(JSON.replace('{"grid": 64, "seconds": 1.5}', json.dumps(big)).encode(), "json",
            "bad: field 'solver' is too large")


# -- JSON and YAML readers ---------------------------------------------------------------------

def test_mutant_json_and_yaml_messages():
    refused(b"{\n  \"bits\": }", "json", "bad: not valid JSON (Expecting value at line 2 column 11)")
    long_key = "k" * 100
    refused(('{"%s": 1, "%s": 2}' % (long_key, long_key)).encode(), "json", f"bad: field {'k' * 60!r} is given twice")
    refused(YAML.replace("bits: 2\n", "bits: 2\nbits: 3\n").encode(), "yaml", "bad: field 'bits' is given twice (line 7)")
    refused(YAML.replace("bits: 2\n", f"{long_key}: 2\n{long_key}: 3\n").encode(), "yaml",
            f"bad: field {'k' * 60!r} is given twice (line 7)")
    refused(YAML.replace("  name: gelu\n", "  name: gelu\n  name: tanh\n").encode(), "yaml",
            "bad: field 'name' is given twice (line 5)")
    refused(b"a: [1, 2", "yaml", "bad: not valid YAML (did not find expected ',' or ']' at line 2 column 1)")
    refused(b"a: b\n  c: d\n", "yaml", "bad: not valid YAML (mapping values are not allowed in this context "
            "at line 2 column 4)")
    refused(b"a: \x07", "yaml", "bad: not valid YAML (ReaderError)")
    refused(_with_solver("!foo {a: 1}"), "yaml",
            "bad: not valid YAML (could not determine a constructor for the tag '!foo' at line 12 column 9)")
    with pytest.raises(FewbitError, match=r"^bad: malformed yaml table \(RecursionError: "):   # walked until too deep
        formats.loads(_with_solver("&s {a: *s}"), "yaml", source="bad")
    # a repeated key that is not a string is left to the solver check
    refused(_with_solver("{1: a, 1: b}"), "yaml", "bad: field 'solver' has a non-string key 1")


# -- NPZ reader ----------------------------------------------------------------------------

def _npz(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            if not isinstance(data, bytes):
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asarray(data), allow_pickle=False)
                data = member.getvalue()
            zf.writestr(name, data)
    return buf.getvalue()


def _members(**change):
    d = small().to_dict()
    m = {"meta.npy": np.array(json.dumps({k: v for k, v in d.items() if k not in formats.ARRAYS})),
         "boundaries.npy": np.array(d["boundaries"]), "codes.npy": np.array(d["codes"]),
         "levels.npy": np.array(d["levels"])}
    m.update({f"{k}.npy": v for k, v in change.items()})
    return {k: v for k, v in m.items() if v is not None}


def _numpy_says(data):
    """The first line of what np.load says of `data`: its wording changes between numpy releases (1.24: "Cannot
    load file containing pickled data ..."; 2.x: "This file contains pickled (object) data ..."), so the
    messages below quote the installed numpy's, not a copy of one release's."""
    try:
        np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - whatever numpy raises is what the reader must quote
        return str(e).splitlines()[0]
    raise AssertionError("numpy loaded it")


def test_mutant_npz_messages():
    assert formats.loads(_npz(_members()), "npz", source="s") == small()
    refused(b"", "npz", f"bad: not a valid NPZ file ({_numpy_says(b'')})")
    refused(b"PK\x03\x04garbage", "npz", "bad: not a valid NPZ file (File is not a zip file)")
    single = io.BytesIO()
    np.save(single, np.zeros(3))
    refused(single.getvalue(), "npz", "bad: not a valid NPZ file (a single array, not an archive)")
    refused(_npz(_members(meta=None, codes=None)), "npz", "bad: missing field 'meta'")
    refused(_npz(_members(boundaries=None)), "npz", "bad: missing field 'boundaries'")
    refused(_npz(_members(levels=None)), "npz", "bad: missing field 'levels'")
    refused(_npz(_members(meta=np.array([json.dumps({})]))), "npz", "bad: field 'meta' must be a JSON string")
    refused(_npz(_members(meta=np.array(3))), "npz", "bad: field 'meta' must be a JSON string")
    refused(_npz(_members(meta=np.array("{"))), "npz",
            "bad: field 'meta' is not valid JSON (Expecting property name enclosed in double quotes)")
    refused(_npz(_members(meta=np.array("[]"))), "npz", "bad: field 'meta' must be a JSON mapping")
    refused(_npz(_members(meta=np.array('{"bits": 2, "bits": 3}'))), "npz",
            "bad: field 'meta': field 'bits' is given twice")
    # the arrays of the archive win over same-named keys of meta
    meta = json.loads(str(_members()["meta.npy"]))
    meta["codes"] = [9, 9, 9, 9]
    assert formats.loads(_npz(_members(meta=np.array(json.dumps(meta)))), "npz", source="s") == small()


def test_mutant_npz_never_unpickles():
    import pickle
    refused(pickle.dumps([1]), "npz", f"bad: not a valid NPZ file ({_numpy_says(pickle.dumps([1]))})")
    assert "pickle" in _numpy_says(pickle.dumps([1]))   # refused as pickled data, not as some other error
    single = io.BytesIO()
    np.save(single, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused(single.getvalue(), "npz", "bad: not a valid NPZ file (Object arrays cannot be loaded when allow_pickle=False)")
    archive = io.BytesIO()
    np.savez(archive, meta=np.array([{"a": 1}], dtype=object), boundaries=np.zeros(3), codes=np.arange(4),
             levels=np.zeros(4))
    refused(archive.getvalue(), "npz", "bad: field 'meta' is unreadable (Object arrays cannot be loaded when "
            "allow_pickle=False)")


def test_mutant_npz_member_error_without_a_message_is_named_by_its_type():
    data = bytearray(formats.dumps(small(), "npz"))
    i = data.index(b"levels.npy") - 30                  # the local file header of levels.npy
    assert data[i:i + 4] == b"PK\x03\x04"
    data[i + 28:i + 30] = (0xFFFF).to_bytes(2, "little")  # its extra field runs past the end: a bare EOFError
    refused(bytes(data), "npz", "bad: field 'levels' is unreadable (EOFError)")


def test_mutant_npz_unreadable_member_message_is_one_line_of_200():
    # numpy refuses a header with an extra key, naming the keys: a message over 200 characters
    key = "k  " * 100
    header = ("{'descr': '<i8', 'fortran_order': False, 'shape': (4,), '%s': 0}" % key)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + np.arange(4).tobytes()
    with pytest.raises(ValueError) as info:
        np.lib.format.read_array(io.BytesIO(member), allow_pickle=False)
    numpy_message = str(info.value)
    assert len(numpy_message) > 200 and "k  k" in numpy_message
    expected = " ".join(numpy_message.split())[:200]
    assert len(expected) == 200
    refused(_npz(_members(codes=member)), "npz", f"bad: field 'codes' is unreadable ({expected})")


def test_mutant_npz_inflated_size_limit_from_both_sides(monkeypatch):
    monkeypatch.setattr(formats, "MAX_TABLE_BYTES", 3 * 2 ** 20)
    base = _members()
    stored = sum(len(_npz({k: v})) for k, v in base.items())
    assert stored < 2 ** 12
    sizes = {}
    for name, v in base.items():
        member = io.BytesIO()
        np.lib.format.write_array(member, np.asarray(v), allow_pickle=False)
        sizes[name] = len(member.getvalue())
    pad = 3 * 2 ** 20 - sum(sizes.values())
    # an extra member takes the archive exactly to the limit: read; one byte more: refused
    at = _npz({**base, "pad.bin": b"\0" * pad}, zipfile.ZIP_DEFLATED)
    assert formats.loads(at, "npz", source="s") == small()
    over = _npz({**base, "pad.bin": b"\0" * (pad + 1)}, zipfile.ZIP_DEFLATED)
    refused(over, "npz", "bad: the NPZ inflates to 3 MiB, over the table limit of 3 MiB")
    over = _npz({**base, "pad.bin": b"\0" * (pad + 2 ** 21)}, zipfile.ZIP_DEFLATED)
    refused(over, "npz", "bad: the NPZ inflates to 5 MiB, over the table limit of 3 MiB")


# -- CSV reader --------------------------------------------------------------------------

def _csv_lines():
    return CSV.splitlines()


def _csv(lines) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_mutant_csv_layout_tolerances():
    lines = _csv_lines()
    assert formats.loads((CSV + "\n \n\n").encode(), "csv", source="s") == small()        # blank lines after '# end'
    i = lines.index("")
    assert formats.loads(_csv(lines[:i] + ["", " ", ""] + lines[i:]), "csv", source="s") == small()
    assert formats.loads(_csv(["", *lines]), "csv", source="s") == small()
    quoted = [line.replace("# activation: gelu", '# activation: "gelu"') for line in lines]
    assert formats.loads(_csv(quoted), "csv", source="s") == small()
    spaced = [line.replace("# bits: 2", "#  bits :  2 ") for line in lines]
    assert formats.loads(_csv(spaced), "csv", source="s") == small()
    tight = [line.replace("# bits: 2", "#bits:2") for line in lines]
    assert formats.loads(_csv(tight), "csv", source="s") == small()
    signs = [line.replace("2,0.0,0.75,2", "+2,0.0,0.75, 2") for line in lines]
    assert formats.loads(_csv(signs), "csv", source="s") == small()


@pytest.mark.parametrize("edit, message", [
    (lambda L: L[:-1], "bad: truncated or not a fewbit table CSV (the last line must be '# end')"),
    (lambda L: [], "bad: truncated or not a fewbit table CSV (the last line must be '# end')"),
    (lambda L: L[:2] + ["# colour: blue " + "x" * 80] + L[2:],
     "bad: line 3: unknown metadata line " + repr(("# colour: blue " + "x" * 80)[:60])),
    (lambda L: L[:2] + ["# bits 2"] + L[2:], "bad: line 3: unknown metadata line '# bits 2'"),
    (lambda L: L[:5] + ["# bits: 3"] + L[5:], "bad: field 'bits' is given twice"),
    (lambda L: [x.replace("# bits: 2", "# bits: two") for x in L],
     "bad: field 'bits' is not valid JSON (Expecting value)"),
    (lambda L: [x.replace("# solver: {", '# solver: {"a": 1, "a": 2, ') for x in L],
     "bad: field 'solver': field 'a' is given twice"),
    (lambda L: [x for x in L if not x.startswith("# version")], "bad: missing field 'version'"),
    (lambda L: [x for x in L if not x.startswith("# solver")], "bad: missing field 'solver'"),
    (lambda L: [x for x in L if not x.startswith(("# format", "# solver"))], "bad: missing field 'format'"),
    (lambda L: L[:14] + [""] + L[14:], "bad: expected two sections (intervals, levels), found 3"),
    (lambda L: [x for x in L if x], "bad: expected two sections (intervals, levels), found 1"),
    (lambda L: [x.replace("code,level", "code,value") for x in L],
     "bad: line 18: the levels section must start with 'code,level'"),
    (lambda L: [x.replace("interval,lower", "interval,low") for x in L],
     "bad: line 12: the intervals section must start with 'interval,lower,upper,code'"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "1,-1.5,0.0") for x in L], "bad: line 14: expected 4 columns, got 3"),
    (lambda L: [x.replace("1,0.25", "1,0.25,7") for x in L], "bad: line 20: expected 2 columns, got 3"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "2,-1.5,0.0,1") for x in L], "bad: line 14: column 'interval' should be 1"),
    (lambda L: [x.replace("0,-0.125", "1,-0.125") for x in L], "bad: line 19: column 'code' should be 0"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "one,-1.5,0.0,1") for x in L],
     "bad: line 14: column 'interval' is not an integer: 'one'"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "0000000000000000001,-1.5,0.0,1") for x in L],
     "bad: line 14: column 'interval' is not an integer: '0000000000000000001'"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "1,-1.5,0.0," + "9" * 50) for x in L],
     f"bad: line 14: field 'codes' is not an integer: {'9' * 40!r}"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "1,-1.5,0.0,1.0") for x in L],
     "bad: line 14: field 'codes' is not an integer: '1.0'"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "1,-1.5,zero,1") for x in L],
     "bad: line 14: field 'boundaries' is not a number: 'zero'"),
    (lambda L: [x.replace("2,0.0,0.75,2", "2," + "z" * 50 + ",0.75,2") for x in L],
     f"bad: line 15: field 'boundaries' is not a number: {'z' * 40!r}"),
    (lambda L: [x.replace("2,1.0", "2,one") for x in L], "bad: line 21: field 'levels' is not a number: 'one'"),
    (lambda L: [x.replace("0,-inf,-1.5,0", "0,-9,-1.5,0") for x in L],
     "bad: field 'boundaries': the first interval must start at -inf and the last end at inf"),
    (lambda L: [x.replace("3,0.75,inf,3", "3,0.75,9,3") for x in L],
     "bad: field 'boundaries': the first interval must start at -inf and the last end at inf"),
    (lambda L: L[:12] + L[16:], "bad: field 'boundaries': the first interval must start at -inf and the last end at inf"),
    (lambda L: [x.replace("2,0.0,0.75,2", "2,0.5,0.75,2") for x in L],
     "bad: line 15: field 'boundaries': interval 2 must start where interval 1 ends"),
    (lambda L: [x.replace("3,0.75,inf,3", "3,0.8,inf,3") for x in L],
     "bad: line 16: field 'boundaries': interval 3 must start where interval 2 ends"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "1,-1.5,nan,1") for x in L],
     "bad: line 15: field 'boundaries': interval 2 must start where interval 1 ends"),
    (lambda L: [x.replace("2,0.0,0.75,2", "2,nan,0.75,2") for x in L],
     "bad: line 15: field 'boundaries': interval 2 must start where interval 1 ends"),
    (lambda L: [x.replace("1,-1.5,0.0,1", "1,-1.5,nan,1").replace("2,0.0,0.75,2", "2,nan,0.75,2") for x in L],
     "bad: field 'boundaries'[1] must be finite, got nan"),         # NaN continues NaN: left to Table
])
def test_mutant_csv_messages(edit, message):
    refused(_csv(edit(_csv_lines())), "csv", message)


# -- C header reader ------------------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [   # edit: {old text: new text}, in order
    ({"#endif /* FEWBIT_GELU_2BIT_NORMAL_H_ */": ""},
     "bad: truncated or not a fewbit table header (no closing '#endif' line)"),
    ({" * fewbit-table-json:": " * fewbit-table:"},
     "bad: not a fewbit table header (no 'fewbit-table-json:' metadata line)"),
    ({'fewbit-table-json: {"format"': 'fewbit-table-json: {format'},
     "bad: the metadata line is not valid JSON (Expecting property name enclosed in double quotes)"),
    ({'fewbit-table-json: {"format"': 'fewbit-table-json: {"bits": 2, "format"'},
     "bad: field 'bits' is given twice"),
    ({'fewbit-table-json: {': 'fewbit-table-json: [{', '1.5}}\n': '1.5}}]\n'},
     "bad: the metadata line must be a JSON mapping"),
    ({"FEWBIT_STORAGE double fewbit_gelu_2bit_normal_levels":
      "FEWBIT_STORAGE double fewbit_gelu_2bit_normal_codes"},
     "bad: field 'codes' is declared twice"),
    ({"_levels[4] = {-0.125,": "_levels[4] = {"},
     "bad: field 'levels' declares 4 values but lists 3"),
    ({"_levels[4] = {-0.125,": "_levels[4] = {1e-2, -0.125,"},
     "bad: field 'levels' declares 4 values but lists 5"),
    ({"_codes[4] = {0, 1, 2, 3}": "_codes[4] = {0, 1, x, 3}"},
     "bad: field 'codes[2]' is not an integer: 'x'"),
    ({"_levels[4] = {-0.125, 0.25,": "_levels[4] = {-0.125, 0x1p2,"},
     "bad: field 'levels[1]' is not a decimal number: '0x1p2'"),
    ({"_boundaries[3] = {-1.5, 0.0, 0.75}": "_boundaries[3] = {-1.5, 0.0, " + "q" * 50 + "}"},
     f"bad: field 'boundaries[2]' is not a decimal number: {'q' * 40!r}"),
    ({"FEWBIT_STORAGE unsigned char fewbit_gelu_2bit_normal_codes[4] = {0, 1, 2, 3};": ""},
     "bad: missing field 'codes' (no array declaration found)"),
    ({"double fewbit_gelu_2bit_normal_levels": "double other_levels"},
     "bad: the arrays must share one prefix, found 2"),
    ({"lo = mid + 1": "lo = mid"},
     "bad: the header's code (macros or lookup functions) differs from what its arrays give: "
     "edited after it was written?"),
    ({"#define FEWBIT_GELU_2BIT_NORMAL_BITS 2": "#define FEWBIT_GELU_2BIT_NORMAL_BITS 3"},
     "bad: the header's code (macros or lookup functions) differs from what its arrays give: "
     "edited after it was written?"),
    ({'"bits": 2, ': ''}, "bad: missing field 'bits'"),
    ({'"activation": {"name": "gelu", "params": {"a": 1.0}}': '"activation": 5'},
     "bad: missing field 'activation.name'"),
])
def test_mutant_header_messages(edit, message):
    text = HEADER
    for old, new in edit.items():
        text = text.replace(old, new)
    assert text != HEADER
    refused(text.encode(), "h", message)


def test_mutant_header_reader_tolerates_what_a_compiler_does():
    # comments, blank lines and trailing spaces are not code
    text = HEADER.replace("\n\n/* The 2-bit", "\n\n\n/* note\n   more */  \n/* The 2-bit").replace(";\n", "; \n")
    assert formats.loads(text.encode(), "h", source="s") == small()
    # other spellings of the same numbers (a trailing comma, a '+', '.75') parse, then differ from the code
    edited = "bad: the header's code (macros or lookup functions) differs from what its arrays give: " \
             "edited after it was written?"
    refused(HEADER.replace("{-0.125, 0.25, 1.0, 1.5}", "{-0.125, 0.25, 1.0, 1.5, }").encode(), "h", edited)
    refused(HEADER.replace("{-1.5, 0.0, 0.75}", "{-1.5, 0.0, +.75}").encode(), "h", edited)
    refused(HEADER.replace("{0, 1, 2, 3}", "{0, 1, 2, +3}").encode(), "h", edited)
    # a comment inside a declaration is a space to the array scan, and then an edit of the code
    refused(HEADER.replace("double fewbit_gelu_2bit_normal_levels", "double /* c */fewbit_gelu_2bit_normal_levels")
            .encode(), "h", edited)
    refused(HEADER.replace("{-0.125, 0.25,", "{-0.125, /* c */0.25,").encode(), "h", edited)
    # the one-interval comment does not replace declared boundaries
    text = HEADER.replace("\n/* Interval of x", "\n/* fewbit_gelu_2bit_normal_boundaries: none (one interval) */\n"
                          "/* Interval of x")
    assert formats.loads(text.encode(), "h", source="s") == small()


# -- the bundle --------------------------------------------------------------------------

def _tables():
    return [small(activation="tanh", bits=2), small(activation="gelu", distribution="laplace", solver={}),
            small(activation="gelu", bits=1, boundaries=[0.0], codes=[0, 1], levels=[0.0, 1.0]),
            small(activation="gelu")]


def test_mutant_write_bundle_bytes_order_and_rewrite(tmp_path):
    path = str(tmp_path / "sub" / "dir" / "b.json")
    tables = _tables()
    assert formats.write_bundle(tables, path) == path
    data = open(path, "rb").read()
    expected = [t.to_dict() for t in (tables[1], tables[2], tables[3], tables[0])]  # (distribution, activation, bits)
    for d in expected:
        d["solver"].pop("seconds", None)
    assert data == (json.dumps({"format": "fewbit-table-bundle", "version": 1, "tables": expected},
                               separators=(",", ":")) + "\n").encode()
    assert tables[0].solver == {"grid": 64, "seconds": 1.5}              # the caller's tables are not changed
    assert formats.read_bundle(data, source="b") == [Table.from_dict(d) for d in expected]
    # the same content again: the file is left alone (same inode, same time); other content replaces it
    os.utime(path, (1, 1))
    before = os.stat(path)
    formats.write_bundle(list(reversed(tables)), path)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime) == (before.st_ino, before.st_mtime)
    formats.write_bundle(tables[:2], path)
    assert len(formats.read_bundle(open(path, "rb").read(), source="b")) == 2
    formats.write_bundle([], str(tmp_path / "empty.json"))
    assert formats.read_bundle(open(tmp_path / "empty.json", "rb").read(), source="b") == []


def test_mutant_write_bundle_with_module_records(tmp_path):
    path = str(tmp_path / "cal.json")
    tables = _tables()[:3]
    records = [{"name": "enc.0", "n": 3}, {"name": "enc.1"}, {"name": "dec", "x": [1.5]}]
    formats.write_bundle(tables, path, modules=records)
    d = json.loads(open(path).read())
    assert [t["activation"]["name"] for t in d["tables"]] == ["tanh", "gelu", "gelu"]   # the caller's order
    assert d["modules"] == records and list(d) == ["format", "version", "tables", "modules"]
    back, recs = formats.read_bundle(open(path, "rb").read(), source="b", modules=True)
    assert back == [Table.from_dict(t) for t in d["tables"]] and recs == records
    with pytest.raises(FewbitError) as info:
        formats.write_bundle(tables, path, modules=records[:2])
    assert str(info.value) == "2 module records for 3 tables"


@pytest.mark.parametrize("data, message", [
    (b'"\xff"', "b.json: not valid JSON (UnicodeDecodeError)"),
    (b"{", "b.json: not valid JSON (JSONDecodeError)"),
    (b"[]", "b.json: not a fewbit-table-bundle version 1 file"),
    (b'{"format": "fewbit-table-bundle", "tables": []}', "b.json: not a fewbit-table-bundle version 1 file"),
    (b'{"format": "fewbit-table-bundle", "version": 2, "tables": []}',
     "b.json: not a fewbit-table-bundle version 1 file"),
    (b'{"format": "x", "version": 1, "tables": []}', "b.json: not a fewbit-table-bundle version 1 file"),
    (b'{"format": "fewbit-table-bundle", "version": 1}', "b.json: field 'tables' must be a list"),
    (b'{"format": "fewbit-table-bundle", "version": 1, "tables": {}}', "b.json: field 'tables' must be a list"),
])
def test_mutant_read_bundle_messages(data, message):
    with pytest.raises(FewbitError) as info:
        formats.read_bundle(data, source="b.json")
    assert str(info.value) == message


def test_mutant_read_bundle_names_the_table_and_the_module_record():
    good = small().to_dict()
    bad = dict(good, bits=9)
    data = json.dumps({"format": "fewbit-table-bundle", "version": 1, "tables": [good, bad]}).encode()
    with pytest.raises(FewbitError) as info:
        formats.read_bundle(data, source="b.json")
    assert str(info.value) == "b.json: tables[1]: field 'bits' must be an integer in 1..8, got 9"

    def bundle(modules):
        d = {"format": "fewbit-table-bundle", "version": 1, "tables": [good, good]}
        if modules is not ...:
            d["modules"] = modules
        return json.dumps(d).encode()

    assert formats.read_bundle(bundle(...), source="b.json") == [small(), small()]
    assert formats.read_bundle(bundle([{"name": "a"}, {"name": "b"}]), source="b.json") == [small(), small()]
    not_cal = ("b.json: field 'modules' must be a list of one record per table (not a calibration bundle?)")
    for modules, message in [(..., not_cal), ({"name": "a"}, not_cal), ([{"name": "a"}], not_cal),
                             ([{"name": "a"}, {"name": "b"}, {"name": "c"}], not_cal),
                             ([{"name": "a"}, ["b"]], "b.json: modules[1] must be a mapping with a string 'name'"),
                             ([{"name": 1}, {"name": "b"}], "b.json: modules[0] must be a mapping with a string 'name'"),
                             ([{"x": "a"}, {"name": "b"}], "b.json: modules[0] must be a mapping with a string 'name'")]:
        with pytest.raises(FewbitError) as info:
            formats.read_bundle(bundle(modules), source="b.json", modules=True)
        assert str(info.value) == message
    tables, records = formats.read_bundle(bundle([{"name": "a", "k": 1}, {"name": "b"}]), source="b.json", modules=True)
    assert tables == [small(), small()] and records == [{"name": "a", "k": 1}, {"name": "b"}]


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
