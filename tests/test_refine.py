"""Refinement (refine.py) against references of its own, at the README's tolerances.

README, "Refinement": Newton on G(s) = f'(s) − (y_l + y_r)/2 "with the exact tridiagonal
Jacobian (dy/ds = w(s)(f'(s) − y)/S0 at each end of an interval)"; "a step is taken where it
lowers the objective E beyond rounding, or keeps E to rounding and lowers max|G|";
Levenberg–Marquardt "gradient 2·w·(y_r − y_l)·G, Hessian ≈ that times the Jacobian,
symmetrised"; every activation converges to |G| ≤ 1e-12; refinement that cannot proceed keeps
the DP's result and says so in `solver.refinement.note`. The references here are central
differences, dense numpy solves, and a problem with closed-form moments.
"""

import math
import warnings

import numpy as np
import pytest

from fewbit_design import refine
from fewbit_design.activations import REGISTRY, get_activation
from fewbit_design.contiguous import ContiguousProblem
from fewbit_design.designer import design
from fewbit_design.cells import make_grid
from fewbit_design.distributions import parse_distribution
from fewbit_design.dp import segment
from fewbit_design.levelset import LevelSetProblem, dp_level_sets
from fewbit_design.refine import (Refinement, _descent_step, _jacobian, _maxabs, _newton_step, _noise,
                                  _objective, _state, _tridiagonal_solve, refine_or_keep, refine_points)


class ExpProblem:
    """Uniform weight on [0, 1], f'(x) = exp(c·x): every moment in closed form."""

    def __init__(self, c=3.0, fixed=()):
        self.c = c
        self.bounds = (0.0, 1.0)
        self.scale = math.exp(c)
        self.fixed = set(fixed)

    def moments(self, s):
        e = np.concatenate([[0.0], s, [1.0]])
        a, b, c = e[:-1], e[1:], self.c
        return np.stack([b - a, (np.exp(c * b) - np.exp(c * a)) / c,
                         (np.exp(2 * c * b) - np.exp(2 * c * a)) / (2 * c)])

    def evaluate(self, s, S):
        d = np.exp(self.c * s)
        fixed = np.zeros(s.size, dtype=bool)
        fixed[[i for i in self.fixed if i < s.size]] = True
        return d, self.c * d, np.ones_like(s), fixed

    def G(self, s):
        """The residual, straight from the closed form."""
        S = self.moments(s)
        y = S[1] / S[0]
        return np.exp(self.c * s) - 0.5 * (y[:-1] + y[1:])

    def E(self, s):
        S = self.moments(s)
        return float(np.sum(S[2] - S[1] ** 2 / S[0]))


def grid_of(name, n=512):
    return make_grid(get_activation(name), parse_distribution("normal:0,1"), n)


def contiguous_start(name, k):
    g = grid_of(name)
    cuts = np.unique(segment(g.prefix(), k))
    return ContiguousProblem(g), g.cut_points(cuts[1:-1])


def levelset_start(name, bits):
    g = grid_of(name)
    _, _, y, _ = dp_level_sets(g, bits)
    y = np.unique(y)
    return LevelSetProblem(g), 0.5 * (y[:-1] + y[1:])


def dense(J):
    lower, diag, upper = J
    return np.diag(diag) + np.diag(lower, -1) + np.diag(upper, 1)


def fd_jacobian(problem, s, h):
    """dG/ds by central differences of the residual the solver computes."""
    cols = []
    for j in range(s.size):
        e = np.zeros(s.size)
        e[j] = h
        cols.append((_state(problem, s + e).G - _state(problem, s - e).G) / (2 * h))
    return np.array(cols).T


PROBLEMS = {
    "exp": lambda: (ExpProblem(), np.array([0.2, 0.45, 0.6, 0.85])),
    "tanh-contiguous": lambda: contiguous_start("tanh", 8),
    "gelu-levelset": lambda: levelset_start("gelu", 3),
}


# -- the linear algebra -----------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 8])
@pytest.mark.parametrize("seed", range(3))
def test_tridiagonal_solve_equals_a_dense_solve(k, seed):
    rng = np.random.default_rng(seed)
    lower, upper = rng.normal(size=k - 1), rng.normal(size=k - 1)
    diag, rhs = rng.normal(size=k) + 3 * rng.choice([-1, 1], size=k), rng.normal(size=k)
    x = _tridiagonal_solve(lower, diag, upper, rhs)
    np.testing.assert_allclose(x, np.linalg.solve(dense((lower, diag, upper)), rhs), rtol=1e-12, atol=1e-14)


