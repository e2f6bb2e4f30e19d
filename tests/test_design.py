"""The designer: optimality conditions, exact cases, samples, grid convergence, level sets."""

import dataclasses
import functools
import math

import numpy as np
import pytest
from scipy import integrate

from fewbit_design.activations import REGISTRY, get_activation
from fewbit_design.check import check_table
from fewbit_design.designer import design, evaluate
from fewbit_design.distributions import parse_distribution, samples_from_array
from fewbit_design.errors import FewbitError

from naive import brute_force_segmentation, midpoint_residuals

ALL = list(REGISTRY)
MAIN = ["gelu", "silu", "tanh", "sigmoid"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_contiguous_tables_meet_midpoint_condition(name, bits):
    t = design(name, bits, partition="contiguous")
    assert np.all(np.abs(midpoint_residuals(t)) <= 1e-9), midpoint_residuals(t)
    assert t.mse <= t.solver["refinement"]["grid_mse"]          # refinement never loses
    assert t.levels.size <= 2 ** bits and np.array_equal(t.codes, np.arange(t.codes.size))


@pytest.mark.parametrize("name", ["gelu", "tanh", "silu", "elu"])
def test_eight_bit_contiguous_tables_meet_midpoint_condition(name):
    t = design(name, 8, partition="contiguous")
    assert np.all(np.abs(midpoint_residuals(t)) <= 1e-9)
    assert t.mse <= t.solver["refinement"]["grid_mse"]


@pytest.mark.parametrize("dist", ["normal:0,3", "uniform:-10,10", "laplace:0,1", "logistic:0,1", "t:3"])
def test_midpoint_condition_under_other_distributions(dist):
    t = design("gelu", 3, distribution=dist, partition="contiguous")
    assert np.all(np.abs(midpoint_residuals(t)) <= 1e-9)


@pytest.mark.parametrize("name,params", [("relu", {}), ("leaky_relu", {}), ("leaky_relu", {"negative_slope": 0.2})])
def test_piecewise_linear_activations_are_exact_with_one_bit(name, params):
    t = design(name, 1, params=params, partition="contiguous")
    assert t.mse == 0.0 and t.relative_error == 0.0
    assert t.boundaries.tolist() == [0.0]


@pytest.mark.parametrize("name", ["hardtanh", "relu6", "hardsigmoid"])
def test_clipped_activations_are_exact_with_one_levelset_bit(name):
    t = design(name, 1, partition="levelset")
    assert t.relative_error < 1e-25
    assert design(name, 1, partition="contiguous").relative_error > 1e-10


@pytest.mark.parametrize("name", MAIN)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_error_is_converged_in_the_grid(name, bits):
    """Grid doubling: the refined optimum does not move by more than 1e-9 relative."""
    e = [design(name, bits, partition="contiguous", grid=n).mse for n in (512, 1024, 2048)]
    assert abs(e[1] - e[2]) <= 1e-9 * e[2]
    assert abs(e[0] - e[2]) <= 1e-9 * e[2]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bits", [2, 3])
def test_stored_error_matches_independent_quadrature(name, bits):
    """q evaluated pointwise, the error integrated by scipy's adaptive quad: no shared code."""
    for part in ("contiguous", "levelset"):
        t = design(name, bits, partition=part)
        act = get_activation(name)
        dist = parse_distribution("normal:0,1")
        pts = list(t.boundaries) + list(act.kinks)
        integrand = lambda x: dist.pdf(np.array([x]))[0] * (act.df(np.array([x]))[0] - t.q(x)) ** 2
        mid, _ = integrate.quad(integrand, -12, 12, points=pts, limit=500, epsabs=1e-15, epsrel=1e-12)
        assert t.mse == pytest.approx(mid, rel=1e-8, abs=1e-14)
        assert evaluate(t)[0] == pytest.approx(t.mse, rel=1e-12)


def test_samples_table_is_exactly_optimal_on_small_sample_sets():
    rng = np.random.default_rng(3)
    x = rng.normal(size=9)
    act = get_activation("gelu")
    order = np.sort(x)
    d, w = act.df(order), np.full(9, 1 / 9)
    for bits in (1, 2):
        t = design("gelu", bits, distribution=samples_from_array(x), partition="contiguous")
        assert t.mse == pytest.approx(brute_force_segmentation(d, w, 2 ** bits), rel=1e-12, abs=1e-15)


def test_samples_error_is_the_mean_over_the_samples():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 2, size=5000)
    for part in ("contiguous", "levelset"):
        t = design("silu", 3, distribution=samples_from_array(x), partition=part)
        act = get_activation("silu")
        direct = np.mean((act.df(x) - t.q(x)) ** 2)
        assert t.mse == pytest.approx(direct, rel=1e-12)
        assert t.relative_error == pytest.approx(direct / np.mean(act.df(x) ** 2), rel=1e-12)


