"""Output tables, DP step: the best piecewise polynomial g(t) over ordered cells.

For data (t_i, b_i = f'(x_i), w_i) on the quadrature nodes of n ordered cells, the cost of a
run of cells [a, b) is the weighted least-squares residual of a degree-d polynomial in
u = (2t - t_lo - t_hi)/(t_hi - t_lo) ∈ [-1, 1] (t_lo, t_hi: the run's ends):

    cost(a, b) = min_c Σ_i w_i (b_i - Σ_k c_k u_i^k)²  =  R[d+1, d+1]²

where R is the triangular factor of the Householder QR of the rows √w_i·[1, u_i, …, u_i^d, b_i].
Each run is factored anew in its own u (no prefix sums of moments: their normal equations
square the condition number, and the residuals here are 1e-12 of the total). The DP over the
cost matrix is the exact segmentation of contiguous.py's kind: O(k·n²) after O(n²) factorisations.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Run(NamedTuple):
    """The nodes of the cells in t order: t, b, w (flat arrays) and starts (n+1,) into them;
    ends (n+1,) the t of the cell edges (ascending)."""

    t: np.ndarray
    b: np.ndarray
    w: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _rows(run: Run, a: int, b: int, degree: int):
    """(√w·V, √w·b) of the nodes in cells [a, b), V the Vandermonde in the run's u."""
    i, j = run.starts[a], run.starts[b]
    lo, hi = run.ends[a], run.ends[b]
    t = run.t[i:j]
    u = (2.0 * t - (lo + hi)) / (hi - lo) if hi > lo else np.zeros_like(t)
    s = np.sqrt(run.w[i:j])
    return np.vander(u, degree + 1, increasing=True) * s[:, None], run.b[i:j] * s


def run_cost(run: Run, a: int, b: int, degree: int) -> float:
    """The least-squares residual of cells [a, b) (module docstring), by QR; 0 when exact."""
    A, r = _rows(run, a, b, degree)
    if A.shape[0] <= degree + 1:
        return 0.0
    R = np.linalg.qr(np.column_stack([A, r]), mode="r")
    return float(R[degree + 1, degree + 1] ** 2)


def group_factors(run: Run, degree: int) -> np.ndarray:
    """(n, d+2, d+2) triangular factors R_g of each cell's rows √w·[V(u_g) | b], u_g the cell's own u."""
    n = run.starts.size - 1
    out = np.zeros((n, degree + 2, degree + 2))
    for g in range(n):
        A, r = _rows(run, g, g + 1, degree)
        R = np.linalg.qr(np.column_stack([A, r]), mode="r")
        out[g, :R.shape[0]] = R
    return out


def _change_of_variable(alpha: np.ndarray, beta: np.ndarray, degree: int) -> np.ndarray:
    """(…, d+1, d+1) T with V(alpha·u + beta) = V(u)·T: T[j, k] = C(k, j)·alpha^j·beta^(k-j), j ≤ k."""
    k = np.arange(degree + 1)
    binom = np.array([[math.comb(int(c), int(r)) for c in k] for r in k], dtype=np.float64)  # [j, k]
    e = k[None, :] - k[:, None]                                                               # k - j
    a = alpha[..., None, None] ** k[:, None]
    b = np.where(e >= 0, beta[..., None, None] ** np.maximum(e, 0), 0.0)
    return binom * a * b


def cost_matrix(run: Run, degree: int) -> np.ndarray:
    """C[a, b] = the least-squares residual of cells [a, b) for a < b (0 on the diagonal: an empty run).

    Each cell's rows are compressed once to R_g in its own u; a run's rows are the stacked
    R_g·diag(T_g, 1) (exact: the same Gram matrix), with |alpha|, |beta| ≤ 1 so T's entries stay
    below 2^d; runs of one length are factored in one batched QR.
    """
    n = run.starts.size - 1
    R = group_factors(run, degree)
    C = np.full((n + 1, n + 1), np.inf)
    np.fill_diagonal(C, 0.0)
    e = run.ends
    for length in range(1, n + 1):
        a = np.arange(n - length + 1)
        members = a[:, None] + np.arange(length)[None, :]              # (runs, length)
        lo, hi = e[a][:, None], e[a + length][:, None]
        width = np.where(hi > lo, hi - lo, 1.0)
        alpha = (e[members + 1] - e[members]) / width
        beta = np.where(hi > lo, (e[members] + e[members + 1] - lo - hi) / width, 0.0)
        T = _change_of_variable(alpha, beta, degree)                   # (runs, length, d+1, d+1)
        rows = R[members].copy()                                       # (runs, length, d+2, d+2)
        rows[..., :degree + 1] = rows[..., :degree + 1] @ T
        stack = rows.reshape(a.size, length * (degree + 2), degree + 2)
        F = np.linalg.qr(stack, mode="r")
        C[a, a + length] = F[:, degree + 1, degree + 1] ** 2
    return C


def segment_matrix(C: np.ndarray, k: int) -> np.ndarray:
    """Cuts (0 = c_0 ≤ … ≤ c_k = n) minimising Σ C[c_j, c_j+1] over at most k runs; ties to the smallest cut."""
    n = C.shape[0] - 1
    best = C[0].copy()                              # one run [0, b)
    arg = np.zeros((k, n + 1), dtype=np.int64)
    for layer in range(1, k):
        total = best[:, None] + C                   # (cut a, end b)
        arg[layer] = np.argmin(total, axis=0)
        best = total[arg[layer], np.arange(n + 1)]
    cuts = [n]
    for layer in range(k - 1, 0, -1):
        cuts.append(int(arg[layer, cuts[-1]]))
    cuts.append(0)
    return np.array(cuts[::-1], dtype=np.int64)


def fit(run: Run, a: int, b: int, degree: int) -> np.ndarray:
    """Coefficients (degree+1,) in u, ascending powers, of the least-squares polynomial of cells [a, b)."""
    A, r = _rows(run, a, b, degree)
    if A.shape[0] == 0:
        return np.zeros(degree + 1)
    return np.linalg.lstsq(A, r, rcond=None)[0]


def design_pieces(run: Run, pieces: int, degree: int):
    """(cuts into the run's cells (m+1,), coefficients (m, degree+1), cost) of the best ≤ `pieces` polynomials."""
    C = cost_matrix(run, degree)
    cuts = np.unique(segment_matrix(C, pieces))
    coef = np.array([fit(run, a, b, degree) for a, b in zip(cuts[:-1], cuts[1:])])
    cost = float(sum(C[a, b] for a, b in zip(cuts[:-1], cuts[1:])))
    return cuts, coef, cost


def horner(coef: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Σ_k coef[..., k]·u^k by Horner's rule; coef (…, d+1) broadcast against u."""
    out = np.zeros(np.broadcast_shapes(coef.shape[:-1], np.shape(u)))
    for k in range(coef.shape[-1] - 1, -1, -1):
        out = out * u + coef[..., k]
    return out


def evaluate_pieces(edges: np.ndarray, coef: np.ndarray, t: np.ndarray) -> np.ndarray:
    """g(t): the piece holding t (edges ascending), its u clipped to [-1, 1] (constant beyond the ends)."""
    t = np.asarray(t, dtype=np.float64)
    j = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, coef.shape[0] - 1)
    lo, hi = edges[j], edges[j + 1]
    width = np.where(hi > lo, hi - lo, 1.0)
    u = np.clip((2.0 * t - (lo + hi)) / width, -1.0, 1.0)
    return horner(coef[j], u)
