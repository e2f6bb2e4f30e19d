"""The DP kernels against brute force and against each other."""

import numpy as np
import pytest

from fewbit_design.dp import kmeans_segment, segment, segment_cost

from naive import brute_force_levelset, brute_force_segmentation, prefix


@pytest.mark.parametrize("seed", range(40))
def test_segment_dp_equals_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 9)), int(rng.integers(1, 5))
    v = rng.normal(size=n)                      # not sorted: f' need not be monotone
    w = rng.random(n) * (rng.random(n) > 0.2)   # some weightless cells
    P = prefix(v, w)
    cuts = segment(P, k)
    assert cuts[0] == 0 and cuts[-1] == n and np.all(np.diff(cuts) >= 0)
    assert segment_cost(P, cuts) == pytest.approx(brute_force_segmentation(v, w, k), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("seed", range(25))
def test_value_space_dp_equals_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n, k = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    v = np.sort(rng.normal(size=n))
    w = rng.random(n)
    P = prefix(v, w)
    cuts = kmeans_segment(P, k)
    assert segment_cost(P, cuts) == pytest.approx(brute_force_levelset(v, w, k), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("seed", range(30))
def test_value_space_dp_equals_quadratic_dp(seed):
    rng = np.random.default_rng(200 + seed)
    n, k = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    v = np.sort(rng.standard_t(2, size=n))
    w = rng.random(n) * (rng.random(n) > 0.1)
    P = prefix(v, w)
    fast, slow = segment_cost(P, kmeans_segment(P, k)), segment_cost(P, segment(P, k))
    assert fast == pytest.approx(slow, rel=1e-11, abs=1e-13)


def test_quadratic_dp_is_not_fooled_by_non_monotone_values():
    # a bump: the optimal 2-run cut isolates the middle, which a Monge shortcut would miss
    v = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    w = np.ones(6)
    assert segment_cost(prefix(v, w), segment(prefix(v, w), 3)) == 0.0
    assert segment_cost(prefix(v, w), segment(prefix(v, w), 2)) > 0.0
