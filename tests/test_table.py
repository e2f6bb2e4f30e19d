"""Table.from_dict's validation, message by message, and format_params (found unguarded by
mutation testing, tools/mutation.sh): every bad field gives one line naming the source and
the field, and good input of any numeric type reads as float64 / int64."""

import re
import warnings

import numpy as np
import pytest

from fewbit_design.errors import FewbitError
from fewbit_design.table import Table, check_bits, format_params


def good():
    return Table(activation="gelu", bits=2, boundaries=np.array([-1.0, 0.0, 1.0]), codes=np.arange(4),
                 levels=np.array([0.0, 0.25, 0.75, 1.0]), mse=1e-3, relative_error=2e-3,
                 distribution="normal", dist_params={"mean": 0.0, "std": 1.0}).to_dict()


def changed(path, value):
    d = good()
    *head, last = path
    obj = d
    for k in head:
        obj = obj[k]
    obj[last] = value
    return d


BAD = [
    (("boundaries",), np.zeros((1, 3)), "field 'boundaries' must be a 1-D list"),
    (("codes",), np.arange(4.0), "field 'codes' must hold integers, got dtype float64"),
    (("boundaries",), np.array(["a", "b", "c"]), "field 'boundaries' must hold numbers, got dtype <U1"),
    (("boundaries",), np.array([-1.0, 0.0, np.inf]), "field 'boundaries' holds a non-finite number"),
    (("boundaries",), "abc", "field 'boundaries' must be a list, got str"),
    (("codes",), [0, 1, 2, 1.5], "field 'codes'[3] must be an integer of reasonable size, got 1.5"),
    (("codes",), [0, 1, True, 3], "field 'codes'[2] must be an integer of reasonable size, got True"),
    (("codes",), [0, 1, 2, 2 ** 62], f"field 'codes'[3] must be an integer of reasonable size, got {2 ** 62}"),
    (("codes",), [0, 1, 2, -2 ** 62], f"field 'codes'[3] must be an integer of reasonable size, got {-2 ** 62}"),
    (("boundaries",), [-1.0, True, 1.0], "field 'boundaries'[1] must be a number, got bool"),
    (("boundaries",), [-1.0, "0", 1.0], "field 'boundaries'[1] must be a number, got str"),
    (("boundaries",), [-1.0, float("nan"), 1.0], "field 'boundaries'[1] must be finite, got nan"),
    (("error", "mse"), "x", "field 'error.mse' must be a number, got str"),
    (("error", "relative"), float("inf"), "field 'error.relative' must be finite, got inf"),
    (("activation", "params"), [1], "field 'activation.params' must be a mapping"),
    (("activation", "params"), {1: 2.0}, "field 'activation.params' has a non-string key 1"),
    (("activation", "params"), {"alpha": "x"}, "field 'activation.params'.alpha must be a number, got 'x'"),
    (("activation", "params"), {"alpha": True}, "field 'activation.params'.alpha must be a number, got True"),
    (("distribution", "params"), {"mean": None}, "field 'distribution.params'.mean must be a number, got None"),
]


@pytest.mark.parametrize("path,value,msg", BAD, ids=[m for _, _, m in BAD])
def test_mutant_from_dict_names_the_bad_field(path, value, msg):
    with pytest.raises(FewbitError, match="^" + re.escape(f"t.json: {msg}") + "$"):
        Table.from_dict(changed(path, value), source="t.json")


def test_mutant_from_dict_reads_any_numeric_type():
    d = changed(("boundaries",), np.array([-1, 0, 1], dtype=np.int32))
    d["codes"] = np.arange(4, dtype=np.uint8)
    d["levels"] = (np.float32(0.0), 0.25, np.float64(0.75), 1)
    d["error"] = {"mse": np.float32(0.5), "relative": 1}
    d["activation"]["params"] = {"a": np.float32(0.5), "n": np.int16(3), "m": 2}
    d["distribution"]["params"] = {"path": "acts.npy", "count": 7}
    t = Table.from_dict(d, source="t.json")
    assert t.boundaries.dtype == np.float64 and t.boundaries.tolist() == [-1.0, 0.0, 1.0]
    assert t.codes.dtype == np.int64 and t.levels.dtype == np.float64 and t.levels.tolist() == [0, 0.25, 0.75, 1]
    assert (t.mse, t.relative_error) == (0.5, 1.0)
    assert t.params == {"a": 0.5, "n": 3, "m": 2}
    assert [type(v) for v in t.params.values()] == [float, int, int]
    assert t.dist_params == {"path": "acts.npy", "count": 7}
    with pytest.raises(FewbitError, match=re.escape("field 'activation.params'.path must be a number, got 'x'")):
        Table.from_dict(changed(("activation", "params"), {"path": "x"}), source="t.json")