def test_many_samples_take_the_binned_path_and_stay_consistent():
    rng = np.random.default_rng(5)
    x = rng.normal(size=40000)
    t = design("tanh", 2, distribution=samples_from_array(x), partition="contiguous")
    assert "bins" in t.solver["method"]
    exact_small = design("tanh", 2, distribution=samples_from_array(x[:2000]), partition="contiguous")
    assert "exact" in exact_small.solver["method"]
    act = get_activation("tanh")
    assert t.mse == pytest.approx(np.mean((act.df(x) - t.q(x)) ** 2), rel=1e-12)


# -- level sets ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_levelset_is_never_worse_than_contiguous(name):
    for bits in (1, 2, 3, 4):
        t = design(name, bits, partition="auto")
        other = t.solver.get("alternatives", {})
        c = design(name, bits, partition="contiguous")
        ls = design(name, bits, partition="levelset")
        assert ls.mse <= c.mse * (1 + 1e-9) + 1e-300, (name, bits, ls.mse, c.mse)
        assert t.mse == min(ls.mse, c.mse) or t.mse == pytest.approx(min(ls.mse, c.mse), rel=1e-12)
        assert other


def test_auto_counts_a_better_contiguous_table_as_a_levelset_table():
    """A contiguous table is a level-set table too: auto records the level-set error as at most
    the contiguous one, and keeps contiguous on a tie to rounding (1e-12 relative)."""
    from fewbit_design.candidate import Candidate
    from fewbit_design.designer import _choose

    def cand(partition, mse):
        return Candidate(partition, np.array([0.0]), np.array([0, 1]), np.array([0.0, 1.0]), mse, "", {}, {})

    cont = cand("contiguous", 1.0)
    for ls_mse, best, recorded in [(2.0, "contiguous", {"levelset": 0.1}), (0.5, "levelset", {"contiguous": 0.1}),
                                   (1.0 - 1e-13, "contiguous", {"levelset": (1.0 - 1e-13) / 10}),
                                   (1.0 - 1e-11, "levelset", {"contiguous": 0.1})]:
        found = {"contiguous": cont, "levelset": cand("levelset", ls_mse)}
        chosen, alternatives = _choose(found, 10.0)
        assert (chosen.partition, alternatives) == (best, recorded), ls_mse
    assert _choose({"levelset": found["levelset"]}, 10.0) == (found["levelset"], {})


def assert_lloyd_max_fixed_point(t):
    act, dist = get_activation(t.activation), parse_distribution("normal:0,1")
    # thresholds are midpoints: at every boundary f'(s) sits halfway between the two levels
    assert np.all(np.abs(midpoint_residuals(t)) <= 1e-9), np.abs(midpoint_residuals(t)).max()
    # levels are conditional means of f' over each code's set of x
    edges = np.concatenate([[-40.0], t.boundaries, [40.0]])
    s0 = np.zeros(t.levels.size)
    s1 = np.zeros(t.levels.size)
    for a, b, c in zip(edges[:-1], edges[1:], t.codes):
        s0[c] += integrate.quad(lambda x: dist.pdf(np.array([x]))[0], a, b, epsabs=1e-15, limit=200)[0]
        s1[c] += integrate.quad(lambda x: dist.pdf(np.array([x]))[0] * act.df(np.array([x]))[0], a, b,
                                epsabs=1e-15, limit=200)[0]
    assert np.allclose(s1 / s0, t.levels, rtol=0, atol=1e-9)
    # every x gets its nearest level
    x = np.linspace(-8, 8, 20001)
    nearest = np.min(np.abs(act.df(x)[:, None] - t.levels[None, :]), axis=1)
    assert np.all(np.abs(act.df(x) - t.q(x)) <= nearest + 1e-9)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "mish", "softsign"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_levelset_is_a_lloyd_max_fixed_point(name, bits):
    assert_lloyd_max_fixed_point(design(name, bits, partition="levelset"))


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("bits", [7, 8])
def test_gelu_levelsets_converge_at_high_bits(name, bits):
    # a threshold sits next to f' -> 0- where the Jacobian is nearly singular: Newton alone
    # stalled here at |G| ~ 1e-5; the line search on the objective reaches the fixed point
    t = design(name, bits, partition="levelset")
    assert t.solver["refinement"]["residual"] <= 1e-12
    assert_lloyd_max_fixed_point(t)


@pytest.mark.parametrize("name,ratio", [("tanh", 3.0), ("sigmoid", 2.5)])
def test_levelset_gain_on_bell_shaped_derivatives(name, ratio):
    for bits in (1, 2, 3):
        c = design(name, bits, partition="contiguous")
        ls = design(name, bits, partition="levelset")
        assert c.mse / ls.mse >= ratio


