"""Calibration without torch: weighted samples, the budget DP, bundles, the calibrate command."""

import itertools
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from fewbit_design.activations import get_activation
from fewbit_design.calibration import (Calibration, LayerData, allocate_bits, calibrate_layers,
                                       check_budget)
from fewbit_design.cli import main
from fewbit_design.designer import design, evaluate
from fewbit_design.distributions import parse_distribution, read_samples, samples_from_array
from fewbit_design.errors import FewbitError
from naive import brute_force_levelset, brute_force_segmentation


def _same_table(a, b, rtol=0.0):
    assert a.partition == b.partition and a.bits == b.bits
    np.testing.assert_array_equal(a.boundaries, b.boundaries)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_allclose(a.levels, b.levels, rtol=rtol, atol=0)
    assert a.mse == pytest.approx(b.mse, rel=max(rtol, 1e-15), abs=0)


# -- weighted samples -----------------------------------------------------------------------

@pytest.mark.parametrize("partition", ["contiguous", "levelset"])
@pytest.mark.parametrize("n", [300, 30000])      # exact DP over unique values; bins + exchange
def test_equal_weights_give_the_plain_samples_table(partition, n):
    x = np.random.default_rng(1).normal(0.3, 1.7, size=n)
    plain = design("gelu", 3, distribution=samples_from_array(x), partition=partition)
    weighted = design("gelu", 3, distribution=samples_from_array(x, weights=np.full(n, 0.37)),
                      partition=partition)
    _same_table(plain, weighted, rtol=1e-12)


@pytest.mark.parametrize("partition", ["contiguous", "levelset"])
@pytest.mark.parametrize("n", [200, 20000])
def test_integer_weights_give_the_repeated_samples_table(partition, n):
    rng = np.random.default_rng(2)
    x = rng.normal(size=n)
    w = rng.integers(0, 5, size=n)                       # zero weights: the value is absent
    repeated = np.repeat(x, w)
    a = design("silu", 2, distribution=samples_from_array(repeated), partition=partition)
    b = design("silu", 2, distribution=samples_from_array(x, weights=w), partition=partition)
    _same_table(a, b)             # the same unique values with the same summed weights: bit for bit


def test_weighted_table_is_exactly_optimal_on_small_sets():
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=6), rng.exponential(size=6)
    order = np.argsort(x)
    d, wn = get_activation("gelu").df(x[order]), w[order] / w.sum()
    for bits in (1, 2):
        s = samples_from_array(x, weights=w)
        c = design("gelu", bits, distribution=s, partition="contiguous")
        assert c.mse == pytest.approx(brute_force_segmentation(d, wn, 2 ** bits), rel=1e-12, abs=1e-15)
        ls = design("gelu", bits, distribution=s, partition="levelset")
        assert ls.mse == pytest.approx(brute_force_levelset(d, wn, 2 ** bits), rel=1e-12, abs=1e-15)


def test_weighted_error_is_the_weighted_mean():
    rng = np.random.default_rng(4)
    x, w = rng.normal(0, 2, size=5000), rng.exponential(size=5000)
    act = get_activation("tanh")
    for part in ("contiguous", "levelset"):
        t = design("tanh", 3, distribution=samples_from_array(x, weights=w), partition=part)
        r = act.df(x) - t.q(x)
        assert t.mse == pytest.approx(np.sum(w * r * r) / np.sum(w), rel=1e-12)
        assert t.relative_error == pytest.approx(np.sum(w * r * r) / np.sum(w * act.df(x) ** 2), rel=1e-12)


def test_weighted_npz_spec_and_evaluate(tmp_path):
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=400), rng.exponential(size=400)
    path = str(tmp_path / "acts.npz")
    np.savez(path, values=x, weights=w)
    s = parse_distribution(f"samples:{path}")
    assert s.weights is not None and s.params["weighted"] == 1 and s == read_samples(path)
    assert s != samples_from_array(x)              # the digest covers the weights
    t = design("gelu", 2, distribution=f"samples:{path}")
    assert t.dist_params["weighted"] == 1
    assert evaluate(t)[0] == pytest.approx(t.mse, rel=1e-12)


@pytest.mark.parametrize("weights, match", [
    ([1.0, -1.0, 1.0], "weights must be >= 0"),
    ([1.0, np.nan, 1.0], "weights must be finite"),
    ([1.0, 1.0], "2 weights for 3 values"),
    ([0.0, 0.0, 0.0], "every weight"),
    (["a", "b", "c"], "weights must be numeric"),
])
def test_bad_weights(weights, match):
    with pytest.raises(FewbitError, match=match):
        samples_from_array([1.0, 2.0, 3.0], weights=np.array(weights))


# -- bits under a budget --------------------------------------------------------------------

