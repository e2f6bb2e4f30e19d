"""Special functions (for the input step's distributions): erfc, the regularised incomplete beta function
(Student-t tails), log-beta. numba kernels where they run per element, numpy elsewhere."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._jit import kernel


def _elementwise(kern, x, *scalars):
    """kern((n,) float64, *scalars) -> (n,) applied to x of any shape; a scalar for a scalar."""
    a = np.asarray(x, dtype=np.float64)
    out = kern(np.ascontiguousarray(a).reshape(-1), *scalars).reshape(a.shape)
    return out if out.ndim else out[()]


def ndtr(x):
    """Φ(x) = erfc(-x/√2)/2 elementwise: no cancellation in either tail."""
    return _elementwise(_ndtr_kernel, x)


@kernel
def _ndtr_kernel(x):
    out = np.empty_like(x)   # (n,)
    for i in range(x.size):
        out[i] = 0.5 * math.erfc(-x[i] * 0.7071067811865476)
    return out


def _erfc(x):
    """math.erfc elementwise (cdf/sf are only needed off the hot path: quantiles, checks)."""
    return np.asarray(np.frompyfunc(math.erfc, 1, 1)(x), dtype=np.float64)


@njit(cache=True)
def _beta_cf(a, b, x):
    """Continued fraction of I_x(a, b) (modified Lentz); converges fast for x < (a+1)/(a+b+2)."""
    tiny = 1e-300
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (tiny if abs(d) < tiny else d)
    h = d
    for m in range(1, 1000):
        # the two partial numerators of step m, as ratios so that huge a cannot overflow
        for aa in (m * (b - m) / (a + 2 * m - 1.0) / (a + 2 * m) * x,
                   -(a + m) / (a + 2 * m) * ((a + b + m) / (a + 2 * m + 1.0)) * x):
            d = 1.0 + aa * d
            d = 1.0 / (tiny if abs(d) < tiny else d)
            c = 1.0 + aa / c
            c = tiny if abs(c) < tiny else c
            h *= d * c
        if abs(d * c - 1.0) < 3e-16:
            break
    return h


# Taylor coefficients of g(v) = sqrt(v / (1 - e^-v)); tests/test_distributions.py derives them
# again from exact rationals (they are literals here because that takes 0.2 s at import).
_G_COEFS = np.array([
    1.0, 0.25, 0.010416666666666666, -0.0026041666666666665, -9.765625e-05, 5.154079861111111e-05,
    1.2756024718915344e-06, -1.110097087880291e-06, -1.9670584004181822e-08, 2.4836319884715677e-08, 3.3966619960386745e-10, -5.690071833942187e-10,
    -6.3372301556671304e-12, 1.3251315155878903e-11, 1.2468358960996804e-13, -3.1229993780631886e-13, -2.546988626356897e-15, 7.426702350918158e-15,
    5.3488858900327365e-17, -1.778579261088922e-16, -1.1473989542270475e-18, 4.283476654726128e-18, 2.5030337435180244e-20, -1.0363862910759544e-19,
    -5.535498379178477e-22, 2.517185267159961e-21, 1.2381595956438125e-23, -6.133662439105411e-23, -2.7961370314294057e-25, 1.498765280596104e-24,
    6.366526460482833e-27, -3.671087546930156e-26, -1.4599270865193941e-28, 9.010976669173599e-28, 3.368660192590825e-30, -2.2159341408901155e-29,
    -7.815602857789675e-32, 5.458327666294986e-31, 1.8221419484278716e-33, -1.3464936033422798e-32, -4.266714665748715e-35, 3.3260325260155413e-34,
    1.00301501906604e-36, -8.22566449585671e-36, -2.3662552691142336e-38, 2.036526840751615e-37, 5.600362123454947e-40, -5.047106964769252e-39,
])


@njit(cache=True)
def _t_tail_large_df(a, lg, log_beta):
    """I_x(a, 1/2) for a >= 10 and lg = -log x <= 2, with g(v) = sqrt(v / (1 - e^-v)):
    B I = int_lg^inf e^(-a v) v^(-1/2) g(v) dv = sum_k g_k Gamma(k + 1/2, a lg) / a^(k + 1/2)."""
    z = a * lg
    gk = math.sqrt(math.pi / a) * math.erfc(math.sqrt(z))   # Gamma(1/2, z) / a^(1/2)
    ek = math.sqrt(lg) * math.exp(-z) / a                   # lg^(k-1/2) e^-z / a, k = 1
    total = _G_COEFS[0] * gk
    for k in range(1, _G_COEFS.size):
        gk = (k - 0.5) / a * gk + ek                         # upward recurrence, all terms > 0
        ek *= lg
        term = _G_COEFS[k] * gk
        total += term
        if abs(term) < 1e-17 * total:
            break
    return total * math.exp(-log_beta)


def _t_lower_tail(z, df: float, log_beta: float):
    """_t_lower_tail_scalar elementwise over z."""
    return _elementwise(_t_lower_tail_kernel, z, float(df), float(log_beta))


@kernel
def _t_lower_tail_kernel(z, df, log_beta):
    out = np.empty_like(z)   # (n,)
    for i in range(z.size):
        out[i] = _t_lower_tail_scalar(z[i], df, log_beta)
    return out


@njit(cache=True)
def _t_lower_tail_scalar(z, df, log_beta):
    """P(T <= -|z|) = I_x(df/2, 1/2) / 2 with x = df / (df + z^2), T Student's t with df dof."""
    az = abs(z)
    if az != az:
        return az
    if az == 0.0:
        return 0.5
    if az == math.inf:
        return 0.0
    # log x and log y = log(1 - x) without cancellation or overflow; a * log_x can be huge
    r = az * az / df
    if r < math.inf:
        log_x = -math.log1p(r)
        log_y = math.log(r) + log_x if r <= 1.0 else -math.log1p(1.0 / r)
    else:
        log_s = math.log(df) - 2.0 * math.log(az)   # s = df / z^2, tiny
        log_y = -math.log1p(math.exp(log_s))
        log_x = log_s + log_y
    a, b = 0.5 * df, 0.5
    if a >= 10.0 and log_x >= -2.0:   # x near 1, a large: the fraction's rounding reaches 1e-13
        return 0.5 * _t_tail_large_df(a, -log_x, log_beta)
    x = math.exp(log_x)
    front = math.exp(a * log_x + b * log_y - log_beta)
    if x < (a + 1.0) / (a + b + 2.0):
        return 0.5 * front * _beta_cf(a, b, x) / a
    return 0.5 * (1.0 - front * _beta_cf(b, a, math.exp(log_y)) / b)


def _stirling_tail(z: float) -> float:
    """lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2) for z >= 10, to double precision."""
    coefs = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156, -3617 / 122400)
    return sum(c * (1.0 / z) ** (2 * k + 1) for k, c in enumerate(coefs))   # underflows, never overflows


def _log_beta(a: float, b: float) -> float:
    """log B(a, b); for a large argument the two big lgammas are differenced analytically."""
    lo, hi = min(a, b), max(a, b)
    if hi < 10.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(hi + lo) - lgamma(hi) by Stirling, free of the cancellation of ~hi*log(hi)
    diff = (hi - 0.5) * math.log1p(lo / hi) + lo * math.log(hi + lo) - lo
    return math.lgamma(lo) - diff - _stirling_tail(hi + lo) + _stirling_tail(hi)
