"""Input step, the numpy pieces the registry (activations.py) builds f and f' from: float64,
elementwise, stable (no overflow and no NaN for any finite x). It names no activation: which
piece is which activation is the registry's to say.
"""

from __future__ import annotations

import math

import numpy as np

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_GELU_TANH_A, _GELU_TANH_B = math.sqrt(2.0 / math.pi), 0.044715


def ndtr(x):
    """Φ(x) elementwise; numba (in special.py) is imported when it is first evaluated."""
    from .special import ndtr

    return ndtr(x)


def clip40(x):
    # np.clip's value, at a third of its call overhead (df runs ~150 times per design)
    return np.minimum(np.maximum(x, -40.0), 40.0)


def normal_pdf(x):
    x = clip40(x)  # φ(40) underflows to 0 anyway; avoids x² overflow
    return np.exp(-0.5 * x * x) * 0.3989422804014327


def sigmoid(x):
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def sigmoid_prime(x):
    e = np.exp(-np.abs(x))  # σ(x)σ(-x) = e / (1 + e)², symmetric in x
    return e / (1.0 + e) ** 2


def softplus(x):
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def sech2(x):
    e = np.exp(-2.0 * np.abs(x))  # 1 − tanh² x without cancellation
    return 4.0 * e / (1.0 + e) ** 2


def _gelu_tanh_2u(x):
    x = np.clip(x, -1e3, 1e3)  # σ(2u) saturates long before; avoids x³ overflow
    return 2.0 * _GELU_TANH_A * (x + _GELU_TANH_B * x**3), x


def gelu_tanh_f(x):
    return x * sigmoid(_gelu_tanh_2u(x)[0])


def gelu_tanh_df(x):
    # f = x·σ(2u) since (1 + tanh u)/2 = σ(2u); f' = σ(2u) + 2x·u'·σ(2u)σ(−2u)
    two_u, x = _gelu_tanh_2u(x)
    two_du = 2.0 * _GELU_TANH_A * (1.0 + 3.0 * _GELU_TANH_B * x * x)
    return sigmoid(two_u) + x * two_du * sigmoid_prime(two_u)


def _mish_parts(x):
    # t = tanh(softplus x) as a ratio of exponentials in e = exp(−|x|); returns t and 1 − t
    e = np.exp(-np.abs(x))
    pos = x >= 0
    den = np.where(pos, 1.0 + 2.0 * e + 2.0 * e * e, e * e + 2.0 * e + 2.0)
    t = np.where(pos, 1.0 + 2.0 * e, e * (e + 2.0)) / den
    return t, np.where(pos, 2.0 * e * e, 2.0) / den


def mish_f(x):
    return x * _mish_parts(x)[0]


def mish_df(x):
    t, one_minus_t = _mish_parts(x)
    return t + x * (one_minus_t * (1.0 + t)) * sigmoid(x)


def softplus_f(x, beta, threshold):
    bx = beta * x  # torch: linear where beta·x > threshold
    return np.where(bx > threshold, x, softplus(bx) / beta)


def softplus_df(x, beta, threshold):
    bx = beta * x
    return np.where(bx > threshold, 1.0, sigmoid(bx))


def elu_f(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def elu_df(x, alpha):
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))  # f'(0) = alpha (torch)


def hardswish_df(x):
    return np.where(x >= 3.0, 1.0, np.where(x > -3.0, x / 3.0 + 0.5, 0.0))  # torch: 0 at −3, 1 at 3


def x_sigmoid_kx(x, k):
    return x * sigmoid(k * x)


def x_sigmoid_kx_df(x, k):
    return sigmoid(k * x) + k * x * sigmoid_prime(k * x)
