"""Slow, obviously correct oracles for the fast paths."""

import itertools

import numpy as np

from fewbit_design.activations import get_activation
from fewbit_design.distributions import parse_distribution


def run_cost(v, w, a, b):
    """Weighted variance (times mass) of values v[a:b] with weights w[a:b]."""
    ww, vv = w[a:b], v[a:b]
    if ww.sum() <= 0:
        return 0.0
    m = np.sum(ww * vv) / ww.sum()
    return float(np.sum(ww * (vv - m) ** 2))


def brute_force_segmentation(v, w, k):
    """Minimum total cost over every placement of k-1 cuts (empty runs allowed)."""
    n = len(v)
    best = np.inf
    for cuts in itertools.combinations_with_replacement(range(n + 1), k - 1):
        c = (0, *cuts, n)
        best = min(best, sum(run_cost(v, w, a, b) for a, b in zip(c[:-1], c[1:])))
    return best


def brute_force_levelset(v, w, k):
    """Minimum cost over every assignment of the points to at most k groups."""
    n = len(v)
    best = np.inf
    for labels in itertools.product(range(k), repeat=n):
        lab = np.asarray(labels)
        cost = 0.0
        for g in range(k):
            m = lab == g
            if m.any():
                cost += run_cost(v[m], w[m], 0, int(m.sum()))
        best = min(best, cost)
    return best


def prefix(v, w):
    P = np.zeros((3, len(v) + 1))
    np.cumsum(np.stack([w, w * v, w * v * v]), axis=1, out=P[:, 1:])
    return P


def midpoint_residuals(t):
    """G = f'(s) − (level left + level right)/2 at every boundary with w(s) > 0, off the jumps of f'."""
    act = get_activation(t.activation, t.params)
    dist = parse_distribution(f"{t.distribution}:{','.join(repr(float(v)) for v in t.dist_params.values())}")
    s = t.boundaries
    y = t.levels[t.codes]
    keep = dist.pdf(s) > 0
    for j in act.jumps:
        keep &= np.abs(s - j) > 1e-12 * max(1.0, abs(j))
    return (act.df(s) - 0.5 * (y[:-1] + y[1:]))[keep]
