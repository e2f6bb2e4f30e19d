"""JAX runtime for fewbit-design tables (optional extra ``jax``): a jax.custom_vjp that keeps
only a b-bit code of x, flax modules generated from the registry, and the bit-plane packing.

Built from the table-format docs alone; the codes are the torch runtime's byte for byte.
"""

from .functional import JAX_FORWARD, encode, fewbit_activation, jax_activation
from .packing import pack_codes, packed_nbytes, unpack_codes
from .tables import default_table, load_table, resolve_table

__all__ = ["fewbit_activation", "jax_activation", "encode", "JAX_FORWARD", "pack_codes", "unpack_codes",
           "packed_nbytes", "default_table", "load_table", "resolve_table"]
