"""calibrate(model, batches): record what every activation sees, design a table per module.

Forward pre-hooks on the modules `convert` would replace (`convertible`, the same matching)
copy a bounded, uniform sample of each module's inputs: a reservoir of `samples` elements per
module, kept by the smallest of one uniform random key per element seen (exact sampling
without replacement over the whole stream; 24 bytes per kept element, whatever the
number of batches). With `loss_fn`, each kept input is paired with its output gradient g
(by `torch.autograd.grad` of the loss with respect to the modules' outputs, so no parameter's
.grad is touched) and weighted by g². The designer then works on the samples
(`fewbit_design.calibration.calibrate_layers`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..calibration import Calibration, LayerData, calibrate_layers, check_budget
from ..errors import FewbitError
from ..table import check_bits
from .convert import convertible

__all__ = ["calibrate", "record_inputs"]

DEFAULT_SAMPLES = 65536


class _Reservoir:
    """The `size` elements with the smallest keys among all seen: a uniform sample of the stream."""

    def __init__(self, size: int, generator: torch.Generator):
        self.size, self.gen = size, generator
        self.keys = torch.empty(0, dtype=torch.float64)
        self.x = torch.empty(0, dtype=torch.float64)
        self.g2 = torch.empty(0, dtype=torch.float64)
        self.seen = 0

    def candidates(self, x: torch.Tensor):
        """(flat indices, keys) of the elements of x that may enter: keys below the current cut."""
        n = x.numel()
        self.seen += n
        keys = torch.rand(n, generator=self.gen, dtype=torch.float64)
        if self.keys.numel() < self.size:
            idx = torch.arange(n)
        else:
            idx = torch.nonzero(keys < self.keys.max()).flatten()
        return idx, keys[idx]

    def add(self, keys, x, g2=None):
        keys = torch.cat([self.keys, keys])
        x = torch.cat([self.x, x.to(torch.float64)])
        g2 = torch.cat([self.g2, g2]) if g2 is not None else self.g2
        if keys.numel() > self.size:
            keep = torch.topk(keys, self.size, largest=False, sorted=False).indices
            keys, x = keys[keep], x[keep]
            g2 = g2[keep] if g2.numel() else g2
        self.keys, self.x, self.g2 = keys, x, g2


def _run(model, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def record_inputs(model: nn.Module, batches, *, loss_fn=None, forward=None, samples: int = DEFAULT_SAMPLES,
                  seed: int = 0, include=None, exclude=None, extra: dict | None = None) -> dict:
    """Run `model` on `batches` and sample every convertible activation's inputs.

    Parameters
    ----------
    model : nn.Module, run as it is (call ``model.eval()`` first for eval-mode statistics).
    batches : iterable of inputs: a tensor (``model(x)``), a tuple/list (``model(*b)``) or a
        dict (``model(**b)``).
    loss_fn : callable ``(output, batch) -> scalar``, optional. Given, each kept input gets the
        weight g² of its output gradient.
    forward : callable ``(model, batch) -> output``, optional, replacing the convention above
        (e.g. ``lambda m, b: m(b[0])`` for (input, target) batches).
    samples : reservoir size per module (inputs kept for the design).
    seed : seed of the reservoir's keys.
    include, exclude, extra : module selection, as in `convert`.

    Returns
    -------
    dict of qualified module name -> LayerData (values, g² weights or None, elements seen).
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 16:
        raise FewbitError(f"samples must be an integer >= 16, got {samples!r}")
    found = convertible(model, include, exclude, extra)
    if not found:
        raise FewbitError(f"{type(model).__name__} has no activation modules to calibrate "
                          "(known: the torch.nn and Hugging Face activations; see convert's extra=)")
    gen = torch.Generator().manual_seed(seed)
    res = {name: _Reservoir(samples, gen) for name, _, _ in found}
    pending = []                     # per call: [name, output, flat indices, keys, kept inputs]
    open_calls = {name: [] for name in res}     # calls whose forward has not returned yet

    def pre_hook(name):
        def hook(module, args):
            x = args[0].detach() if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                raise FewbitError(f"{name}: input is not a floating-point tensor")
            flat = x.reshape(-1)
            if not bool(torch.isfinite(flat).all()):
                bad = int((~torch.isfinite(flat)).sum())
                raise FewbitError(f"{name}: {bad} of {flat.numel()} activation inputs are NaN or infinite")
            idx, keys = res[name].candidates(flat)
            xs = flat[idx.to(flat.device)].to(device="cpu", dtype=torch.float64)
            if loss_fn is None:
                res[name].add(keys, xs)
            else:
                pending.append([name, None, idx, keys, xs])
                open_calls[name].append(pending[-1])
        return hook

    def post_hook(name):
        def hook(module, args, output):
            if loss_fn is not None:
                open_calls[name].pop()[1] = output
        return hook

    run = _run if forward is None else forward
    handles = []
    try:
        for name, module, _ in found:
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
            handles.append(module.register_forward_hook(post_hook(name)))
        n_batches = 0
        for batch in batches:
            n_batches += 1
            if loss_fn is None:
                with torch.no_grad():
                    run(model, batch)
                continue
            pending.clear()
            loss = loss_fn(run(model, batch), batch)
            _add_gradients(loss, pending, res)
        if n_batches == 0:
            raise FewbitError("no batches: calibration needs at least one batch of inputs")
    finally:
        for h in handles:
            h.remove()
        pending.clear()
    acts = {name: spec for name, _, spec in found}
    out = {}
    for name, r in res.items():
        if r.seen == 0:
            raise FewbitError(f"{name}: never called during the calibration batches")
        act, params = acts[name]
        out[name] = LayerData(activation=act, params=params, values=r.x.numpy(),
                              weights=r.g2.numpy() if loss_fn is not None else None, count=r.seen)
    return out


