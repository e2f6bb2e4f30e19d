"""Reading sample values from .pt/.pth files (loaded by fewbit_design.samples only for such a path)."""

import pickle

import numpy as np
import torch

from ..errors import FewbitError


def read_samples(path: str) -> np.ndarray:
    """The one tensor a .pt/.pth file holds (alone, or the only tensor of a list/dict), as float64."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FewbitError(f"{path}: holds objects other than tensors, so torch.load(weights_only=True) "
                          "refuses it; loading it fully could run arbitrary code: save the tensor "
                          "alone, or as .npy") from None
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        tensors = [t for t in obj if isinstance(t, torch.Tensor)]
        if len(tensors) != 1:
            raise FewbitError(f"{path}: expected one tensor, found {len(tensors)}")
        obj = tensors[0]
    if not isinstance(obj, torch.Tensor):
        raise FewbitError(f"{path}: expected a tensor, found {type(obj).__name__}")
    if obj.dtype == torch.bool or obj.is_complex():
        raise FewbitError(f"{path}: values must be numeric (int or float), got {obj.dtype}")
    return obj.detach().to(torch.float64).numpy()


__all__ = ["read_samples"]
