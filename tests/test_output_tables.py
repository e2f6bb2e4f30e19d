"""Tables over the saved output (issue 22, part 1): design_output and its independent check.

Oracles: f'(x0) = 0 at the branch point, brute force over every cut for the DP, direct QR
for the compressed cost matrix, numpy's float16/float32 casts for the rounding, and
output_check's quadrature (no shared cells or sums) for every reported error.
"""

import itertools
import textwrap

import numpy as np
import pytest

from fewbit_design.activations import get_activation
from fewbit_design.errors import FewbitError
from fewbit_design.output_check import check_output
from fewbit_design.output_fit import Run, cost_matrix, run_cost, segment_matrix
from fewbit_design.output_tables import design_output, round_to, rounding_cell

BRANCHED = ["gelu", "silu", "mish", "quick_gelu", "gelu_tanh"]
MONOTONE = ["tanh", "sigmoid", "elu", "celu", "selu", "softplus", "softsign", "logsigmoid", "tanhshrink",
            "leaky_relu", "relu", "hardtanh", "relu6", "hardsigmoid", "squared_relu"]
BOUND = {"float32": 1e-9, "bfloat16": 1.2e-5, "float16": 8e-7}    # issue 22's "Must show", for the branched ones


@pytest.fixture(scope="module")
def tables():
    return {}


def _table(tables, name):
    if name not in tables:
        tables[name] = design_output(name)
    return tables[name]


# ---------------------------------------------------------------- rounding

@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_to_is_numpys_cast(dtype):
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.normal(size=4000) * 10.0 ** rng.integers(-12, 5, 4000),
                        [0.0, -0.0, 1.0, 6e-8, 3e-8, 2.0 ** -25, 65519.0, 1e-46, -3.7e-41]])
    with np.errstate(over="ignore"):
        want = y.astype(dtype).astype(np.float64)
    np.testing.assert_array_equal(round_to(y, dtype), want)


def test_round_to_bfloat16_rounds_float32_bits_to_nearest_even():
    rng = np.random.default_rng(1)
    f32 = (rng.normal(size=4000) * 10.0 ** rng.integers(-30, 30, 4000)).astype(np.float32)
    bits = f32.view(np.uint32).astype(np.uint64)
    keep = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000        # round to nearest, ties to even
    want = keep.astype(np.uint32).view(np.float32).astype(np.float64)
    np.testing.assert_array_equal(round_to(f32.astype(np.float64), "bfloat16"), want)
    lo, hi = rounding_cell(1.0, "bfloat16")
    assert (lo, hi) == (1.0 - 2.0 ** -9, 1.0 + 2.0 ** -8)              # ties at the ends go to 1 (even)


# ---------------------------------------------------------------- shape

@pytest.mark.parametrize("name", BRANCHED)
def test_one_minimum_is_the_branch_point(tables, name):
    t = _table(tables, name)
    act = get_activation(name)
    x0, y0 = t.branch_point
    assert t.kind == "minimum" and t.branch_bits == 1 and len(t.branches) == 2
    assert abs(act.df(np.array([x0]))[0]) <= 1e-15
    assert y0 == act.f(np.array([x0]))[0]
    assert [b.power for b in t.branches] == [2, 2]             # t = sqrt(y - y_min) on both sides
    assert np.all(t.branch_of([x0 - 1e-9, x0 + 1e-9]) == [0, 1])


def test_exact_where_f_is_flat():
    flats = {"relu": [(0.0, 0.0)], "hardtanh": [(-1.0, 0.0), (1.0, 0.0)], "relu6": [(0.0, 0.0), (6.0, 0.0)],
             "hardsigmoid": [(0.0, 0.0), (1.0, 0.0)]}
    for name, want in flats.items():
        t = design_output(name, y_dtype="bfloat16")
        assert t.branch_bits == 0
        assert [(f.y, f.df) for f in t.branches[0].flats] == want, name
        assert t.relative_error <= 1e-28, (name, t.relative_error)          # rounding of the coefficients
        c = check_output(t)
        assert c["relative"] <= 1e-28 and c["rounded"] <= max(2 * c["floor"], 1e-9), (name, c)
    t = design_output("hardswish")
    assert t.branch_point == (-1.5, -0.375) and t.kind == "minimum"
    assert [(f.y, f.df) for f in t.branches[0].flats] == [(0.0, 0.0)] and t.branches[1].flats == ()
    assert t.pieces[1] >= 2 and t.relative_error <= 1e-28           # a cut at x = 3, where f' jumps to 1


