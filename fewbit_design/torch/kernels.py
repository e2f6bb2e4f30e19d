"""Runtime step, fused Triton kernels: activation + coding + bit-plane packing forward, unpack + lookup backward.

forward:  y = f(x) (optional);  code = code_map[#{bounds32 <= x}];  packed planes (packing.py layout)
          (16-bit x at bits >= config.lut_min_bits: code = lut[bit pattern of x], the same codes;
          float32 x at bits >= config.lut32_min_bits: the count starts from a table indexed by the top
          16 bits of x and compares x only with the bounds inside that prefix's range)
backward: grad_in = grad_out * levels[code]   (fp32 math, stored in grad_out's dtype)

Each program owns BYTES consecutive bytes of every plane, i.e. the BLOCK = 8 * BYTES elements
8k .. 8k + BLOCK - 1, held as a (BYTES, 8) tile: row r is byte r of each plane, column j is
bit j (the kernel bodies are in triton_kernels.py). The bytes equal ``pack_codes(codes, bits)`` exactly; the plain torch path (reference.py) is
the oracle in the tests.

Inputs are float16, bfloat16 or float32 (fp16/bf16 -> fp32 is exact, so comparing against the
float32 bounds, rounded up, gives the table's interval); float64 stays on the torch path.
f(x) follows torch's CUDA formulas; `fused_y_exact` checks, once per activation, dtype and
device, that it is bit for bit torch's. On CPU the kernels run only under TRITON_INTERPRET=1
(tests), with numpy's math.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import torch

from ..activations import REGISTRY
from .lut import bracket, code_lut, padded
from ..table import check_bits
from .packing import packed_nbytes
from .reference import TORCH_FORWARD

from .triton_kernels import _fewbit_backward_kernel, _fewbit_forward_kernel, triton

__all__ = ["fused_forward", "fused_backward", "fused_y_exact", "triton_available", "FUSED_ACTIVATIONS",
           "KernelConfig", "DEFAULT_CONFIG"]

# activation name -> ACT id of the forward kernel (the registry's `fused`; 0: y is computed by torch)
FUSED_ACTIVATIONS = {spec.name: spec.fused for spec in REGISTRY.values() if spec.fused}
# ACT ids whose formula calls libdevice (erf, exp, tanh, div_rn)
_LIBDEVICE_ACTS = (2, 3, 4, 5, 6)
# the one float parameter an activation passes to the kernel (the registry's `fused_param`)
_ACT_PARAM = {spec.name: spec.fused_param for spec in REGISTRY.values() if spec.fused_param}

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LUT_DTYPES = (torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """How the fused kernels launch and find codes: a value passed in, never a global to assign.

    The defaults (DEFAULT_CONFIG) are measured on an H200; python -m benchmarks.gpu_kernels --tune times
    others. A config changes speed only: every choice gives the same bytes and gradients.

    Attributes
    ----------
    lut_min_bits : float16 / bfloat16 x from this many bits: one gather from the 65536-entry
        table of codes instead of the search. H200, bf16 GELU, 2^28, search / LUT forward:
        496 / 563 us at 1 bit, 562 / 564 at 2, 620 / 536 at 3, 1026 / 571 at 8.
    lut32_min_bits : float32 x from this many bits: one gather from the prefix table
        (lut.bracket), then compares with the rare bounds inside the prefix, instead of the
        search. H200, fp32 GELU, 2^28, search / table forward: 577 / 794 us at 1 bit, 718 / 840
        at 4, 873 / 947 at 6, 946 / 880 at 7, 1171 / 888 at 8 (native 518): the 128 KiB table
        costs more than a short search. 9 turns a table off.
    block_bytes, num_warps : on the GPU, bytes of each plane per program (8 * block_bytes
        elements: 1024 measured best on an H200) and warps per program.
    linear_max : up to this many bounds, compare with each; else binary search.
    interp_max_bytes : the interpreter is fastest with few, large programs: bytes per program
        there, at most.
    """

    lut_min_bits: int = 3
    lut32_min_bits: int = 7
    block_bytes: int = 128
    num_warps: int = 4
    linear_max: int = 1
    interp_max_bytes: int = 1024

    def __post_init__(self):
        for name in ("lut_min_bits", "lut32_min_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 9:
                raise ValueError(f"KernelConfig.{name} must be an integer in 1..9 (9: never), got {v!r}")
        for name in ("block_bytes", "num_warps", "interp_max_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v & (v - 1):
                raise ValueError(f"KernelConfig.{name} must be a power of two, got {v!r}")
        if isinstance(self.linear_max, bool) or not isinstance(self.linear_max, int) or self.linear_max < 0:
            raise ValueError(f"KernelConfig.linear_max must be an integer >= 0, got {self.linear_max!r}")


DEFAULT_CONFIG = KernelConfig()


# ------------------------------------------------------------------------------- launchers

def interpreted() -> bool:
    """Whether the kernels run in the Triton interpreter (TRITON_INTERPRET=1 when they were decorated)."""
    return triton is not None and type(_fewbit_forward_kernel).__name__ == "InterpretedFunction"


def triton_available(device) -> bool:
    """Whether the fused kernels can run for tensors on `device`.

    True for CUDA devices when Triton imports, and for CPU only under TRITON_INTERPRET=1
    (the interpreter: slow, for tests).
    """
    if triton is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and interpreted()


def _options(act_id: int, config: KernelConfig) -> dict:
    """Launch options beside the grid: num_warps, and on the GPU the float semantics of torch's
    CUDA build (nvcc's defaults): fma contraction on, no flush-to-zero inside libdevice, and the
    libdevice of the toolkit torch was built with where it is installed."""
    if interpreted():
        return {"INTERP": True}
    opts = {"INTERP": False, "num_warps": config.num_warps, "enable_fp_fusion": True}
    if "enable_reflect_ftz" in _cuda_option_names():
        opts["enable_reflect_ftz"] = False
    lib = torch_libdevice() if act_id in _LIBDEVICE_ACTS else None
    if lib is not None:
        opts["extern_libs"] = {"libdevice": lib}
    return opts


@functools.lru_cache(maxsize=None)
def _cuda_option_names() -> frozenset:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return frozenset()
    return frozenset(f.name for f in dataclasses.fields(CUDAOptions))


@functools.lru_cache(maxsize=None)
def torch_libdevice() -> str | None:
    """libdevice.10.bc of the CUDA toolkit torch was built with, if installed here.

    Triton bundles its own libdevice, maybe of another CUDA version: on an H200 with torch
    2.11+cu130 and Triton 3.6, its erff differed from torch's by an ulp on ~7 % of inputs, and
    linking the toolkit's 13.0 libdevice made GELU bit for bit torch's. TRITON_LIBDEVICE_PATH,
    when set, is left to Triton.
    """
    want = torch.version.cuda
    if not want or os.environ.get("TRITON_LIBDEVICE_PATH"):
        return None
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), f"/usr/local/cuda-{want}",
             f"/usr/local/cuda-{want.split('.')[0]}", "/usr/local/cuda"]
    for root in filter(None, roots):
        path = os.path.join(root, "nvvm", "libdevice", "libdevice.10.bc")
        try:  # the toolkit's major.minor from version.json, else from the folder's name
            with open(os.path.join(root, "version.json"), encoding="utf-8") as fh:
                version = ".".join(json.load(fh)["cuda"]["version"].split(".")[:2])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            version = os.path.basename(os.path.realpath(root)).removeprefix("cuda-")
        if version == want and os.path.isfile(path):
            return path
    return None


def _grid(n: int, config: KernelConfig) -> tuple[int, bool, bool, tuple]:
    """BYTES per program (8 * BYTES elements), EVEN (no tail), I64 (int64 offsets), grid."""
    nbytes = (n + 7) // 8
    if interpreted():
        block = min(triton.next_power_of_2(nbytes), config.interp_max_bytes)
    else:
        block = config.block_bytes
    return block, n % (8 * block) == 0, n + 8 * block >= 2 ** 31, (triton.cdiv(nbytes, block),)


def _check_tensor(t: torch.Tensor, what: str) -> None:
    if t.dtype not in _FUSED_DTYPES:
        raise TypeError(f"{what} must be float16, bfloat16 or float32 for the fused kernels, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{what} must be contiguous for the fused kernels")


def fused_forward(x: torch.Tensor, bounds32: torch.Tensor, code_map: torch.Tensor | None, bits: int,
                  act: str | None = None, params: dict | None = None, *,
                  config: KernelConfig = DEFAULT_CONFIG):
    """f(x) (optional) and the packed b-bit codes of x, in one pass over x.

    Parameters
    ----------
    x : torch.Tensor
        Contiguous float16, bfloat16 or float32 tensor, any shape (row-major order).
    bounds32 : torch.Tensor
        (m-1,) float32 boundaries rounded up to float32 (TableConstants.bounds32), same device.
    code_map : torch.Tensor or None
        (m,) uint8 interval -> code, or None when code = interval (contiguous table).
    bits : int
        Code width b in 1..8.
    act : str or None
        A key of FUSED_ACTIVATIONS to compute y = f(x) in the kernel; None computes only codes.
    params : dict, optional
        The activation's parameters (the kernel reads the registry's `fused_param`).
    config : KernelConfig, optional
        Launch settings and the bits from which a table replaces the search (same bytes).

    Returns
    -------
    (y, packed)
        y : f(x) in x's dtype and shape (None when act is None);
        packed : (bits * ceil(n / 8),) uint8, byte for byte ``pack_codes(codes, bits)``.

    Notes
    -----
    float16 / bfloat16 x at bits >= config.lut_min_bits looks its codes up in a 65536-entry table,
    built by the first call per (bounds32, code_map, dtype); float32 x at bits >= config.lut32_min_bits
    starts from a 65536-entry prefix table built per bounds32: make the first call outside
    CUDA graph capture.
    """
    bits = check_bits(bits)
    _check_tensor(x, "x")
    if act is not None and act not in FUSED_ACTIVATIONS:
        raise ValueError(f"activation {act!r} has no fused kernel; choose one of {sorted(FUSED_ACTIVATIONS)}")
    if bounds32.dtype != torch.float32 or (code_map is not None and code_map.dtype != torch.uint8):
        raise TypeError("bounds32 must be float32 and code_map uint8")
    n = x.numel()
    nbytes = (n + 7) // 8
    packed = torch.empty(packed_nbytes(n, bits), dtype=torch.uint8, device=x.device)
    y = torch.empty_like(x, memory_format=torch.contiguous_format) if act is not None else None
    if n == 0:
        return y, packed
    act_id = FUSED_ACTIVATIONS[act] if act is not None else 0
    param = float((params or {}).get(_ACT_PARAM.get(act, ""), 0.0))
    block, even, i64, grid = _grid(n, config)
    nb = bounds32.numel()
    cmap = code_map if code_map is not None else packed  # never read when contiguous
    kind, lut, maxc = 0, packed, 0                        # kind 0: the search (lut never read)
    if x.dtype in _LUT_DTYPES and bits >= config.lut_min_bits:
        kind, lut = 16, code_lut(bounds32, code_map, x.dtype)
    elif x.dtype == torch.float32 and bits >= config.lut32_min_bits:
        table, most = bracket(bounds32)
        if table is not None:  # None where bounds crowd into one prefix's range: the search
            kind, lut, maxc = 32, table, most
    if kind == 16:
        # no search: its arguments fixed (never read), one compiled kernel per dtype, bits, ACT
        bounds, cmap, nb = lut, lut, 0
    elif kind == 32:
        bounds = bounds32 if nb else x                    # x: never read (every count is 0)
    else:
        bounds = x if nb == 0 else bounds32 if nb <= config.linear_max else padded(bounds32)  # x: never read
    _fewbit_forward_kernel[grid](
        x, y if y is not None else x, packed, bounds, cmap, lut, param, n, nbytes, ACT=act_id, BITS=bits,
        NB=nb, LOG2=nb.bit_length(), LINEAR=nb <= config.linear_max, LEVELSET=code_map is not None and kind != 16,
        LUT=kind, MAXC=maxc, BYTES=block, EVEN=even, I64=i64, **_options(act_id, config))
    return y, packed


def fused_backward(packed: torch.Tensor, grad_out: torch.Tensor, levels: torch.Tensor, bits: int,
                   *, dtype: torch.dtype | None = None, config: KernelConfig = DEFAULT_CONFIG) -> torch.Tensor:
    """grad_out * levels[code] for the codes in `packed`, in one pass.

    Parameters
    ----------
    packed : torch.Tensor
        (bits * ceil(n / 8),) uint8 from fused_forward or pack_codes, n = grad_out.numel().
    grad_out : torch.Tensor
        float16, bfloat16 or float32 gradient of y (made contiguous here if it is not).
    levels : torch.Tensor
        (L,) float32 code -> derivative value (TableConstants.levels).
    bits : int
        Code width b in 1..8.
    dtype : torch.dtype, optional
        dtype of the result (default grad_out's); the product is formed in float32.
    config : KernelConfig, optional
        Launch settings (block_bytes, num_warps).

    Returns
    -------
    torch.Tensor
        (grad_out.float() * levels[code]).to(dtype), grad_out's shape, contiguous.
    """
    bits = check_bits(bits)
    grad_out = grad_out.contiguous()
    _check_tensor(grad_out, "grad_out")
    n = grad_out.numel()
    nbytes = (n + 7) // 8
    if packed.dtype != torch.uint8 or packed.numel() != packed_nbytes(n, bits):
        raise ValueError(f"packed must be {packed_nbytes(n, bits)} uint8 bytes for n={n}, bits={bits}; "
                         f"got {packed.numel()} {packed.dtype}")
    if levels.dtype != torch.float32:
        raise TypeError(f"levels must be float32, got {levels.dtype}")
    out_dtype = grad_out.dtype if dtype is None else dtype
    if out_dtype not in _FUSED_DTYPES:
        raise TypeError(f"dtype must be float16, bfloat16 or float32, got {out_dtype}")
    grad_in = torch.empty(grad_out.shape, dtype=out_dtype, device=grad_out.device)
    if n == 0:
        return grad_in
    block, even, i64, grid = _grid(n, config)
    _fewbit_backward_kernel[grid](packed, grad_out, grad_in, levels, n, nbytes, BITS=bits, BYTES=block,
                                  EVEN=even, I64=i64, **_options(0, config))
    return grad_in


def probe_values(dtype: torch.dtype) -> torch.Tensor:
    """Every value of a 16-bit dtype; for float32, 2^22 bit patterns over all exponents, a ramp
    and the special values."""
    if dtype != torch.float32:
        return torch.arange(-(2 ** 15), 2 ** 15, dtype=torch.int32).to(torch.int16).view(dtype)
    gen = torch.Generator().manual_seed(0)
    patterns = torch.randint(-(2 ** 31), 2 ** 31, (1 << 22,), generator=gen, dtype=torch.int64)
    specials = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38])
    return torch.cat([patterns.to(torch.int32).view(torch.float32), torch.linspace(-30.0, 30.0, 1 << 20),
                      specials])


@functools.lru_cache(maxsize=None)
@torch.no_grad()
def _fused_y_exact(act: str, dtype: torch.dtype, device: torch.device, params: tuple) -> bool:
    x = probe_values(dtype).to(device)
    y, _ = fused_forward(x, torch.zeros(0, device=device), None, 1, act, dict(params))
    with torch.autocast(device.type, enabled=False):
        want = TORCH_FORWARD[act](x, **dict(params))
    bits_of = torch.int32 if dtype == torch.float32 else torch.int16
    same = (y.view(bits_of) == want.view(bits_of)) | (y.isnan() & want.isnan())
    return bool(same.all())


def fused_y_exact(act: str, dtype: torch.dtype, device, params: dict | None = None) -> bool:
    """Whether the kernel's f(x) is bit for bit torch's for this activation, dtype and device.

    Checked once per process and cached: on every float16 / bfloat16 value (a proof), and for
    float32 on 2^22 bit patterns spread over all exponents, a ramp and the special values.
    Use ACT = 0 (y from torch) where it says False: libdevice and torch's CUDA build may
    differ by an ulp in a transcendental function. The first call per key launches kernels
    (not inside CUDA graph capture).
    """
    if act not in FUSED_ACTIVATIONS or dtype not in _FUSED_DTYPES or not triton_available(device):
        return False
    return _fused_y_exact(act, dtype, torch.device(device), tuple(sorted((params or {}).items())))
