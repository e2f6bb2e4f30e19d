"""Bytes saved for backward: native activations vs few-bit (1-4 bits), fp32 and bf16.

Counts, with torch.autograd.graph.saved_tensors_hooks, the distinct storages that autograd
keeps from forward to backward (parameters excluded: they live anyway), for a small
pre-LN transformer block (attention + GELU MLP) and a small GELU MLP. "activation" is the
part saved by the activation modules themselves.

    python -m benchmarks.memory [--batch 8 --seq 256 --dim 256]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import fewbit_design.torch as ft

from benchmarks._models import Block


def mlp(dim: int, act) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, 4 * dim), act(), nn.Linear(4 * dim, 4 * dim), act(),
                         nn.Linear(4 * dim, dim))


def saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(all saved bytes, bytes saved inside activation modules), distinct storages, no parameters."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, in_act = {}, [False]
    acts = [m for m in model.modules() if isinstance(m, (nn.GELU, ft.FewbitActivation))]
    hooks = [h for m in acts for h in (
        m.register_forward_pre_hook(lambda *_: in_act.__setitem__(0, True)),
        m.register_forward_hook(lambda *_: in_act.__setitem__(0, False)))]

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen.setdefault(s.data_ptr(), (s.nbytes(), in_act[0]))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    for h in hooks:
        h.remove()
    del out  # frees the graph; no backward needed to count what it holds
    total = sum(n for n, _ in seen.values())
    return total, sum(n for n, is_act in seen.values() if is_act)


def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def run(batch: int, seq: int, dim: int, heads: int) -> list[str]:
    rows = ["| model | dtype | activation | saved total MiB | by activations MiB | activations vs native "
            "| total vs native |", "|---|---|---|---:|---:|---:|---:|"]
    x0 = torch.randn(batch, seq, dim)
    models = {
        f"block d={dim} T={seq} B={batch}": lambda act: Block(dim, heads, act()),
        f"MLP {dim}-{4 * dim}-{4 * dim}-{dim}, {batch * seq} rows": lambda act: mlp(dim, act),
    }
    for model_name, build in models.items():
        for dtype in (torch.float32, torch.bfloat16):
            x = x0.to(dtype).requires_grad_(True)
            base = None
            for bits in (None, 1, 2, 3, 4):
                act = nn.GELU if bits is None else (lambda b=bits: ft.GELU(bits=b))
                torch.manual_seed(0)
                model = build(act).to(dtype)
                total, by_act = saved_bytes(model, x)
                base = base or (total, by_act)
                label = "native GELU" if bits is None else f"few-bit GELU, {bits} bit"
                rows.append(f"| {model_name} | {str(dtype).removeprefix('torch.')} | {label} | {mib(total)} "
                            f"| {mib(by_act)} | {by_act / base[1]:.4f} | {total / base[0]:.3f} |")
                if bits is not None:  # exactly b bits per activation input element (+ < 8 elements)
                    n = sum(batch * seq * 4 * dim for m in model.modules() if isinstance(m, ft.GELU))
                    assert by_act <= math.ceil(n * bits / 8) + 64 * len(
                        [m for m in model.modules() if isinstance(m, ft.GELU)]), (by_act, n, bits)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    a = p.parse_args(argv)
    print(f"torch {torch.__version__}; parameters excluded; distinct storages saved for backward\n")
    print("\n".join(run(a.batch, a.seq, a.dim, a.heads)))


if __name__ == "__main__":
    main()