def _brute_force(errors, counts, budget):
    best = None
    for bits in itertools.product(range(1, 9), repeat=len(counts)):
        if sum(n * b for n, b in zip(counts, bits)) <= budget * sum(counts):
            e = 0.0
            for i, b in enumerate(bits):        # the same summation order as the DP
                e = e + errors[i, b - 1]
            if best is None or e < best:
                best = e
    return best


@pytest.mark.parametrize("seed", range(12))
def test_budget_allocation_equals_brute_force_and_keeps_the_budget(seed):
    rng = np.random.default_rng(seed)
    layers = int(rng.integers(1, 5))
    counts = [int(c) for c in rng.integers(1, 50, size=layers)]
    if seed % 3 == 0:
        counts = [32] * layers                   # equal sizes: many ties in cost
    # decreasing in bits like real designs, but sometimes not (allocate_bits must not assume it)
    errors = np.sort(rng.exponential(size=(layers, 8)), axis=1)[:, ::-1] * rng.exponential(size=(layers, 1))
    if seed % 4 == 1:
        errors = rng.exponential(size=(layers, 8))
    for budget in (1.0, 1.7, 2.5, 3.0, 4.25, 8.0):
        bits, total = allocate_bits(errors, counts, budget)
        assert all(1 <= b <= 8 for b in bits)
        assert sum(n * b for n, b in zip(counts, bits)) <= budget * sum(counts)
        assert total == sum(errors[i, b - 1] for i, b in enumerate(bits)) or \
            total == pytest.approx(sum(errors[i, b - 1] for i, b in enumerate(bits)), rel=1e-15)
        assert total == _brute_force(errors, counts, budget)


def test_budget_is_never_exceeded_by_rounding():
    # 3 layers of 1 element at budget 2 + 1/3: the float 7/3 times 3 is 7 within rounding only
    bits, _ = allocate_bits(np.tile(np.arange(8, 0, -1.0), (3, 1)), [1, 1, 1], 7 / 3)
    assert sum(bits) <= 7


@pytest.mark.parametrize("budget", [0.5, 0.999, 8.01, 9, float("nan"), "2", True, None])
def test_bad_budgets(budget):
    with pytest.raises(FewbitError, match="budget_bits"):
        check_budget(budget)


# -- calibrate_layers and bundles -------------------------------------------------------------

