"""The level-set method (levelset.py) against references of its own.

README: the level-set optimum is the optimal 2^b-level quantizer of V = f'(X); "thresholds t
(midpoints of adjacent levels) are refined by Newton in value space, where every threshold
becomes all roots of f'(x) = t"; codes whose levels agree to 1e-13 are merged; boundaries at
a jump of f' stay on it. References here: scipy's brentq and quad, closed-form f'' for the
density of V, and direct sums over the samples.
"""

import math

import numpy as np
import pytest
from scipy import integrate, optimize

from fewbit_design import levelset
from fewbit_design.activations import get_activation
from fewbit_design.designer import design
from fewbit_design.cells import SampleCells, make_grid, make_sample_cells
from fewbit_design.distributions import parse_distribution, samples_from_array
from fewbit_design.levelset import LevelSetProblem, _root, compact_codes, merge_equal_codes, solve

NORMAL = parse_distribution("normal:0,1")
phi = lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
# f'' in closed form, for the density of V = f'(X)
D2 = {"tanh": lambda x: -2 * np.tanh(x) / np.cosh(x) ** 2,
      "gelu": lambda x: phi(x) * (2 - x * x)}


def problem(name, n=256, dist=NORMAL):
    return LevelSetProblem(make_grid(get_activation(name), dist, n))


def brute_roots(df, t, lo=-12.0, hi=12.0):
    """Every x in [lo, hi] with df(x) = t: sign changes on a fine grid, then brentq."""
    x = np.linspace(lo, hi, 48001)
    y = df(x) - t
    out = []
    for i in np.flatnonzero((y[1:] > 0) != (y[:-1] > 0)):
        f = lambda u: float(df(np.array([u]))[0]) - t
        out.append(optimize.brentq(f, x[i], x[i + 1], xtol=1e-300, rtol=8.9e-16, maxiter=500))
    return np.array(out)


def is_root(df, x, t, width):
    """f' - t changes sign within x ± width, or f'(x) equals t to f''s rounding (4e-16 |t|)."""
    lo, hi, mid = (float(df(np.array([v]))[0]) - t for v in (x - width, x + width, x))
    return lo * hi <= 0 or abs(mid) <= 4e-16 * abs(t)


# -- value space: roots, partition, moments, density -----------------------------------------

def test_problem_scale_and_bounds():
    p = problem("gelu")
    lo, hi = float(p.fe.min()), float(p.fe.max())
    assert lo == pytest.approx(-0.1289041, abs=1e-6) and hi == pytest.approx(1.1289041, abs=1e-6)
    assert p.scale == hi and p.bounds == (lo - hi, 2 * hi)
    p = problem("tanhshrink", dist=parse_distribution("normal:0,3"))   # f' = tanh² reaches 1 - 1e-…
    assert p.scale == max(1.0, abs(float(p.fe.min())), abs(float(p.fe.max())))
    p = problem("sigmoid")                        # max f' = 1/4: the scale stays 1
    assert p.scale == 1.0 and p.bounds == (float(p.fe.min()) - 1.0, float(p.fe.max()) + 1.0)
    p = LevelSetProblem(make_grid(get_activation("leaky_relu", {"negative_slope": -3.0}), NORMAL, 64))
    assert p.scale == 3.0 and p.bounds == (-6.0, 4.0)      # f' in {-3, 1}: |lo| sets the scale


@pytest.mark.parametrize("name,t", [("gelu", [-0.1, 0.02, 0.5, 1.05, 1.16]), ("tanh", [0.1, 0.5, 0.99]),
                                    ("gelu", [-0.1289041, 1.1289041]),      # both roots next to an extremum
                                    ("silu", [-0.09, 0.3, 1.09])])
def test_roots_are_every_root_of_f_prime_eq_t(name, t):
    p = problem(name)
    t = np.array(t)
    j, x = p.roots(t)
    for jj, tj in enumerate(t):
        mine = np.sort(x[j == jj])
        ref = brute_roots(p.grid.act.df, tj)
        assert mine.size == ref.size, (tj, mine, ref)
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-9)     # near an extremum only to rounding
        assert all(is_root(p.grid.act.df, xi, tj, 1e-15 * max(1.0, abs(xi))) for xi in mine)
    # cached per t: the same t gives the same arrays, another t other roots
    assert p.roots(t)[1] is x
    j2, x2 = p.roots(t * (1 - 1e-3))
    assert x2 is not x and np.all(x2 != x)