def test_tridiagonal_solve_zero_pivot_is_all_nan():
    one = np.ones(1)
    assert np.isnan(_tridiagonal_solve(one[:0], np.zeros(1), one[:0], one)).all()
    assert np.isnan(_tridiagonal_solve(one, np.array([0.0, 1.0]), one, np.ones(2))).all()
    # the second pivot is 1 - 1·1 = 0: J = [[1, 1], [1, 1]] is singular
    assert np.isnan(_tridiagonal_solve(one, np.ones(2), one, np.array([1.0, 2.0]))).all()
    x = _tridiagonal_solve(np.array([1.0, 1.0]), np.array([1.0, 2.0, 1.0]), np.array([1.0, 1.0]),
                           np.array([1.0, 2.0, 3.0]))   # pivots 1, 1, 0
    assert np.isnan(x).all()


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_jacobian_equals_central_differences_of_G(name):
    problem, s = PROBLEMS[name]()
    st = _state(problem, s)
    assert st.free.all()
    J = dense(_jacobian(st))
    Jfd = fd_jacobian(problem, s, 1e-6 * problem.scale if name == "gelu-levelset" else 1e-6)
    np.testing.assert_allclose(J, Jfd, rtol=0, atol=2e-5 * np.abs(Jfd).max())
    assert np.all(np.abs(np.diag(J)) > 0.1 * np.abs(Jfd).max() / s.size)


def test_jacobian_rows_and_columns_of_fixed_points_are_the_identity():
    problem = ExpProblem(fixed=(1, 3))
    s = np.array([0.2, 0.45, 0.6, 0.85])
    st = _state(problem, s)
    assert list(st.free) == [True, False, True, False]
    J = dense(_jacobian(st))
    Jfd = fd_jacobian(ExpProblem(), s, 1e-6)
    for i in (1, 3):
        expect = np.zeros(4)
        expect[i] = 1.0
        assert list(J[i]) == list(expect) and list(J[:, i]) == list(expect)
    free = [0, 2]
    np.testing.assert_allclose(J[np.ix_(free, free)], Jfd[np.ix_(free, free)], rtol=0, atol=1e-5 * np.abs(Jfd).max())


def test_a_run_without_weight_frees_neither_of_its_ends():
    class Empty(ExpProblem):
        def moments(self, s):
            S = super().moments(s)
            S[:, 2] = 0.0           # the run between s[1] and s[2] carries no weight
            return S

    st = _state(Empty(), np.array([0.2, 0.45, 0.6, 0.85]))
    assert list(st.free) == [True, False, False, True]
    st = st._replace(dens=np.array([1.0, 1.0, 0.0, 1.0]))   # 0/0 in dy/ds: no warning, no NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        J = dense(_jacobian(st))
    assert np.isfinite(J).all()


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_newton_step_solves_J_step_eq_minus_G(name):
    problem, s = PROBLEMS[name]()
    st = _state(problem, s)
    J = _jacobian(st)
    step = _newton_step(J, st.G, st.free)
    np.testing.assert_allclose(dense(J) @ step, -st.G, rtol=0, atol=1e-10 * np.abs(st.G).max())


def test_newton_step_leaves_fixed_points_and_refuses_a_singular_jacobian():
    problem = ExpProblem(fixed=(2,))
    st = _state(problem, np.array([0.2, 0.45, 0.6, 0.85]))
    J = _jacobian(st)
    step = _newton_step(J, st.G, st.free)
    assert step[2] == 0.0 and np.all(step[[0, 1, 3]] != 0.0)
    lower, diag, upper = J
    assert _newton_step((lower, np.zeros_like(diag), upper), st.G, st.free) is None