def test_mutant_format_params():
    p = {"alpha": 0.5, "n": 2, "flag": True, "s": "x", "big": 1e21, "np": np.float64(0.25)}
    assert format_params(p) == "alpha=0.5, n=2, flag=True, s=x, big=1e+21, np=0.25"
    assert format_params(p, ",", names=False) == "0.5,2,True,x,1e+21,0.25"
    assert format_params({}) == ""


def test_mutant_interval_of_any_numeric_input():
    t = Table.from_dict(good())
    for x in ([-2, 0, 1], np.array([-2, 0, 1], dtype=np.int8), np.array([-2, 0, 1], dtype=np.float32), (-2.0, 0.0, 1.0)):
        assert t.interval(x).tolist() == [0, 2, 3]
    assert t.interval(["-2", "0", "1"]).tolist() == [0, 2, 3]      # numeric strings: as np.float64 reads them


MISSING = [("format",), ("version",), ("activation",), ("distribution",), ("error",), ("bits",),
           ("activation", "name"), ("distribution", "name"), ("error", "mse"), ("error", "relative"),
           ("boundaries",), ("codes",), ("levels",)]


@pytest.mark.parametrize("path", MISSING, ids=".".join)
def test_mutant_from_dict_names_the_missing_field(path):
    # mutation testing: a wrong field name in the "missing field" message survived
    d = good()
    *head, last = path
    obj = d
    for k in head:
        obj = obj[k]
    del obj[last]
    with pytest.raises(FewbitError, match="^" + re.escape(f"t.json: missing field '{'.'.join(path)}'") + "$"):
        Table.from_dict(d, source="t.json")


def test_mutant_from_dict_defaults_of_optional_fields():
    d = good()
    for key in ("partition", "solver"):
        d.pop(key, None)
    del d["activation"]["params"], d["distribution"]["params"]
    t = Table.from_dict(d, source="t.json")
    assert t.partition == "contiguous" and t.params == {} and t.dist_params == {}


# -- the constructor's own checks and conversions (Table(...) is public; mutants of
#    __post_init__, validate_arrays and check_bits survived the format round trips) ---------

def table(**kw):
    args = dict(activation="gelu", bits=2, boundaries=[-1.0, 0.0, 1.0], codes=[0, 1, 2, 3],
                levels=[0.0, 0.25, 0.75, 1.0], mse=1e-3, relative_error=2e-3)
    args.update(kw)
    return Table(**args)


INVALID = [
    (dict(bits=9), "field 'bits' must be an integer in 1..8, got 9"),
    (dict(bits=2.0), "field 'bits' must be an integer in 1..8, got 2.0"),
    (dict(partition="x"), "field 'partition' must be one of contiguous, levelset, got 'x'"),
    (dict(boundaries=[-1.0, 0.0, np.inf]), "field 'boundaries' holds a non-finite number"),
    (dict(boundaries=[-1.0, 0.0, 0.0]), "field 'boundaries' must be strictly ascending"),
    (dict(levels=[0.0, 0.25, np.nan, 1.0]), "field 'levels' holds a non-finite number"),
    (dict(levels=[0.0, 0.25, 1e39, 1.0]), "field 'levels' holds 1e+39, beyond float32 (the runtime "
                                            "applies levels in float32: the gradient would be inf)"),
    (dict(levels=[], partition="levelset"), "field 'levels' must hold 1..4 values for 2 bits, got 0"),
    (dict(bits=1, boundaries=[0.0], codes=[0, 1], levels=[0.0, 0.5, 1.0], partition="levelset"),
     "field 'levels' must hold 1..2 values for 1 bits, got 3"),
    (dict(bits=3, boundaries=np.arange(8.0), codes=np.arange(9), levels=np.arange(9.0)),
     "field 'levels' must hold 1..8 values for 3 bits, got 9"),
    (dict(codes=[0, 1]), "field 'codes' must hold len(boundaries)+1 = 4 values, got 2"),
    (dict(codes=[0, 1, 2, 4], partition="levelset"), "field 'codes' must be in 0..3"),
    (dict(codes=[0, 1, 2, -1], partition="levelset"), "field 'codes' must be in 0..3"),
    (dict(codes=[1, 0, 2, 3]), "field 'codes' must be 0, 1, 2, ... for a contiguous table"),
    (dict(mse=-1e-300), "table field 'mse' must be a finite number >= 0, got -1e-300"),
    (dict(relative_error=np.inf), "table field 'relative_error' must be a finite number >= 0, got inf"),
]


