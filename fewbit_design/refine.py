"""Refinement step (DP -> refinement): the cut points to the optimality condition, by Newton / LM.

At an optimal cut point s between runs with levels y_l, y_r (conditional means):
    G(s) = g(s) - (y_l + y_r) / 2 = 0
where g(s) = f'(s) for contiguous boundaries in x, and g(t) = t for level-set thresholds
in value space. Both problems share this Newton iteration: the Jacobian is tridiagonal
(d y / d s = density·(g(s) - y) / mass at each end of a run), the line search is on the
objective itself (see refine_points), and the start is the grid optimum, already within a
cell of a continuous optimum.
Cut points with zero density, at a jump of f', or next to an empty run stay fixed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._jit import kernel
from .cells import levels_of

MAX_ITER = 60
TOL = 1e-14


@dataclass
class Refinement:
    points: np.ndarray
    iterations: int
    residual: float      # max |G| over the free points at the end
    free: int            # how many points were free
    note: str = ""       # why refinement could not proceed, if it could not
    escapes: int = 0     # steps taken off a saddle of E (along negative curvature)

    def metadata(self, accepted: bool, grid_mse: float) -> dict:
        """The solver's "refinement" entry (finite numbers only: files hold plain JSON)."""
        d = {"accepted": bool(accepted), "iterations": self.iterations,
             "residual": self.residual if np.isfinite(self.residual) else None,
             "free_points": self.free, "grid_mse": float(grid_mse)}
        if self.note:
            d["note"] = self.note
        if self.escapes:
            d["saddle_escapes"] = self.escapes
        return d


def refine_points(problem, s0: np.ndarray, *, max_iter: int = MAX_ITER) -> Refinement:
    """Newton-refine the cut points s0 (ascending, inside problem.bounds).

    A step is taken when it lowers the objective E by more than E's rounding, or leaves E
    unchanged to rounding and lowers max|G|: E never rises, and near convergence, where E
    moves by O(G²) only, max|G| decides. Testing max|G| alone fails where the Jacobian is
    nearly singular (a flat valley of E, e.g. GELU level sets at 7-8 bits near the asymptote
    f' -> 0-): there the Newton step is long and max|G| rises along it while E falls (by
    4e-4 relative for GELU at 8 bits).
    """
    s = np.array(s0, dtype=np.float64)
    if s.size == 0:
        return Refinement(s, 0, 0.0, 0)
    lo, hi = problem.bounds
    state = _state(problem, s)
    res, err = _maxabs(state.G, state.free), _objective(state.S)
    it = 0
    history = [(res, err)]
    mu = None                        # damping of the last LM step taken; None after Newton
    escapes = 0
    while it < max_iter and res > TOL * problem.scale and state.free.any():
        if len(history) > 4 and res > 0.5 * history[-5][0] and err >= history[-5][1] - _noise(state.S):
            # stalled: neither max|G| nor E moves (see README); off a saddle, go on from lower E
            escaped = _escape(problem, s, state, err) if res > 16 * TOL * problem.scale else None
            if escaped is None:
                break
            it, escapes, mu = it + 1, escapes + 1, None
            s, state, res, err = escaped
            history = [(res, err)]
            continue
        if len(history) > 1 and res <= 16 * TOL * problem.scale and res > 0.5 * history[-2][0]:
            break                    # at the rounding floor of G
        it += 1
        # Newton, halved down to 1/64 (shorter steps only exploit E's rounding), then
        # Levenberg-Marquardt steps on E with growing damping; after an LM step, Newton gets
        # one full step and LM restarts from a tenth of the last damping
        G, free = state.G, state.free
        J = _jacobian(state)         # one Jacobian for the Newton step and every LM step
        newton = _newton_step(J, G, free)
        alphas = 0.5 ** np.arange(7) if mu is None else [1.0]
        mus = 10.0 ** np.arange(-4 if mu is None else max(-4, round(np.log10(mu)) - 1), 5)
        tries = itertools.chain(((a, newton, None) for a in alphas),
                                ((1.0, _descent_step(m, J, G, free, state.y, state.dens), m) for m in mus))
        accepted, solved = False, False
        for alpha, step, m in tries:  # lazily: the LM steps are solved only if Newton fails
            if step is None:
                continue
            solved = True
            t = s + alpha * step
            if np.all(np.diff(t) > 0) and t[0] > lo and t[-1] < hi:
                st = _state(problem, t)
                rt, et = _maxabs(st.G, st.free), _objective(st.S)
                noise = _noise(st.S)
                if et < err - noise or (et <= err + noise and rt < res):
                    s, state, res, err, mu, accepted = t, st, rt, et, m, True
                    break
        if not accepted:
            escaped = _escape(problem, s, state, err) if solved and res > 16 * TOL * problem.scale else None
            if escaped is None:
                note = "" if solved else "stopped: singular Jacobian (no finite Newton or LM step)"
                return Refinement(s, it, res, int(state.free.sum()), note, escapes)
            escapes, mu = escapes + 1, None
            s, state, res, err = escaped
            history = [(res, err)]
            continue
        history.append((res, err))
    return Refinement(s, it, res, int(state.free.sum()), escapes=escapes)