def test_objective_gradient_is_2_w_dy_G():
    """∇E = 2·w(s)·(y_r − y_l)·G, against central differences of E."""
    for problem, s in (f() for f in PROBLEMS.values()):
        st = _state(problem, s)
        D = 2 * st.dens * (st.y[1:] - st.y[:-1])
        h = 1e-7 * problem.scale if isinstance(problem, LevelSetProblem) else 1e-7
        grad = np.array([(_objective(problem.moments(s + h * e)) - _objective(problem.moments(s - h * e))) / (2 * h)
                         for e in np.eye(s.size)])
        np.testing.assert_allclose(D * st.G, grad, rtol=0, atol=1e-5 * np.abs(grad).max())


@pytest.mark.parametrize("mu", [0.0, 1e-3, 1.0, 1e4])
@pytest.mark.parametrize("fixed", [(), (2,)])
def test_descent_step_is_levenberg_marquardt_on_E(mu, fixed):
    """(H + mu·|diag H| + 1e-12·max|diag H|)·Δ = −∇E, H = D·J symmetrised, D = 2·w·(y_r − y_l)."""
    problem = ExpProblem(fixed=fixed)
    s = np.array([0.2, 0.45, 0.6, 0.85])
    st = _state(problem, s)
    J = _jacobian(st)
    D = np.where(st.free, 2 * st.dens * (st.y[1:] - st.y[:-1]), 0.0)
    H = D[:, None] * dense(J)
    H = 0.5 * (H + H.T)
    hd = np.diag(H).copy()
    hd = hd + mu * np.abs(hd) + 1e-12 * np.abs(hd).max()
    hd[~st.free] = 1.0
    H[np.diag_indices(4)] = hd
    step = _descent_step(mu, J, st.G, st.free, st.y, st.dens)
    np.testing.assert_allclose(step, np.linalg.solve(H, -D * st.G), rtol=1e-9, atol=1e-15)
    assert np.all(step[~st.free] == 0.0)
    assert np.dot(D * st.G, step) < 0          # downhill on E
    lower, diag, upper = J
    assert _descent_step(mu, (lower, np.zeros(4), upper), st.G, np.ones(4, dtype=bool), st.y, np.zeros(4)) is None


def test_objective_noise_and_maxabs():
    S = np.array([[2.0, 0.0, 4.0, 1.0, 1.0],
                  [2.0, 0.0, 2.0, 1.0, 1.0],
                  [3.0, 9.0, 1.5, 2.0, 1.0 - 1e-9]])   # an empty run; a last run 1e-9 below 0
    assert _objective(S) == 1.0 + 0.5 + 1.0
    assert isinstance(_objective(S), float)
    S[2, 1] = -9.0
    assert _noise(S) == 4 * np.finfo(float).eps * (3 + 9 + 1.5 + 2 + 1 - 1e-9)
    G = np.array([-3.0, 1.0, 2.0])
    assert _maxabs(G, np.array([True, False, False])) == 3.0
    assert _maxabs(G, np.array([False, True, True])) == 2.0
    assert _maxabs(G, np.zeros(3, dtype=bool)) == 0.0


# -- the iteration ----------------------------------------------------------------------------

def test_metadata_is_plain_json():
    r = Refinement(np.zeros(2), 3, 1e-13, 2)
    assert r.metadata(np.bool_(True), np.float64(0.5)) == {
        "accepted": True, "iterations": 3, "residual": 1e-13, "free_points": 2, "grid_mse": 0.5}
    assert type(r.metadata(np.bool_(False), 1)["accepted"]) is bool
    assert type(r.metadata(True, np.float32(0.5))["grid_mse"]) is float
    for bad in (math.inf, math.nan):
        assert Refinement(np.zeros(1), 0, bad, 0, "why").metadata(False, 1.0) == {
            "accepted": False, "iterations": 0, "residual": None, "free_points": 0, "grid_mse": 1.0, "note": "why"}


def test_no_points_nothing_to_refine():
    r = refine_points(ExpProblem(), np.array([]))
    assert (r.points.size, r.iterations, r.residual, r.free, r.note) == (0, 0, 0.0, 0, "")
    assert r.points.dtype == np.float64