def test_a_threshold_crossed_by_a_jump_sits_on_it_exactly():
    for name, t, jumps in [("relu", [0.5], [0.0]), ("hardtanh", [0.5], [-1.0, 1.0]), ("relu6", [0.25, 0.75], [0.0, 6.0])]:
        p = problem(name)
        j, x = p.roots(np.array(t))
        assert sorted(x.tolist()) == sorted(jumps * len(t)), (name, x)
        dens = p.evaluate(np.array(t), None)[2]
        assert np.all(dens == 0.0)                  # no density at a jump: the threshold is fixed


@pytest.mark.parametrize("name,t", [("gelu", [-0.1, 0.02, 0.5, 1.05]), ("tanh", [0.1, 0.5, 0.99])])
def test_evaluate_gives_g_eq_t_and_the_density_of_V(name, t):
    """dens(t) = Σ over roots x of f'(x) = t of w(x)/|f''(x)|, f'' in closed form."""
    p = problem(name)
    t = np.array(t)
    g, slope, dens, fixed = p.evaluate(t, None)
    assert g is t and slope.tolist() == [1.0] * t.size and not fixed.any()
    for jj, tj in enumerate(t):
        xs = brute_roots(p.grid.act.df, tj)
        ref = float(np.sum(phi(xs) / np.abs(D2[name](xs))))
        assert dens[jj] == pytest.approx(ref, rel=1e-6)


def test_evaluate_fixes_a_threshold_without_density():
    p = problem("gelu")
    t = np.array([-0.5, 0.5, 2.0])              # below min f', inside, above max f'
    _, _, dens, fixed = p.evaluate(t, None)
    assert fixed.tolist() == [True, False, True] and dens[0] == 0.0 and dens[2] == 0.0


def code_of(df, t, x):
    """The level set of x: how many thresholds are <= f'(x)."""
    return np.searchsorted(t, df(x), side="right")


@pytest.mark.parametrize("name,t", [("gelu", [-0.1, 0.02, 0.5, 1.05]), ("tanh", [0.1, 0.5, 0.99]),
                                    ("hardswish", [0.25, 0.75]), ("relu6", [0.5])])
def test_partition_cuts_x_into_the_level_sets(name, t):
    p = problem(name)
    t = np.array(t)
    s, codes = p.partition(t)
    df = p.grid.act.df
    assert np.all(np.diff(s) > 0) and codes.size == s.size + 1
    assert np.all(codes[1:] != codes[:-1])           # no boundary inside one code
    x = np.linspace(-10, 10, 200001)
    x = x[np.min(np.abs(x[:, None] - s[None, :]), axis=1) > 1e-9] if s.size else x
    assert np.array_equal(codes[np.searchsorted(s, x, side="right")], code_of(df, t, x))


@pytest.mark.parametrize("name,t", [("gelu", [-0.1, 0.02, 0.5, 1.05]), ("tanh", [0.2, 0.6])])
def test_moments_of_the_level_sets_against_scipy(name, t):
    p = problem(name)
    t = np.array(t)
    S = p.moments(t)
    s, codes = p.partition(t)
    df = p.grid.act.df
    ends = [-np.inf, *s, np.inf]
    ref = np.zeros((3, t.size + 1))
    for c, a, b in zip(codes, ends[:-1], ends[1:]):
        for k in range(3):
            ref[k, c] += integrate.quad(lambda u: phi(u) * float(df(np.array([u]))[0]) ** k, a, b,
                                        epsabs=1e-15, epsrel=1e-13, limit=200)[0]
    np.testing.assert_allclose(S, ref, rtol=1e-10, atol=1e-14)


def test_moments_keep_a_column_for_every_level_set_even_empty_ones():
    p = problem("gelu")
    S = p.moments(np.array([0.5, 2.0, 3.0]))      # the top two level sets are empty
    assert S.shape == (3, 4) and np.all(S[:, 2:] == 0.0) and np.all(S[0, :2] > 0)