@pytest.mark.parametrize("kw,msg", INVALID, ids=[m for _, m in INVALID])
def test_mutant_constructor_names_the_bad_field(kw, msg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # one error, no numpy warning before it (float32 overflow)
        with pytest.raises(FewbitError, match="^" + re.escape(msg) + "$"):
            table(**kw)


def test_mutant_constructor_accepts_the_edges():
    assert table(codes=[3, 0, 3, 1], partition="levelset").codes.tolist() == [3, 0, 3, 1]
    assert table(mse=0.0, relative_error=0.0).mse == 0.0                  # exact tables
    assert table(bits=1, boundaries=[], codes=[0], levels=[1.0]).levels.tolist() == [1.0]   # one level
    assert table(bits=3, boundaries=np.arange(7.0), codes=np.arange(8), levels=np.arange(8.0)).levels.size == 8


def test_mutant_constructor_arrays_are_float64_int64_1d_and_read_only():
    t = table(bits=1, boundaries=0, codes=np.array([0, 1], dtype=np.uint8),
              levels=np.array([0.1, 1.0], dtype=np.float32))
    assert t.boundaries.shape == (1,) and t.boundaries.dtype == np.float64
    assert t.codes.dtype == np.int64 and t.levels.dtype == np.float64
    assert t.levels.tolist() == [float(np.float32(0.1)), 1.0]
    t = table(boundaries=[-1, 0, 1], levels=[0, 1, 2, 3])       # Python ints
    assert t.boundaries.dtype == t.levels.dtype == np.float64 and t.q(0.5).dtype == np.float64
    for arr in (t.boundaries, t.codes, t.levels):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 7


def test_mutant_check_bits():
    assert check_bits(np.int8(3)) == 3 and type(check_bits(np.int64(3))) is int
    for bad in (0, 9, True, 3.0, np.float64(2.0)):
        with pytest.raises(FewbitError, match="^" + re.escape(f"bits must be an integer in 1..8, got {bad!r}") + "$"):
            check_bits(bad)
    with pytest.raises(FewbitError, match=r"^width must be an integer in 1\.\.8, got 0$"):
        check_bits(0, "width")


FROM_DICT_BAD = [
    (("version",), True, "unsupported schema 'version' True (this reader knows 1)"),
    (("version",), 1.0, "unsupported schema 'version' 1.0 (this reader knows 1)"),
    (("bits",), 2.0, "field 'bits' must be an integer in 1..8, got 2.0"),
    (("bits",), 9, "field 'bits' must be an integer in 1..8, got 9"),
    (("activation", "name"), 5, "field 'activation.name' and 'distribution.name' must be strings"),
    (("distribution", "name"), None, "field 'activation.name' and 'distribution.name' must be strings"),
    (("solver",), [1], "field 'solver' must be a mapping"),
    (("codes",), [0, 1, 2, -200], "field 'codes' must be in 0..3"),
    (("error", "mse"), -1.0, "table field 'mse' must be a finite number >= 0, got -1.0"),
]


@pytest.mark.parametrize("path,value,msg", FROM_DICT_BAD, ids=[m for _, _, m in FROM_DICT_BAD])
def test_mutant_from_dict_more_bad_fields(path, value, msg):
    with pytest.raises(FewbitError, match="^" + re.escape(f"t.json: {msg}") + "$"):
        Table.from_dict(changed(path, value), source="t.json")


def test_mutant_from_dict_default_source_and_top_level():
    with pytest.raises(FewbitError, match=r"^table: missing field 'format'$"):
        Table.from_dict({})
    with pytest.raises(FewbitError, match=r"^t\.json: not a table \(expected a mapping at the top level\)$"):
        Table.from_dict([1, 2], source="t.json")


def test_mutant_format_params_uses_g():
    assert format_params({"a": 1 / 3, "b": 123456789, "c": 0.1 + 0.2}) == "a=0.333333, b=1.23457e+08, c=0.3"


def test_mutant_repr_and_eq():
    t = table(activation="elu", params={"alpha": 0.5}, dist_params={"std": 2.0}, relative_error=1 / 3)
    assert repr(t) == ("Table(elu(alpha=0.5), bits=2, dist=normal(std=2), partition=contiguous, "
                       "intervals=4, levels=4, relative_error=0.333333)")
    assert repr(table()) == ("Table(gelu, bits=2, dist=normal, partition=contiguous, intervals=4, "
                             "levels=4, relative_error=0.002)")
    assert t == Table.from_dict(t.to_dict()) and t != table() and t != table(mse=0.0)
    assert t.__eq__("gelu") is NotImplemented and t != "gelu"