def test_refine_or_keep_keeps_the_start_and_says_why():
    class Broken(ExpProblem):
        def __init__(self, exc):
            super().__init__()
            self.exc = exc

        def moments(self, s):
            raise self.exc

    s0 = [1, 2]                     # ints come back as float64
    for exc in (ValueError("v" * 300), ZeroDivisionError("division by zero"), FloatingPointError("fp")):
        r = refine_or_keep(Broken(exc), s0)
        assert list(r.points) == s0 and r.points.dtype == np.float64
        assert (r.iterations, r.residual, r.free) == (0, math.inf, 0)
        assert r.note == f"not refined: {type(exc).__name__}: {exc}"[:200]
    assert len(refine_or_keep(Broken(ValueError("v" * 300)), s0).note) == 200
    with pytest.raises(TypeError):
        refine_or_keep(Broken(TypeError("a bug, not arithmetic")), s0)


def test_refine_or_keep_silences_floating_point_warnings():
    class Noisy(ExpProblem):
        def evaluate(self, s, S):
            np.log(np.zeros(1))          # divide by zero
            return super().evaluate(s, S)

    s0 = np.array([0.2, 0.45, 0.6, 0.85])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = refine_or_keep(Noisy(), s0)
    assert caught == [] and r.note == ""
    assert np.abs(ExpProblem().G(r.points)).max() <= 1e-13 * ExpProblem().scale


def test_a_singular_jacobian_stops_with_a_note():
    class Flat(ExpProblem):
        def evaluate(self, s, S):   # no density, no slope, yet free: J and the LM system are 0
            return np.exp(self.c * s), np.zeros_like(s), np.zeros_like(s), np.zeros(s.size, dtype=bool)

    s0 = np.array([0.3, 0.6], dtype=np.float32)        # a float32 start comes back as float64
    r = refine_points(Flat(), s0)
    assert list(r.points) == list(s0) and r.points.dtype == np.float64
    assert r.iterations == 1 and r.free == 2
    assert r.note == "stopped: singular Jacobian (no finite Newton or LM step)"
    assert r.residual == np.abs(ExpProblem().G(s0.astype(np.float64))).max()


def test_no_step_that_raises_E_is_taken():
    """A residual that disagrees with E (f' shifted by 1): at E's minimum no step lowers E."""
    opt = refine_points(ExpProblem(), np.array([0.2, 0.45, 0.6, 0.85])).points

    class Shifted(ExpProblem):
        def evaluate(self, s, S):
            d, slope, dens, fixed = super().evaluate(s, S)
            return d + 1.0, slope, dens, fixed

    r = refine_points(Shifted(), opt)
    assert list(r.points) == list(opt) and r.iterations == 1 and r.note == "" and r.free == 4
    assert r.residual == pytest.approx(1.0, abs=1e-12)


def iterates(problem, s0, n):
    """The solver's state after 0, 1, ..., n iterations (it is deterministic)."""
    return [refine_points(problem, s0, max_iter=i) for i in range(n + 1)]


@pytest.mark.parametrize("c,s0", [(3.0, [0.2, 0.45, 0.6, 0.85]),
                                  (4.0, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07]),
                                  (-5.0, [0.9, 0.95, 0.99]), (2.0, [0.3])])
def test_closed_form_problem_converges_and_never_raises_E(c, s0):
    problem = ExpProblem(c)
    s0 = np.array(s0)
    final = refine_points(problem, s0)
    assert final.note == "" and final.free == s0.size and 0 < final.iterations < 30
    s = final.points
    assert np.all(np.diff(s) > 0) and s[0] > 0 and s[-1] < 1
    G = np.abs(problem.G(s)).max()
    assert G <= 1e-13 * problem.scale and final.residual <= 1e-13 * problem.scale
    assert final.residual == pytest.approx(G, rel=0, abs=1e-15 * problem.scale)
    path = iterates(problem, s0, final.iterations)
    for a, b in zip(path[:-1], path[1:]):
        ea, eb = problem.E(a.points), problem.E(b.points)
        # E = S2 - S1²/S0 cancels terms of size S2: it is known to a few ulps of Σ S2, the bound
        # the solver accepts a step by (refine._noise), not to ulps of E (c = 3: Σ S2 = 67, E = 0.98)
        noise = refine._noise(problem.moments(b.points))
        assert eb <= ea + noise                          # E never rises
        if b is path[-1] and np.array_equal(b.points, a.points):
            continue                                     # the last try was rejected: counted, nothing moved
        assert eb < ea - noise or b.residual < a.residual   # or, flat to rounding, max|G| falls
        assert b.iterations == a.iterations + 1


