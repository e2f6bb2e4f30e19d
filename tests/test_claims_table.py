"""Table.from_dict's validation, message by message, and format_params (found unguarded by
mutation testing, tools/mutation.sh): every bad field gives one line naming the source and
the field, and good input of any numeric type reads as float64 / int64."""

import re

import numpy as np
import pytest

from fewbit_design.errors import FewbitError
from fewbit_design.table import Table, format_params


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