def test_segment_variables():
    t = design_output("tanhshrink")
    assert t.branch_bits == 0 and t.branches[0].power == 3 and abs(t.branches[0].y0) < 1e-20
    t = design_output("squared_relu")
    assert (t.branches[0].y0, t.branches[0].power) == (0.0, 2)         # f' = 2 sqrt(y): degree 1 in t
    assert t.relative_error <= 1e-25                                   # the rounding of 9 coefficients
    assert design_output("tanh").branches[0].power == 1


def _module(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)


def test_refuses_two_minima(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "two_minima", """
        def f(x):
            return x ** 4 / 4 - x ** 2 / 2
        def df(x):
            return x ** 3 - x
    """)
    with pytest.raises(FewbitError, match=r"f has 3 minima and maxima .* y plus one branch bit") as e:
        design_output("two_minima:f:df")
    assert "\n" not in str(e.value)
    with pytest.raises(FewbitError, match="minima and maxima"):
        design_output("two_minima:f")                       # the numerical derivative sees the same


def test_refuses_a_flat_with_two_derivatives(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "two_slopes", """
        import numpy as np
        def f(x):
            return np.clip(x, -1.0, 1.0)
        def df(x):
            return np.where(np.abs(x) < 1, 1.0, x)
    """)
    with pytest.raises(FewbitError, match=r"f = -1 on x in .* but f' takes values"):
        design_output("two_slopes:f:df")


def test_custom_activation_with_one_maximum(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, "one_maximum", """
        import numpy as np
        def f(x):
            return -x * np.tanh(x)
    """)
    t = design_output("one_maximum:f")
    assert t.kind == "maximum" and abs(t.branch_point[0]) < 1e-9
    c = check_output(t)
    assert c["rounded"] <= max(2 * c["floor"], 1e-9)