def test_newton_converges_quadratically_from_near_the_optimum():
    problem = ExpProblem(3.0)
    opt = refine_points(problem, np.array([0.2, 0.45, 0.6, 0.85])).points
    path = iterates(problem, opt + np.array([3e-3, -2e-3, 2e-3, -1e-3]), 3)
    res = [p.residual / problem.scale for p in path]
    assert res[0] > 1e-4
    for a, b in zip(res[:-1], res[1:]):
        assert b <= max(50 * a * a, 1e-15), res      # a full Newton step each time
    # stops at the rounding floor, well inside 60 iterations
    assert refine_points(problem, path[0].points).iterations == 3


@pytest.mark.parametrize("name,bits,partition", [
    ("gelu_tanh", 7, "levelset"), ("tanh", 5, "contiguous"), ("tanh", 1, "contiguous"),
    ("silu", 6, "contiguous"), ("gelu", 3, "levelset"), ("sigmoid", 4, "levelset")])
def test_designs_refine_to_1e_12(name, bits, partition):
    t = design(name, bits, partition=partition, grid=512)
    ref = t.solver["refinement"]
    assert ref["accepted"] is True and "note" not in ref
    assert 0 < ref["iterations"] < refine.MAX_ITER and ref["free_points"] == t.levels.size - 1
    assert ref["residual"] <= 1e-12 and t.mse < ref["grid_mse"]
    act = get_activation(name)
    y = t.levels[t.codes]
    assert np.abs(act.df(t.boundaries) - 0.5 * (y[:-1] + y[1:])).max() <= 1e-12


NORMAL = parse_distribution("normal:0,1")

# Every activation x bits 1-8 x partition (336 designs, 12 s on one core): the search ends with
# max|G| <= 1e-12 inside MAX_ITER, or it is listed here with what is known of why not.
OPEN = {}    # (name, bits, partition) -> why not, for a design known not to get there
EVERY_DESIGN = [pytest.param(n, b, p, marks=[pytest.mark.xfail(reason=OPEN[n, b, p], strict=False)]
                             if (n, b, p) in OPEN else [])
                for n in sorted(REGISTRY) for b in range(1, 9) for p in ("contiguous", "levelset")]


@pytest.mark.parametrize("name,bits,partition", EVERY_DESIGN)
def test_every_design_refines_to_1e_12(name, bits, partition):
    ref = design(name, bits, partition=partition, grid=512).solver["refinement"]
    assert "note" not in ref and ref["iterations"] < refine.MAX_ITER
    assert ref["residual"] is not None and ref["residual"] <= 1e-12


@pytest.mark.xfail(reason="which G = 0 point the polish reaches depends on libm rounding: with numpy 2.4 on AVX2 a "
                          "saddle (eigenvalue -8.4e-7), with numpy 1.24 a minimum (+2.4e-7, and the 1e-12 claim holds)",
                   strict=False)
def test_gelu_8bit_levelset_stationary_point_is_a_saddle():
    """The G = 0 point that Newton reaches from the 8-bit GELU grid level sets is not a minimum of E:
    the Hessian of E there (D·J, symmetric where G = 0) has a negative eigenvalue, and E falls along
    its eigenvector by ~1e4 times E's rounding. Whether the search stops there (its first Newton step
    raises E within E's ulps or not) depends on how numpy's exp/erf round, i.e. on the CPU."""
    from scipy.linalg import eigh_tridiagonal

    from fewbit_design.cells import levels_of, pieces_error

    act = get_activation("gelu")
    g = make_grid(act, NORMAL, 512)
    P = LevelSetProblem(g)
    y = np.unique(dp_level_sets(g, 8)[2])
    t = refine_points(P, 0.5 * (y[:-1] + y[1:])).points
    for _ in range(8):                                   # plain Newton to G = 0 (3 steps on AVX2)
        st = _state(P, t)
        if _maxabs(st.G, st.free) <= 1e-13:
            break
        t = t + _newton_step(_jacobian(st), st.G, st.free)
    st = _state(P, t)
    assert _maxabs(st.G, st.free) <= 1e-12 and st.free.all()
    lower, diag, upper = _jacobian(st)
    D = 2.0 * st.dens * (st.y[1:] - st.y[:-1])
    w, v = eigh_tridiagonal(D * diag, 0.5 * (D[:-1] * upper + D[1:] * lower))
    assert w[0] < 0 < w[1]                               # one direction of descent (-8.4e-7 on AVX2)

    def E(t):
        s, codes = P.partition(t)
        return pieces_error(act, NORMAL, g.edges, s, levels_of(P.moments(t))[codes])

    e = E(t)
    for h in (1e-3, -1e-3):                              # ½ w0 h² = -4.2e-13; rounding of E: 64 eps E = 2.5e-20
        assert E(t + h * v[:, 0]) < e - 1e-14