def refine_or_keep(problem, s0: np.ndarray) -> Refinement:
    """refine_points, or s0 unchanged with a note when the arithmetic fails on the way."""
    try:
        with np.errstate(all="ignore"):
            return refine_points(problem, s0)
    except (ArithmeticError, FloatingPointError, ValueError) as e:
        return Refinement(np.array(s0, dtype=np.float64), 0, float("inf"), 0,
                          f"not refined: {type(e).__name__}: {e}"[:200])


def _objective(S) -> float:
    """E = sum over runs of S2 - S1²/S0: the error of the levels S1/S0 on these runs."""
    live = S[0] > 0
    return float(np.sum(np.maximum(S[2, live] - S[1, live] ** 2 / S[0, live], 0.0)))


def _noise(S) -> float:
    """What E's rounding can hide: a few ulps of the S2 it is formed from."""
    return 4 * np.finfo(float).eps * float(np.sum(np.abs(S[2])))


class State(NamedTuple):
    """What the solver knows at the cut points s: the residuals and the pieces of the Jacobian."""

    G: np.ndarray        # (k,) g(s) - (y_left + y_right) / 2: zero at an optimum
    free: np.ndarray     # (k,) bool: points that move (density > 0, not on a jump, both runs non-empty)
    S: np.ndarray        # (3, k+1) moments of the runs
    y: np.ndarray        # (k+1,) levels S1/S0 of the runs
    d: np.ndarray        # (k,) g(s)
    slope: np.ndarray    # (k,) g'(s)
    dens: np.ndarray     # (k,) density at s


def _state(problem, s) -> State:
    S = problem.moments(s)
    y = levels_of(S)
    d, slope, dens, fixed = problem.evaluate(s, S)
    G = d - 0.5 * (y[:-1] + y[1:])
    free = ~fixed & (S[0, :-1] > 0) & (S[0, 1:] > 0)
    return State(G, free, S, y, d, slope, dens)


def _jacobian(st: State):
    """Tridiagonal dG/ds: (lower, diag, upper), identity rows for the fixed points."""
    S0, y, d, dens = st.S[0], st.y, st.d, st.dens
    with np.errstate(invalid="ignore", divide="ignore"):
        # d y_i / d s_i (s_i ends run i) and d y_{i+1} / d s_i (s_i starts run i+1)
        dy_left = np.where(S0[:-1] > 0, dens * (d - y[:-1]) / S0[:-1], 0.0)
        dy_right = np.where(S0[1:] > 0, -dens * (d - y[1:]) / S0[1:], 0.0)
    diag = st.slope - 0.5 * (dy_left + dy_right)
    lower = -0.5 * dy_right[:-1]     # J[i, i-1]: G_i depends on s_{i-1} through y_i
    upper = -0.5 * dy_left[1:]       # J[i, i+1]: G_i depends on s_{i+1} through y_{i+1}
    fixed = ~st.free                 # fixed points: identity rows, no coupling
    diag[fixed] = 1.0
    lower[fixed[1:] | fixed[:-1]] = 0.0
    upper[fixed[:-1] | fixed[1:]] = 0.0
    return lower, diag, upper