# -- the root finder --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gelu", "tanh", "sigmoid", "silu", "mish", "softplus"])
def test_root_meets_brentq_in_a_few_steps(name):
    df = get_activation(name).df
    calls = []

    def counted(x):
        calls.append(1)
        return df(x)

    a = np.array([-3.0, -0.7, 0.1, 0.3, 1.0, 2.5])
    b = a + np.array([1.0, 0.5, 0.2, 2.0, 0.01, 3.0])
    fa, fb = df(a), df(b)
    t = np.where(fa != fb, 0.5 * (fa + fb), fa) + np.array([0.0, 1e-4, -1e-5, 0.0, 0.0, 0.0]) * (fb - fa)
    ok = (fa - t) * (fb - t) < 0
    x = _root(counted, t[ok], a[ok], b[ok], fa[ok], fb[ok])
    for xi, ti, ai, bi in zip(x, t[ok], a[ok], b[ok]):
        ref = optimize.brentq(lambda u: float(df(np.array([u]))[0]) - ti, ai, bi, xtol=1e-300, rtol=8.9e-16)
        assert ai <= xi <= bi and abs(xi - ref) <= 4e-15 * max(abs(ai), abs(bi))
        # as close as doubles allow: a bracket of 4e-16 of the ends, or f'(x) = t to rounding
        assert is_root(df, xi, ti, 2e-16 * max(abs(ai), abs(bi))), (name, xi, ref)
    assert len(calls) <= 24, len(calls)    # Illinois plus one probe (5-19 steps), not bisection (~50)


def test_root_stops_on_an_exact_hit_and_on_a_flat_stretch():
    df = lambda x: np.clip(x, -1.0, 1.0)             # f' = t exactly at x = t
    x = _root(df, np.array([0.25, 0.0]), np.array([-2.0, -2.0]), np.array([3.0, 2.0]),
              np.array([-1.0, -1.0]), np.array([1.0, 1.0]))
    assert x.tolist() == [0.25, 0.0]
    # a linear f' with t far from the ends: the secant lands on it in one step
    x = _root(lambda u: 3.0 * u, np.array([1.5]), np.array([0.0]), np.array([4.0]), np.array([0.0]), np.array([12.0]))
    assert x.tolist() == [0.5]


def test_root_bisects_where_the_secant_leaves_the_bracket():
    # f' with a step-like shape (a steep tanh): secants overshoot; still within a few ulp
    df = lambda x: np.tanh(200.0 * (x - 0.3))
    a, b = np.array([-5.0]), np.array([5.0])
    x = _root(df, np.array([0.5]), a, b, df(a), df(b))
    ref = 0.3 + math.atanh(0.5) / 200.0
    assert abs(x[0] - ref) <= 4 * np.spacing(ref)


# -- codes ------------------------------------------------------------------------------------

def test_compact_codes():
    codes, used = compact_codes(np.array([3, 0, 3, 5, 0]))
    assert codes.tolist() == [1, 0, 1, 2, 0] and used.tolist() == [0, 3, 5]
    codes, used = compact_codes(np.array([2]))
    assert codes.tolist() == [0] and used.tolist() == [2]


def test_merge_equal_codes():
    s = np.array([1.0, 2.0, 3.0, 4.0])
    codes = np.array([0, 1, 2, 1, 3])
    levels = np.array([0.5, 0.2, 0.5 + 1e-14, 0.9])        # codes 0 and 2 agree to 1e-13
    s2, c2, y2 = merge_equal_codes(s, codes, levels, 1.0)
    assert s2.tolist() == [1.0, 2.0, 3.0, 4.0] and c2.tolist() == [1, 0, 1, 0, 2]
    assert y2[[0, 2]].tolist() == [0.2, 0.9] and y2[1] in (0.5, 0.5 + 1e-14)
    # a boundary between two codes that merge disappears; the scale sets the tolerance
    s2, c2, y2 = merge_equal_codes(s, np.array([0, 2, 1, 3, 1]), levels, 1.0)
    assert s2.tolist() == [2.0, 3.0, 4.0] and c2.tolist() == [1, 0, 2, 0] and y2[[0, 2]].tolist() == [0.2, 0.9]
    s2, c2, y2 = merge_equal_codes(s, codes, np.array([0.5, 0.2, 0.5 + 1e-12, 0.9]), 1.0)
    assert c2.tolist() == [1, 0, 2, 0, 3] and y2.size == 4
    s2, c2, y2 = merge_equal_codes(s, codes, np.array([0.5, 0.2, 0.5 + 1e-12, 0.9]), 100.0)
    assert c2.tolist() == [1, 0, 1, 0, 2] and y2.size == 3
    assert c2.dtype == np.int64