def _layers(rng, n=3000):
    return {
        "enc.0.act": LayerData("gelu", rng.normal(0.5, 2.0, size=n), count=10 * n),
        "enc.1.act": LayerData("gelu", rng.standard_t(3, size=(n // 75, 50)),
                               weights=rng.exponential(size=(n // 75, 50))),
        "head.act": LayerData("silu", rng.normal(-1.0, 0.5, size=n // 4)),
    }


def test_calibrated_error_never_above_the_default_tables():
    layers = _layers(np.random.default_rng(6))
    for bits in (1, 2, 3, 4):
        cal = calibrate_layers(layers, bits)
        for name, c in cal.layers.items():
            assert c.table.bits == bits and not c.kept_default
            assert c.mse <= c.default_mse
            assert c.relative_error <= c.default_relative_error
    assert cal.layers["enc.0.act"].count == 30000 and cal.layers["enc.0.act"].kept == 3000
    assert cal.layers["enc.1.act"].weighted and not cal.layers["head.act"].weighted


def test_calibration_with_budget_matches_its_own_errors():
    layers = _layers(np.random.default_rng(7), n=600)      # 8-bit designs too: keep them small
    cal = calibrate_layers(layers, budget_bits=2.5)
    assert cal.budget_bits == 2.5 and cal.average_bits <= 2.5
    per_bits = {b: calibrate_layers(layers, b) for b in range(1, 9)}
    errors = np.array([[per_bits[b].layers[n].predicted for b in range(1, 9)] for n in layers])
    counts = [c.count for c in per_bits[1].layers.values()]
    bits, total = allocate_bits(errors, counts, 2.5)
    assert [cal[n].bits for n in layers] == bits
    assert sum(c.predicted for c in cal.layers.values()) == pytest.approx(total, rel=1e-12)


def test_bundle_round_trip(tmp_path):
    cal = calibrate_layers(_layers(np.random.default_rng(8), n=600), budget_bits=3)
    path = str(tmp_path / "sub" / "bundle.json")
    cal.save(path)
    back = Calibration.load(path)
    assert list(back) == list(cal) and back.budget_bits == 3
    def canonical(t):                       # the bundle drops the solver's timing
        d = t.to_dict()
        d["solver"].pop("seconds", None)
        return d

    for name in cal:
        assert canonical(back[name]) == canonical(cal[name])
        b, c = back.layers[name], cal.layers[name]
        assert b.record() == c.record()
    assert repr(back) == repr(cal) and "enc.1.act" in repr(cal)
    data = json.loads(open(path).read())
    assert data["format"] == "fewbit-table-bundle" and len(data["modules"]) == 3


def test_bad_bundles(tmp_path):
    path = str(tmp_path / "b.json")
    for text, match in [("{", "not valid JSON"), ('{"format": "x"}', "not a fewbit-table-bundle"),
                        ('{"format": "fewbit-table-bundle", "version": 1, "tables": []}', "modules")]:
        open(path, "w").write(text)
        with pytest.raises(FewbitError, match=match):
            Calibration.load(path)
    with pytest.raises(FewbitError, match="no such file|cannot read"):
        Calibration.load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("values, match", [
    (np.array([]), "no activation inputs"),
    (np.array([1.0, np.nan, 2.0]), "1 of 3 activation inputs are NaN or infinite"),
    (np.array([1.0, np.inf]), "NaN or infinite"),
    (np.array([2.0, 2.0]), "all values are equal"),
])
def test_bad_layer_data(values, match):
    with pytest.raises(FewbitError, match=match):
        calibrate_layers({"l": LayerData("gelu", values)}, 3)


def test_no_layers_and_bad_bits():
    with pytest.raises(FewbitError, match="no layers"):
        calibrate_layers({}, 3)
    with pytest.raises(FewbitError, match="bits"):
        calibrate_layers({"l": LayerData("gelu", np.arange(10.0))}, 9)


# -- the command ---------------------------------------------------------------------------------

def test_cli_calibrate(tmp_path):
    rng = np.random.default_rng(9)
    acts, g2, out = (str(tmp_path / n) for n in ("acts.npz", "g2.npz", "bundle.json"))
    np.savez(acts, **{"block.0": rng.normal(size=500), "block.1": rng.normal(1, 2, size=(20, 30))})
    np.savez(g2, **{"block.0": rng.exponential(size=500), "block.1": rng.exponential(size=600)})
    r = CliRunner().invoke(main, ["calibrate", acts, "--activation", "gelu", "--bits", "3", "-o", out])
    assert r.exit_code == 0, r.output
    cal = Calibration.load(out)
    assert list(cal) == ["block.0", "block.1"] and all(t.bits == 3 for t in cal.values())
    assert "block.1" in r.output
    r = CliRunner().invoke(main, ["calibrate", acts, "-a", "gelu", "--budget-bits", "2.5", "-w", g2, "-o", out])
    assert r.exit_code == 0, r.output
    cal = Calibration.load(out)
    assert cal.budget_bits == 2.5 and cal.average_bits <= 2.5 and cal.layers["block.0"].weighted


def test_cli_calibrate_bad_inputs(tmp_path):
    acts, bad, other = (str(tmp_path / n) for n in ("acts.npz", "bad.npz", "other.npz"))
    np.savez(acts, a=np.arange(10.0))
    np.savez(bad, a=np.array([0.0, np.nan, 1.0]))
    np.savez(other, b=np.arange(10.0))
    open(str(tmp_path / "x.json"), "w").write("{}")
    before = os.listdir(tmp_path)
    for args, match in [
        ([acts, "-a", "gelu", "--budget-bits", "0.5"], "budget_bits must be in [1, 8]"),
        ([acts, "-a", "gelu", "--budget-bits", "8.5"], "budget_bits must be in [1, 8]"),
        ([bad, "-a", "gelu"], "a: 1 of 3 activation inputs are NaN"),
        ([str(tmp_path / "none.npz"), "-a", "gelu"], "no such file"),
        ([str(tmp_path / "x.json"), "-a", "gelu"], "not an .npz archive"),
        ([acts, "-a", "nope"], "unknown activation"),
        ([acts, "-a", "gelu", "-b", "0"], "bits must be an integer in 1..8"),
        ([acts, "-a", "gelu", "-w", other], "layer names differ"),
    ]:
        r = CliRunner().invoke(main, ["calibrate", *args, "-o", str(tmp_path / "out.json")])
        assert r.exit_code == 2, (args, r.output)
        assert match in r.output and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(os.listdir(tmp_path)) == sorted(before)      # nothing written


def test_cli_design_with_weighted_samples(tmp_path):
    rng = np.random.default_rng(10)
    x, w = rng.normal(size=300), rng.integers(0, 4, size=300)
    path = str(tmp_path / "w.npz")
    np.savez(path, values=x, weights=w)
    out = str(tmp_path / "t.json")
    r = CliRunner().invoke(main, ["gelu", "-b", "2", "--dist", f"samples:{path}", "-o", out])
    assert r.exit_code == 0, r.output
    from fewbit_design.formats import read_table
    t = read_table(out)
    want = design("gelu", 2, distribution=samples_from_array(np.repeat(x, w)))
    np.testing.assert_array_equal(t.boundaries, want.boundaries)
    assert t.mse == want.mse and t.dist_params["weighted"] == 1
    np.savez(path, values=x, weights=-np.ones(300))
    r = CliRunner().invoke(main, ["gelu", "-b", "2", "--dist", f"samples:{path}"])
    assert r.exit_code == 2 and "weights must be >= 0" in r.output