def test_escape_steps_off_negative_curvature_only():
    """refine._escape: at a minimum of E (a converged tanh design) there is no negative curvature and
    it returns None; at the G = 0 point Newton reaches for GELU's 8-bit level sets it lowers E beyond
    rounding where H has a negative eigenvalue (numpy 2.4 on AVX2), and returns None where that point
    is a minimum (numpy 1.24); from where it leads, refinement ends at |G| <= 1e-12 with E lower still."""
    from fewbit_design.refine import _escape, _objective

    P, s = contiguous_start("tanh", 16)
    opt = refine_points(P, s)
    st = _state(P, opt.points)
    assert opt.residual <= 1e-12 and _escape(P, opt.points, st, _objective(st.S)) is None

    g = make_grid(get_activation("gelu"), NORMAL, 512)
    P = LevelSetProblem(g)
    y = np.unique(dp_level_sets(g, 8)[2])
    t = 0.5 * (y[:-1] + y[1:])
    for _ in range(12):                                  # plain Newton to G = 0
        st = _state(P, t)
        if _maxabs(st.G, st.free) <= 1e-13:
            break
        t = t + _newton_step(_jacobian(st), st.G, st.free)
    st = _state(P, t)
    e = _objective(st.S)
    lower, diag, upper = _jacobian(st)
    D = 2.0 * st.dens * (st.y[1:] - st.y[:-1])
    H = np.diag(D * diag) + np.diag(0.5 * (D[:-1] * upper + D[1:] * lower), 1)
    w0 = np.linalg.eigvalsh(H + np.triu(H, 1).T)[0]
    out = _escape(P, t, st, e)
    if w0 >= 0:
        assert out is None
        return
    assert out is not None
    t2, st2, res2, e2 = out
    assert e2 < e - _noise(st2.S) and np.all(np.diff(t2) > 0)
    final = refine_points(P, t2)
    assert final.residual <= 1e-12 and _objective(_state(P, final.points).S) < e2


def test_the_dp_does_not_cut_on_a_sliver_cell():
    """selu's grid at 512 cells has a sliver [-2.8e-11, 0] beside its jump (an asinh edge that misses 0
    by rounding): the DP's cells leave its free end out, keep the jump, and every other core edge; the
    8-bit contiguous design then converges (it crept for 60 iterations, max|G| 4.6e-3, from a cut there)."""
    g = grid_of("selu")
    e = g.core_edges
    w = np.diff(e)
    slivers = np.flatnonzero(w < 1e-6 * np.median(w))
    i = int(np.flatnonzero(e == 0.0)[0]) - 1
    assert i in slivers and w[i] < 1e-10                  # [-2.8e-11, 0]
    kept = g.edges[g.dp_core]
    assert e[i] not in kept and 0.0 in kept
    # one end of each sliver goes (never a kink or the core's ends), every other core edge stays
    assert kept.size == e.size - slivers.size and kept[0] == e[0] and kept[-1] == e[-1]
    t = design("selu", 8, partition="contiguous", grid=512)
    ref = t.solver["refinement"]
    assert ref["residual"] <= 1e-12 and ref["iterations"] < refine.MAX_ITER
    assert np.min(np.diff(t.boundaries)) > 1e-6 * np.median(np.diff(t.boundaries))


class Creeping:
    """One point, G = s − 1/2, E the constant `e` wherever s is; the slope is reported 10 times
    too steep, so each Newton step removes a tenth of G and leaves E as it is."""

    def __init__(self, e, scale):
        self.e, self.scale, self.bounds = e, scale, (0.0, 1.0)

    def moments(self, s):
        run = np.diff(np.concatenate([[0.0], s, [1.0]]))
        return np.stack([run, 0.5 * run, (0.25 + self.e) * run])

    def evaluate(self, s, S):
        return s, np.full_like(s, 10.0), np.zeros_like(s), np.zeros(s.size, dtype=bool)