# -- the candidates ---------------------------------------------------------------------------

def test_levelset_solve_records_how_it_solved():
    g = make_grid(get_activation("tanh"), NORMAL, 256)
    c = solve(g, 2)
    assert c.partition == "levelset"
    assert c.method == "exact-monge-dp+newton (value space)"
    assert c.cells == {"grid": g.edges.size - 1, "range": [float(g.edges[0]), float(g.edges[-1])],
                       "quadrature": "gauss-legendre-8 per cell"}
    ref = c.refinement
    assert ref["accepted"] is True and ref["free_points"] == 3 and ref["residual"] <= 1e-12
    assert ref["grid_mse"] > c.mse
    # levels are the conditional means over their level sets, and the stored error is exact
    y = c.levels[c.codes]
    assert np.abs(g.act.df(c.boundaries) - 0.5 * (y[:-1] + y[1:])).max() <= 1e-12
    assert c.levels.size == 4 and sorted(set(c.codes.tolist())) == [0, 1, 2, 3]


def test_levelset_solve_keeps_the_grid_table_when_refinement_does_not_help():
    # gelu at 1 bit: Newton has nothing to do (iterations 0) and its error is not lower
    # by rounding; the grid's table is kept, and the notes say so
    g = make_grid(get_activation("gelu"), NORMAL, 256)
    c = solve(g, 1)
    ref = c.refinement
    assert ref["iterations"] == 0 and ref["accepted"] is False
    assert c.mse == ref["grid_mse"]


@pytest.mark.parametrize("name", ["hardtanh", "relu6", "hardsigmoid"])
def test_clipped_levelsets_are_exact_with_merged_codes(name):
    for bits in (1, 3):
        t = design(name, bits, partition="levelset", grid=64)
        assert t.mse == 0.0 and t.levels.size == 2 and t.boundaries.size == 2
        assert t.solver["refinement"]["accepted"] is True      # refined error 0 <= grid error 0
        assert sorted(t.levels.tolist()) == [0.0, float(get_activation(name).df(np.array([0.5]))[0])]


def test_samples_solve_against_direct_sums():
    rng = np.random.default_rng(3)
    x = rng.normal(size=300)
    act = get_activation("gelu")
    cells = make_sample_cells(act, x)
    c = solve(cells, 2, bins=64)
    assert (c.method, c.refinement) == ("exact-monge-dp over unique sample derivatives", {"sweeps": 0})
    assert c.cells == {"unique_samples": 300, "range": [float(x.min()), float(x.max())]}
    q = c.levels[c.codes][np.searchsorted(c.boundaries, x, side="right")]
    assert c.mse == pytest.approx(np.mean((act.df(x) - q) ** 2), rel=1e-12)
    for code in range(c.levels.size):           # every level is the mean of its samples
        assert c.levels[code] == pytest.approx(np.mean(act.df(x)[q == c.levels[code]]), rel=1e-12)
    # nearest level for every sample: the optimal quantizer's partition
    assert np.all(np.abs(act.df(x) - q) <= np.min(np.abs(act.df(x)[:, None] - c.levels[None, :]), axis=1) + 1e-12)


def test_samples_solve_on_bins_says_so(monkeypatch):
    monkeypatch.setattr(levelset, "EXACT_SAMPLES", 64)
    x = np.random.default_rng(4).normal(size=500)
    act = get_activation("tanh")
    c = solve(make_sample_cells(act, x), 2, bins=64)
    assert c.method == "monge-dp over value bins + exact exchange refinement"
    assert c.refinement["sweeps"] >= 1 and c.cells["unique_samples"] == 500


