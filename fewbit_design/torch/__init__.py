"""fewbit_design.torch: the PyTorch runtime (Table -> runtime step; the only part that imports torch).

Activations whose forward is exact and whose backward keeps only a b-bit code per element:

    from fewbit_design.torch import GELU, convert
    mlp = nn.Sequential(nn.Linear(64, 256), GELU(bits=3), nn.Linear(256, 64))
    convert(model, bits=3)        # swap a model's activations in place; unconvert(model) undoes it
    convert(model, tables=calibrate(model, batches))   # a table per module, from its real inputs
"""

from .calibrate import calibrate
from .convert import activation_of, convert, unconvert
from .functional import FewbitFunction, fewbit_activation
from .modules import (CELU, ELU, GELU, SELU, FewbitActivation, Hardsigmoid, Hardswish, Hardtanh,
                      LeakyReLU, LogSigmoid, Mish, QuickGELU, ReLU, ReLU6, SAFE_GLOBALS, Sigmoid, SiLU,
                      Softplus, Softsign, SquaredReLU, Tanh, Tanhshrink, make_module)
from .packing import pack_codes, packed_nbytes, unpack_codes
from .reference import torch_activation
from .kernels import DEFAULT_CONFIG, KernelConfig
from .tables import check_activation, clear_cache, default_table, load_table

__all__ = [
    # functional
    "fewbit_activation", "FewbitFunction", "torch_activation",
    # modules
    "FewbitActivation", "make_module", "ReLU", "LeakyReLU", "ELU", "CELU", "SELU", "GELU", "SiLU",
    "Mish", "Softplus", "Sigmoid", "Tanh", "Hardtanh", "Hardsigmoid", "Hardswish", "ReLU6",
    "Softsign", "LogSigmoid", "Tanhshrink", "QuickGELU", "SquaredReLU", "SAFE_GLOBALS",
    # model conversion
    "convert", "unconvert", "activation_of",
    # calibration
    "calibrate",
    # tables
    "default_table", "load_table", "check_activation", "clear_cache",
    # fused kernel settings
    "KernelConfig", "DEFAULT_CONFIG",
    # packing
    "pack_codes", "unpack_codes", "packed_nbytes",
]