def test_bad_arguments_raise_one_line_errors():
    with pytest.raises(FewbitError, match="bits must be an integer in 1..8"):
        design("gelu", 0)
    with pytest.raises(FewbitError, match="unknown partition"):
        design("gelu", 2, partition="nope")
    with pytest.raises(FewbitError, match="grid"):
        design("gelu", 2, grid=3)


def test_a_divergent_objective_is_refused_and_a_convergent_one_is_not():
    with pytest.raises(FewbitError, match="infinite"):
        design("squared_relu", 2, distribution="t:2")        # E[(2X)^2] = inf for df = 2
    t = design("squared_relu", 2, distribution="t:2.5")      # finite for df > 2
    assert 0 < t.relative_error < 1
    assert design("gelu", 2, distribution="t:0.5").relative_error < 1   # bounded f': any tails


@pytest.mark.parametrize("dist", ["normal:2,0.5", "uniform:-1,3", "logistic:1,2", "t:1", "normal:0,0.01"])
def test_every_activation_designs_sanely_under_other_weights(dist):
    """Both partitions under shifted, narrow, bounded and heavy-tailed weights: a valid table
    whose stored error is what `evaluate` recomputes, and level sets never worse."""
    for name in ALL:
        if name == "squared_relu" and dist == "t:1":
            continue                                   # infinite objective: refused (tested above)
        c = design(name, 3, distribution=dist, partition="contiguous")
        ls = design(name, 3, distribution=dist, partition="levelset")
        for t in (c, ls):
            assert 0.0 <= t.relative_error <= 1.0
            assert evaluate(t)[0] == pytest.approx(t.mse, rel=1e-9, abs=1e-13)
        assert ls.mse <= c.mse * (1 + 1e-9) + 1e-15, (name, dist)


# ==================================================================================================
# Claims. The designer's README numbers, at the README's tolerances, against independent references.
#
# - "Every registry activation converges to |G| <= 1e-12 at 1-8 bits, both partitions."
# - "error.mse: ∫ w (f' − q)², by exact quadrature": checked by scipy's adaptive quadrature,
#   piece by piece, never by the engine's own Gauss-Legendre cells.
# - "exact tables report exactly 0".
# - `check`: "exits 1 if the stored error differs from the recomputed one by more than 1e-9
#   relative (differences below 1e-15·∫w f'² count as round-off), or if a better table exists".
# ==================================================================================================


WEIGHTS = ["normal:0,1", "normal:2,0.5", "uniform:-1,3", "logistic:1,2", "t:1", "normal:0,0.01", "laplace:0,1"]


@functools.lru_cache(maxsize=None)
def table(name, bits, partition, dist="normal:0,1"):
    return design(name, bits, partition=partition, distribution=dist)


@pytest.mark.parametrize("name", ALL)
def test_every_table_meets_the_optimality_condition_to_1e_12(name):
    for bits in range(1, 9):
        for partition in ("contiguous", "levelset"):
            t = table(name, bits, partition)
            g = midpoint_residuals(t)
            assert np.all(np.abs(g) <= 1e-12), (bits, partition, float(np.abs(g).max()))
            ref = t.solver["refinement"]
            if "residual" in ref and ref["free_points"]:
                assert ref["residual"] <= 1e-12, (bits, partition, ref)


# -- stored errors against scipy ------------------------------------------------------------

def scipy_error(t):
    """∫ w (f' − q)² by scipy.integrate.quad over the pieces between every boundary, kink and
    jump of f', support end of w and a ladder of w's quantiles; infinite tails included."""
    act = get_activation(t.activation, t.params)
    dist = parse_distribution(f"{t.distribution}:{','.join(repr(float(v)) for v in t.dist_params.values())}")
    pts = list(t.boundaries) + list(act.kinks) + list(act.jumps)
    for tail in (0.25, 1e-2, 1e-4, 1e-8, 1e-14):
        pts += [v for v in dist.quantile_range(tail) if math.isfinite(v) and abs(v) < 1e30]
    pts += [v for v in getattr(dist, "support", ()) if math.isfinite(v)]
    lo, hi = dist.quantile_range(1e-14)
    decades = 10.0 ** np.arange(-2, 40)                  # heavy tails: one piece per decade
    pts += [v for v in np.concatenate([-decades, decades]) if lo < v < hi]
    pts = np.unique(np.asarray(pts, dtype=float))
    pdf = lambda x: float(dist.pdf(np.array([x]))[0])
    df = lambda x: float(act.df(np.array([x]))[0])
    ends = [-math.inf, *pts, math.inf]
    total = 0.0
    for a, b in zip(ends[:-1], ends[1:]):
        inside = 0.5 * (a + b) if math.isfinite(a) and math.isfinite(b) else (b - 1.0 if math.isfinite(b) else a + 1.0)
        q = float(t.q(np.array([inside]))[0])          # q is constant on the piece
        v, _ = integrate.quad(lambda x: pdf(x) * (df(x) - q) ** 2, a, b, epsabs=1e-17, epsrel=1e-12, limit=200)
        total += v
    return total