def test_a_stalled_iteration_stops_after_four_steps():
    """Four steps that neither halve max|G| nor lower E: stalled (not 60 iterations)."""
    r = refine_points(Creeping(1e3, 1.0), np.array([0.6]))
    assert r.iterations == 4 and r.note == "" and r.free == 1
    assert r.residual == pytest.approx(0.1 * 0.9 ** 4, rel=1e-9)
    assert r.points[0] == pytest.approx(0.5 + 0.1 * 0.9 ** 4, rel=1e-12)


def test_the_rounding_floor_of_G_stops_the_iteration():
    """Within 16·TOL·scale of 0, a step that does not halve max|G| is the last."""
    scale = 8.0
    r = refine_points(Creeping(1e3, scale), np.array([0.5 + 10 * refine.TOL * scale]))
    assert r.iterations == 1 and r.residual == pytest.approx(9 * refine.TOL * scale, rel=1e-3)


class Pinned:
    """Points that E does not see (constant moments), G = s − target: Newton is exact, and the
    line search alone keeps the points inside the bounds (0, 1) and in order."""

    def __init__(self, target):
        self.target, self.scale, self.bounds = np.asarray(target, dtype=float), 1.0, (0.0, 1.0)

    def moments(self, s):
        return np.tile([[1.0], [0.5], [1.25]], s.size + 1)

    def evaluate(self, s, S):
        return s - self.target + 0.5, np.ones_like(s), np.zeros_like(s), np.zeros(s.size, dtype=bool)


@pytest.mark.parametrize("target,s0", [([-0.5, 0.7], [0.2, 0.4]), ([0.3, 0.5, 1.5], [0.3, 0.5, 0.8]),
                                       ([0.3, 0.6, 0.4], [0.2, 0.5, 0.7])])
def test_steps_that_leave_the_bounds_or_reorder_the_points_are_halved(target, s0):
    r = refine_points(Pinned(target), np.array(s0))
    s = r.points
    assert np.all(np.diff(s) > 0) and s[0] > 0 and s[-1] < 1, s
    assert r.iterations >= 1 and r.residual < np.abs(np.array(s0) - target).max()


def test_levenberg_marquardt_takes_over_where_newton_is_singular():
    """Point 0 reports no slope and no density: J's first pivot is 0 and Newton fails; the LM
    system stays regular (1e-12 of its largest diagonal) and still converges point 1."""
    class HalfFlat(ExpProblem):
        def evaluate(self, s, S):
            d, slope, dens, fixed = super().evaluate(s, S)
            slope[0] = dens[0] = 0.0
            return d, slope, dens, fixed

    s0 = np.array([0.3, 0.6])
    r = refine_points(HalfFlat(), s0)
    assert r.note == "" and r.iterations >= 1 and r.points[0] == 0.3
    assert abs(ExpProblem().G(r.points)[1]) <= 1e-13 * ExpProblem().scale


@pytest.mark.parametrize("empty", [0, 2, 4])
def test_jacobian_next_to_a_run_without_weight(empty):
    """The ends of a weightless run are fixed; every other point keeps its exact derivatives."""
    class Empty(ExpProblem):
        def moments(self, s):
            S = super().moments(s)
            S[:, empty] = 0.0
            return S

    problem, s = Empty(), np.array([0.2, 0.45, 0.6, 0.85])
    st = _state(problem, s)
    free = np.flatnonzero(st.free)
    assert free.tolist() == [i for i in range(4) if i not in (empty - 1, empty)]
    J = dense(_jacobian(st))
    Jfd = fd_jacobian(problem, s, 1e-6)
    np.testing.assert_allclose(J[np.ix_(free, free)], Jfd[np.ix_(free, free)], rtol=0, atol=1e-5 * np.abs(Jfd).max())
    for i in set(range(4)) - set(free.tolist()):
        assert J[i].tolist() == np.eye(4)[i].tolist() and J[:, i].tolist() == np.eye(4)[i].tolist()