def _add_gradients(loss, pending, res):
    """Output gradients of every recorded call; each kept input is weighted by g²."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise FewbitError("loss_fn must return a scalar tensor")
    live = [p for p in pending if isinstance(p[1], torch.Tensor) and p[1].requires_grad]
    if len(live) < len(pending):
        name = next(p[0] for p in pending if p not in live)
        raise FewbitError(f"{name}: output does not require grad, so loss_fn's gradient cannot reach it "
                          "(run with parameters that require grad, outside torch.no_grad)")
    grads = torch.autograd.grad(loss, [p[1] for p in live], allow_unused=True)
    for (name, out, idx, keys, xs), g in zip(live, grads):
        g = torch.zeros_like(out) if g is None else g
        g2 = g.detach().reshape(-1)[idx.to(g.device)].to(device="cpu", dtype=torch.float64) ** 2
        res[name].add(keys, xs, g2)


def calibrate(model: nn.Module, batches, bits: int = 3, *, loss_fn=None, budget_bits: float | None = None,
              forward=None, samples: int = DEFAULT_SAMPLES, partition: str = "auto", grid: int | None = None,
              seed: int = 0, include=None, exclude=None, extra: dict | None = None) -> Calibration:
    """Calibrated tables for every activation module of `model`, from its inputs on `batches`.

    Parameters
    ----------
    model, batches, loss_fn, forward, samples, seed, include, exclude, extra : see `record_inputs`.
    bits : code width of every table (1..8); ignored when `budget_bits` is given.
    budget_bits : average bits per saved element in [1, 8]; bits per module are then chosen
        (exactly) to minimise the total predicted gradient error within the budget.
    partition, grid : passed to `fewbit_design.design` per module ("auto": the better partition).

    Returns
    -------
    Calibration
        Module name -> table, with each table's error and the default table's error under the
        module's data; ``convert(model, tables=calibration)`` uses it, ``.save(path)`` writes it.

    Example
    -------
    >>> cal = calibrate(model, [x1, x2, x3, x4], bits=3)   # doctest: +SKIP
    >>> convert(model, tables=cal)                           # doctest: +SKIP
    """
    if budget_bits is not None:
        check_budget(budget_bits)            # refuse bad options before running the model
    else:
        check_bits(bits)
    layers = record_inputs(model, batches, loss_fn=loss_fn, forward=forward, samples=samples, seed=seed,
                           include=include, exclude=exclude, extra=extra)
    return calibrate_layers(layers, bits, budget_bits=budget_bits, partition=partition, grid=grid)