@pytest.mark.parametrize("dist", WEIGHTS)
@pytest.mark.parametrize("name", ALL)
def test_stored_error_equals_scipy_quadrature(name, dist):
    if name == "squared_relu" and dist == "t:1":
        pytest.skip("infinite objective: refused (tests/test_design.py)")
    for bits in (1, 3) if dist == "normal:0,1" else (3,):
        for partition in ("contiguous", "levelset"):
            t = table(name, bits, partition, dist)
            ref = scipy_error(t)
            assert t.mse == pytest.approx(ref, rel=1e-8, abs=1e-15), (bits, partition, t.mse, ref)


@pytest.mark.parametrize("name", ["gelu", "tanh", "silu", "hardswish", "selu"])
def test_stored_error_equals_scipy_quadrature_at_8_bits(name):
    for partition in ("contiguous", "levelset"):
        t = table(name, 8, partition)
        assert t.mse == pytest.approx(scipy_error(t), rel=1e-8, abs=1e-15), partition


# -- exact tables are exactly 0 -----------------------------------------------------------

@pytest.mark.parametrize("name", ["hardtanh", "relu6", "hardsigmoid"])
def test_clipped_activations_are_exactly_zero_with_one_levelset_bit(name):
    t = table(name, 1, "levelset")
    assert t.mse == 0.0 and t.relative_error == 0.0
    assert table(name, 1, "contiguous").relative_error > 1e-10


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "hardtanh", "relu6", "hardsigmoid"])
def test_exact_tables_are_exactly_zero_at_every_width(name):
    for bits in range(2, 9):
        for partition in ("contiguous", "levelset"):
            t = table(name, bits, partition)
            assert t.mse == 0.0 and t.relative_error == 0.0, (bits, partition, t.mse)
            assert t.boundaries.tolist() == sorted(get_activation(name).kinks), t.boundaries


# -- check: its thresholds from both sides ---------------------------------------------------

def _with_error(t, mse):
    rel = mse / (t.mse / t.relative_error)
    return dataclasses.replace(t, mse=mse, relative_error=rel)


@pytest.mark.parametrize("partition", ["contiguous", "levelset"])
def test_check_stored_error_threshold_is_1e_9_relative(partition):
    t = table("gelu", 3, partition)
    mse = evaluate(t)[0]
    for factor, ok in ((1 + 0.5e-9, True), (1 - 0.5e-9, True), (1 + 2e-9, False), (1 - 2e-9, False)):
        r = check_table(_with_error(t, mse * factor), against=None)
        assert r.ok == ok, (factor, r.text)


def test_check_round_off_floor_is_1e_15_of_the_total():
    # relu6 at 1 contiguous bit: relative error ~1e-9, so 1e-15 of the total is ~1e-6 of the
    # mse, far beyond the 1e-9 relative test: only the floor can accept it
    t = table("relu6", 1, "contiguous")
    mse, rel = evaluate(t)
    total = mse / rel
    assert 1e-12 < rel < 1e-7
    for off, ok in ((0.5e-15, True), (-0.5e-15, True), (3e-15, False), (-3e-15, False)):
        bad = dataclasses.replace(t, mse=mse + off * total, relative_error=rel)
        assert check_table(bad, against=None).ok == ok, off
    for off, ok in ((0.5e-15, True), (3e-15, False)):    # the relative error has the same floor
        bad = dataclasses.replace(t, mse=mse, relative_error=rel + off)
        assert check_table(bad, against=None).ok == ok, off


def _worse_by(t, target):
    """t with one boundary moved so that its error is (1 + target)·optimal, stored correctly."""
    s = t.boundaries.copy()
    j = int(np.argmax(np.abs(s) < 1.0))                  # a boundary where w is not tiny
    base = evaluate(t)[0]
    move = lambda d: dataclasses.replace(t, boundaries=np.where(np.arange(s.size) == j, s + d, s))
    d = 1e-4
    rise = evaluate(move(d))[0] / base - 1
    d *= math.sqrt(target / rise)                         # the error is quadratic near the optimum
    moved = move(d)
    mse, rel = evaluate(moved)
    return dataclasses.replace(moved, mse=mse, relative_error=rel), mse / base - 1


def test_check_better_table_threshold_is_1e_9_relative():
    t = table("tanh", 2, "contiguous")
    for target, ok in ((0.4e-9, True), (3e-9, False)):
        worse, rise = _worse_by(t, target)
        assert 0.5 * target < rise < 2 * target, rise
        assert check_table(worse, against="same").ok == ok, (target, rise)