@pytest.mark.parametrize("kwargs, match", [
    ({"y_dtype": "int8"}, "unknown y dtype"), ({"pieces": 0}, "pieces must be"), ({"degree": 13}, "degree must be"),
    ({"pieces": 9, "cuts": 8}, "at least pieces"), ({"grid": 8}, "grid must be"), ({"distribution": "normal:0,0"}, "normal")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(FewbitError, match=match):
        design_output("gelu", **kwargs)


def test_other_weights(tmp_path):
    assert design_output("gelu", distribution="uniform:0,2").branch_bits == 0     # monotone on the support
    t = design_output("silu", distribution="laplace:0,2", y_dtype="bfloat16")
    assert t.kind == "minimum"
    c = check_output(t)
    assert c["rounded"] <= max(2 * c["floor"], 1e-9) and abs(t.floor - c["floor"]) <= 0.05 * c["floor"]
    np.save(tmp_path / "s.npy", np.linspace(-3.0, 3.0, 101))
    with pytest.raises(FewbitError, match="parametric distribution"):
        design_output("gelu", distribution=f"samples:{tmp_path / 's.npy'}")


# ---------------------------------------------------------------- the DP

def _small_run(seed=0, cells=7, per=5):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(-1.0, 2.0, cells * per))
    b = np.where(t > 0.7, 1.0, np.sin(3 * t)) + 0.01 * rng.normal(size=t.size)
    starts = np.arange(0, t.size + 1, per)
    ends = np.concatenate([t[starts[:-1]], [t[-1]]])
    return Run(t, b, rng.uniform(0.1, 1.0, t.size), starts, ends)


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_cost_matrix_is_the_direct_qr(degree):
    run = _small_run(degree)
    C = cost_matrix(run, degree)
    total = float(np.sum(run.w * run.b ** 2))
    for a, b in itertools.combinations(range(8), 2):
        assert abs(C[a, b] - run_cost(run, a, b, degree)) <= 1e-12 * total
        A = np.vander(run.t[run.starts[a]:run.starts[b]], degree + 1) * np.sqrt(run.w[run.starts[a]:run.starts[b]])[:, None]
        r = np.sqrt(run.w[run.starts[a]:run.starts[b]]) * run.b[run.starts[a]:run.starts[b]]
        resid = r - A @ np.linalg.lstsq(A, r, rcond=None)[0]
        assert abs(C[a, b] - resid @ resid) <= 1e-12 * total      # any basis: the same residual


@pytest.mark.parametrize("pieces, degree", [(1, 2), (2, 1), (3, 2), (4, 0)])
def test_dp_is_the_brute_force_optimum(pieces, degree):
    run = _small_run(pieces)
    C = cost_matrix(run, degree)
    n = 7
    best = min(sum(run_cost(run, a, b, degree) for a, b in zip((0, *cut), (*cut, n)))
               for k in range(pieces) for cut in itertools.combinations(range(1, n), k))
    cuts = segment_matrix(C, pieces)
    assert cuts[0] == 0 and cuts[-1] == n and np.all(np.diff(cuts) >= 0) and len(cuts) == pieces + 1
    assert abs(sum(C[a, b] for a, b in zip(cuts[:-1], cuts[1:])) - best) <= 1e-12 * float(np.sum(run.w * run.b ** 2))


# ---------------------------------------------------------------- the "Must show" bound

@pytest.mark.parametrize("name", BRANCHED)
def test_branched_reach_twice_the_rounding_floor(tables, name):
    t = _table(tables, name)
    assert t.relative_error <= 1e-12
    for dtype, bound in BOUND.items():
        c = check_output(t, dtype=dtype)
        assert c["rounded"] <= max(2 * c["floor"], 1e-9), (dtype, c)
        assert c["rounded"] <= bound, (dtype, c)
    assert abs(c["relative"] - t.relative_error) <= 1e-3 * t.relative_error + 1e-20


@pytest.mark.parametrize("name", MONOTONE)
def test_monotone_reach_it_with_no_branch_bit(name):
    t = design_output(name, y_dtype="bfloat16")
    assert t.branch_bits == 0 and t.branch_point is None
    for dtype in ("float32", "bfloat16"):
        c = check_output(t, dtype=dtype)
        assert c["rounded"] <= max(2 * c["floor"], 1e-9), (dtype, c)
    assert t.rounded_error <= max(2 * t.floor, 1e-9)                 # the designer's own measure agrees


def test_designer_and_check_agree_on_the_floor(tables):
    t = design_output("gelu", y_dtype="bfloat16")
    c = check_output(t)
    assert abs(t.floor - c["floor"]) <= 0.05 * c["floor"] and abs(t.rounded_error - c["rounded"]) <= 0.05 * c["rounded"]
    assert "1 branch bit" in str(t) and t.to_dict()["branch_bits"] == 1


def test_benchmark_quick_run_leaves_the_committed_results(tmp_path, monkeypatch, capsys):
    import json
    import pathlib
    import tempfile

    from benchmarks import output_tables as bench
    committed = pathlib.Path(bench.HERE) / "results" / "output_tables.json"
    before = committed.read_bytes()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert bench.main(["--quick"]) == 0
    assert committed.read_bytes() == before
    d = json.loads((tmp_path / "fewbit-benchmarks" / "output_tables.json").read_text())
    assert "sweep" not in d and all(r["within_target"] for r in d["results"])
    full = json.loads(before)                                  # the committed run: every row within its target
    assert full["defaults"] == full["choice"]["chosen"] and all(r.get("within_target", False) for r in full["results"])
    assert {r["activation"] for r in full["results"] if r["within_bound"]} == set(BRANCHED)     # bounds met, fp32/16/bf16