def _value_cells(d):
    """Sample cells at 0, 1, ... with derivatives d and equal weights."""
    return SampleCells(values=np.arange(d.size, dtype=np.float64), weight=np.full(d.size, 1 / d.size), d=d)


def test_levelset_samples_exact_limit(monkeypatch):
    cells = _value_cells(np.random.default_rng(5).random(100))
    monkeypatch.setattr(levelset, "EXACT_SAMPLES", 50)
    assert solve(cells, 2, bins=100).refinement["sweeps"] == 0       # bins covers every value: exact
    assert solve(cells, 2, bins=99).refinement["sweeps"] >= 1        # beyond: bins + exchange
    monkeypatch.setattr(levelset, "EXACT_SAMPLES", 100)
    assert solve(cells, 2, bins=10).refinement["sweeps"] == 0


def test_samples_with_a_value_split_by_rounding_get_one_code():
    # relu' on samples takes the values 0 and 1 only: 4 codes would split them for free
    x = np.random.default_rng(6).normal(size=200)
    t = design("relu", 2, distribution=samples_from_array(x), partition="levelset")
    assert t.levels.tolist() == [0.0, 1.0] and t.mse == 0.0 and t.boundaries.size == 1


@pytest.mark.parametrize("name,params,bits", [
    ("gelu", {}, 2), ("tanh", {}, 2), ("softplus", {}, 3),
    ("leaky_relu", {"negative_slope": 2.0}, 1), ("leaky_relu", {"negative_slope": 2.0}, 2)])
def test_grid_stage_puts_weightless_cells_with_their_neighbour(name, params, bits):
    """Cells without weight (under a normal weight: in the right half, where the cumulative sum
    from -inf no longer moves) join the group on their left: no boundary of the grid table
    touches such a cell."""
    g = make_grid(get_activation(name, params), NORMAL, 64)
    m0 = np.diff(g.cum[0])
    assert (m0 <= 0).sum() > 0                          # the case this is about
    s, codes, levels, _ = levelset.dp_level_sets(g, bits)
    i = np.searchsorted(g.edges, s)                      # boundary s = edges[i]
    assert np.array_equal(g.edges[i], s)
    assert np.all(m0[i - 1] > 0) and np.all(m0[i] > 0), (s, m0[i - 1], m0[i])
    assert codes.size == s.size + 1 and np.all(codes[1:] != codes[:-1])


def test_refine_levelset_starts_at_the_midpoints_of_the_levels():
    g = make_grid(get_activation("gelu"), NORMAL, 256)
    s, codes, y, ref = levelset.refine_levelset(g, levelset.dp_level_sets(g, 3)[2])
    assert ref.iterations >= 2 and ref.residual <= 1e-12
    again = levelset.refine_levelset(g, y)              # from the optimum: nothing left to do
    assert again[3].iterations <= 1 and np.allclose(again[0], s, rtol=0, atol=1e-12)
    assert np.array_equal(again[1], codes) and np.allclose(again[2], y, rtol=0, atol=1e-13)


def test_binned_samples_path_uses_exact_samples_plus_one_bin_edges(monkeypatch):
    from fewbit_design import dp
    seen = []
    real = dp.kmeans_segment

    def spy(P, k):
        seen.append(P.shape[1])
        return real(P, k)

    monkeypatch.setattr(dp, "kmeans_segment", spy)
    monkeypatch.setattr(levelset, "EXACT_SAMPLES", 64)
    solve(_value_cells(np.random.default_rng(7).random(500)), 2, bins=16)
    assert seen == [65]                          # 64 bins: 65 prefix columns, not 500


def test_samples_lone_extreme_values_keep_their_code():
    for x, s in [([-1.0, 1.0, 2.0, 3.0], 0.0), ([-3.0, -2.0, -1.0, 1.0], 0.0)]:
        t = design("relu", 1, distribution=samples_from_array(np.array(x)), partition="levelset")
        assert t.boundaries.tolist() == [s] and t.levels[t.codes].tolist() == [0.0, 1.0] and t.mse == 0.0