def _newton_step(J, G, free):
    """Solve J·Δ = -G on the free points (J = (lower, diag, upper) from _jacobian)."""
    lower, diag, upper = J
    rhs = np.where(free, -G, 0.0)
    step = _tridiagonal_solve(lower, diag, upper, rhs)
    return step if np.all(np.isfinite(step)) else None


def _hessian(J, free, y, dens):
    """(diagonal, off-diagonal) of H = D·J symmetrised, and D (∇E = D·G): the Hessian of E at G = 0."""
    lower, diag, upper = J
    D = np.where(free, 2.0 * dens * (y[1:] - y[:-1]), 0.0)
    return D * diag, 0.5 * (D[:-1] * upper + D[1:] * lower), D


def _escape(problem, s, state: State, err: float):
    """Off a saddle of E: the longest step along H's eigenvector of most negative eigenvalue
    (either sign; from half the closest spacing of the points down by halves) that lowers E
    beyond rounding, as (s, state, max|G|, E); None where H has no negative eigenvalue or no
    such step lowers E. Newton and LM both stop at a saddle: G is ~0 there and E rises or
    stays along their steps, while E falls along negative curvature (GELU level sets at 8 bits
    reach one; see test_gelu_8bit_levelset_stationary_point_is_a_saddle)."""
    free = state.free
    hd, off, _ = _hessian(_jacobian(state), free, state.y, state.dens)
    idx = np.flatnonzero(free)
    H = np.diag(hd[idx])
    sub = off[idx[:-1]] * (np.diff(idx) == 1)          # couplings between neighbouring free points
    H += np.diag(sub, 1) + np.diag(sub, -1)
    w, v = np.linalg.eigh(H)
    if not w[0] < 0:
        return None
    direction = np.zeros(s.size)
    direction[idx] = v[:, 0] / np.max(np.abs(v[:, 0]))
    lo, hi = problem.bounds
    gap = float(np.min(np.diff(np.concatenate([[lo], s, [hi]]))))
    for h in 0.5 * gap * 0.5 ** np.arange(48):
        best = None
        for t in (s + h * direction, s - h * direction):
            if np.all(np.diff(t) > 0) and t[0] > lo and t[-1] < hi:
                st = _state(problem, t)
                et = _objective(st.S)
                if et < err - _noise(st.S) and (best is None or et < best[3]):
                    best = (t, st, _maxabs(st.G, st.free), et)
        if best is not None:
            return best
    return None


def _descent_step(mu, J, G, free, y, dens):
    """Levenberg-Marquardt step on E: (H + mu·|diag H|)·Δ = -∇E.

    ∇E = D·G with D = 2·density·(y_right - y_left), and H ≈ D·J, symmetrised (it is the
    Hessian of E where G = 0). A large mu turns it into scaled gradient descent."""
    hd, off, D = _hessian(J, free, y, dens)
    hd = hd + mu * np.abs(hd) + 1e-12 * np.max(np.abs(hd))
    hd[~free] = 1.0
    step = _tridiagonal_solve(off, hd, off, -D * G)
    return step if np.all(np.isfinite(step)) else None


@kernel
def _tridiagonal_solve(lower, diag, upper, rhs):
    """Thomas algorithm for J x = rhs, J with sub-, main and super-diagonals (k-1, k, k-1).

    A zero pivot (J singular without pivoting) gives all NaN: the caller drops the step."""
    k = diag.size
    c = np.empty(k)
    x = np.empty(k)
    den = diag[0]
    if den == 0.0:
        x[:] = np.nan
        return x
    c[0] = upper[0] / den if k > 1 else 0.0
    x[0] = rhs[0] / den
    for i in range(1, k):
        den = diag[i] - lower[i - 1] * c[i - 1]
        if den == 0.0:
            x[:] = np.nan
            return x
        c[i] = upper[i] / den if i < k - 1 else 0.0
        x[i] = (rhs[i] - lower[i - 1] * x[i - 1]) / den
    for i in range(k - 2, -1, -1):
        x[i] -= c[i] * x[i + 1]
    return x


def _maxabs(G, mask) -> float:
    return float(np.max(np.abs(G[mask]))) if mask.any() else 0.0
