"""JAX runtime, the custom VJP: exact forward with jax's own op, b-bit residual, table backward.

forward:  y = f(x) (jax.nn);  residual = pack(codes[interval(x)], b)   (b * ceil(n/8) bytes)
backward: grad_x = (g.astype(float32) * levels[code]).astype(x.dtype)

interval(x) = number of boundaries <= x, compared exactly (float32/bfloat16/float16 x against
the boundaries rounded up to float32, float64 x against the float64 boundaries), in integer
order keys of the float bits, so subnormals count even where XLA flushes them in float compares;
-0.0 equals 0.0; NaN and +inf fall in the last interval, -inf in the first. The table is a constant of
the traced function, so the code is the only residual (plus an empty anchor, below).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..activations import REGISTRY
from ..table import Table
from .packing import pack_codes, unpack_codes
from .tables import as_table, table_constants

__all__ = ["fewbit_activation", "JAX_FORWARD", "jax_activation", "encode"]


# registry name -> f(x, **params) with jax's own ops
JAX_FORWARD = {spec.name: functools.partial(spec.jax_forward, jax)
               for spec in REGISTRY.values() if spec.jax_forward is not None}

_DOUBLE_BACKWARD = (
    "second-order differentiation through a few-bit activation ({name}) is not supported: only a "
    "b-bit code of x was kept, so the f''(x) term of the second derivative cannot be computed "
    "(the table's q is piecewise constant). For gradient penalties, Hessian-vector products or "
    "jax.hessian, use the plain jax.nn activation there.")


def jax_activation(name: str, x, params: dict | None = None):
    """f(x) with jax's op for a registry activation (no few-bit backward)."""
    return JAX_FORWARD[name](x, **(params or {}))


def _order_key(bits, mask):
    # float bits -> integer with the float order, -0.0 and 0.0 both 0: compares in integers
    # are exact even where XLA flushes subnormals to zero in float compares (CPU, GPU)
    return jnp.where(bits < 0, -(bits & mask), bits)


def _float_keys(flat):
    """(n,) int32 (int64 for float64) order keys of x, taken from its bits, never by a float op."""
    if flat.dtype == jnp.float64:
        return _order_key(jax.lax.bitcast_convert_type(flat, jnp.int64), 0x7FFFFFFFFFFFFFFF)
    if flat.dtype == jnp.bfloat16:   # bfloat16 is the top half of a float32
        bits32 = jax.lax.bitcast_convert_type(flat, jnp.uint16).astype(jnp.uint32) << 16
    else:                            # float16 -> float32 is exact (its subnormals are normal there)
        bits32 = jax.lax.bitcast_convert_type(flat.astype(jnp.float32), jnp.uint32)
    return _order_key(jax.lax.bitcast_convert_type(bits32, jnp.int32), 0x7FFFFFFF)


def _bound_keys(c, wide: bool) -> np.ndarray:
    # the same keys for the boundaries, rounded up to float32 unless x is float64 (numpy, exact)
    bits = c.bounds64.view(np.int64) if wide else c.bounds32.view(np.int32)
    mask = 0x7FFFFFFFFFFFFFFF if wide else 0x7FFFFFFF
    return np.where(bits < 0, -(bits & mask), bits)


def encode(x, table: Table):
    """(n,) uint8 code of each element of x (row-major), per the table's intervals."""
    c = table_constants(table)
    flat = x.reshape(-1)
    keys = _float_keys(flat)
    bounds = jnp.asarray(_bound_keys(c, flat.dtype == jnp.float64))
    interval = jnp.searchsorted(bounds, keys, side="right", method="scan")   # #(b <= x)
    interval = jnp.where(jnp.isnan(flat), bounds.shape[0], interval)         # NaN: last interval
    return jnp.asarray(c.codes)[interval]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _refuse_second_order(grad_x, anchor, name):
    return grad_x


def _refuse_second_order_jvp(name, primals, tangents):
    # the anchor is an empty array computed from x: a tangent there means x is differentiated again
    if not isinstance(tangents[1], jax.custom_derivatives.SymbolicZero):
        raise NotImplementedError(_DOUBLE_BACKWARD.format(name=name))
    grad_x, _ = primals
    return grad_x, tangents[0]


_refuse_second_order.defjvp(_refuse_second_order_jvp, symbolic_zeros=True)


@functools.lru_cache(maxsize=256)
def _function(key):
    """The custom_vjp function of one table (key: the table's id, held alive by table_constants)."""
    c = table_constants(key[1])
    forward = functools.partial(JAX_FORWARD[c.name], **c.params)

    @jax.custom_vjp
    def f(x):
        return forward(x)

    def fwd(x):
        anchor = x.reshape(-1)[:0]                                   # (0,): no bytes
        return forward(x), (pack_codes(encode(x, c.table), c.bits), anchor)

    def bwd(res, g):
        packed, anchor = res
        codes = unpack_codes(packed, c.bits, g.size)                 # (n,) uint8
        scale = jnp.asarray(c.levels)[codes].reshape(g.shape)        # float32
        grad_x = (g.astype(jnp.float32) * scale).astype(g.dtype)
        return (_refuse_second_order(grad_x, anchor, c.name),)

    f.defvjp(fwd, bwd)
    return f


class _Key(tuple):
    """(id, table): hashed and compared by the table's identity (a Table is not hashable)."""

    def __hash__(self):
        return hash(self[0])

    def __eq__(self, other):
        return isinstance(other, _Key) and self[1] is other[1]


def fewbit_activation(x, table, *, bits: int | None = None):
    """Apply the table's activation with a few-bit backward (a jax.custom_vjp).

    Parameters
    ----------
    x : jax.Array
        float32, bfloat16, float16 (or float64 under jax_enable_x64) input of any shape.
    table : Table, path or str
        A Table, a table file (any format fewbit-design reads), or a registry name for the
        shipped table with `bits` bits (default 3).
    bits : int, optional
        With a name: the code width; with a Table or file: must agree with it.

    Returns
    -------
    jax.Array
        f(x) computed by jax's op. Under jax.vjp / jax.grad the residual is the packed code,
        bits * ceil(n / 8) uint8 bytes (and an empty anchor); backward returns
        g * levels[code] in float32, cast to x's dtype. Second-order differentiation raises.
    """
    table = as_table(table, bits)
    if table.activation not in JAX_FORWARD:
        raise ValueError(f"activation {table.activation!r} has no jax implementation in fewbit_design.jax")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"fewbit activations take a floating array, got {x.dtype}")
    return _function(_Key((id(table), table)))(x)
