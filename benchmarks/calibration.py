"""Calibrated tables on a model trained for real, and the time to calibrate a BERT-base.

Part 1: a small char-level GPT (pre-LN, GELU MLPs) is trained on the Python standard
library's source for --warmup steps. Then, from 4 held-out batches, `calibrate` designs a
table per MLP activation: on the plain inputs, on the inputs weighted by g² (with the loss),
and with bits chosen under a budget. Per layer: the default table's error and the calibrated
one's, both under the layer's data (relative to Σ w f'²), the same two under g² weights, and
the budgeted bits. The cost of the reservoir (65536 inputs per layer) is measured against a
design on every input of the same batches, both tables scored on every input. Then the
relative error of the full parameter gradient (few-bit against native, on other held-out
batches), and the training continued from the warm model for --steps steps in each arm
(same data order): native, default tables, calibrated tables, reporting the final
held-out loss.

Part 2: `calibrate` on a 12-layer BERT-base (transformers BertConfig(), random init, eval
mode, CPU) with 4 batches of --bert-batch x 128 tokens, bits=3, hooks and designs
included, next to the plain forward passes of the same batches.

    python -m benchmarks.calibration [--warmup 300 --steps 100 --bits 2]
    python -m benchmarks.calibration --quick        # a dry run in a minute

Timings are from one run on a shared machine: compare within the run only.
"""

from __future__ import annotations

import argparse
import copy
import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import fewbit_design.torch as ft
from fewbit_design.calibration import LayerData, calibrate_layers
from fewbit_design.cells import samples_error
from fewbit_design.activations import get_activation
from fewbit_design.distributions import samples_from_array
from fewbit_design.designer import design
from fewbit_design.torch.calibrate import record_inputs
from fewbit_design.torch.convert import convertible

from benchmarks._models import GPT


def stdlib_text(limit=4_000_000):
    root = os.path.dirname(os.__file__)
    parts, n = [], 0
    for path in sorted(glob.glob(os.path.join(root, "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as fh:
            parts.append(fh.read())
        n += len(parts[-1])
        if n > limit:
            break
    return "".join(parts)


FWD = lambda model, batch: model(batch[0])      # noqa: E731  (input, target) batches


def loss_of(logits, batch):
    return F.cross_entropy(logits.flatten(0, 1), batch[1].flatten())


def batches(data, n, batch, ctx, gen):
    out = []
    for _ in range(n):
        i = torch.randint(0, data.numel() - ctx - 1, (batch,), generator=gen)
        x = torch.stack([data[j:j + ctx] for j in i])
        y = torch.stack([data[j + 1:j + ctx + 1] for j in i])
        out.append((x, y))
    return out


def train(model, data, steps, args, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model.train()
    for step in range(steps):
        if step and step % 100 == 0:
            print(f"  step {step}/{steps}", file=sys.stderr, flush=True)
        x, y = batches(data, 1, args.batch, args.ctx, gen)[0]
        loss = loss_of(model(x), (x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def held_out_loss(model, val):
    model.eval()
    return float(np.mean([loss_of(model(x), (x, y)).item() for x, y in val]))


def grad_error(model, fewbit, val):
    """‖∇few-bit − ∇native‖ / ‖∇native‖ over all parameters, summed over the batches."""
    num = den = 0.0
    for x, y in val:
        g = []
        for m in (model, fewbit):
            m.eval()
            m.zero_grad(set_to_none=True)
            loss_of(m(x), (x, y)).backward()
            g.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]))
        num += float((g[1] - g[0]).square().sum())
        den += float(g[0].square().sum())
    return math.sqrt(num / den)


def part1(args):
    torch.manual_seed(0)
    text = stdlib_text(args.chars)
    chars = sorted(set(text))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    data = torch.from_numpy(np.searchsorted(np.array([ord(c) for c in chars]), codes))   # char -> index
    split = int(0.9 * data.numel())
    train_data, val_data = data[:split], data[split:]
    print(f"# char-level GPT on the stdlib: {data.numel()} chars, vocab {len(chars)}, "
          f"{args.layers} layers x {args.dim}, ctx {args.ctx}, batch {args.batch}")
    model = GPT(len(chars), dim=args.dim, layers=args.layers, heads=4, context=args.ctx)
    gen = torch.Generator().manual_seed(1)
    val = batches(val_data, 8, args.batch, args.ctx, gen)
    print(f"held-out loss at init {held_out_loss(model, val):.4f}")
    t0 = time.perf_counter()
    train(model, train_data, args.warmup, args, seed=2)
    print(f"after {args.warmup} warm-up steps ({time.perf_counter() - t0:.0f} s): "
          f"held-out loss {held_out_loss(model, val):.4f}")
    model.eval()
    cal_batches = batches(val_data, 4, args.batch, args.ctx, gen)
    b = args.bits

    t0 = time.perf_counter()
    plain = ft.calibrate(model, [x for x, _ in cal_batches], bits=b)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    weighted = ft.calibrate(model, cal_batches, bits=b, loss_fn=loss_of, forward=FWD)
    t_weighted = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    budget = ft.calibrate(model, cal_batches, loss_fn=loss_of, forward=FWD,
                          budget_bits=args.budget)
    t_budget = time.perf_counter() - t0
    print(f"\ncalibrate, 4 batches: plain {t_plain:.1f} s, g²-weighted {t_weighted:.1f} s, "
          f"budget {args.budget} {t_budget:.1f} s (8 widths per layer)")

    print(f"\n## Per layer, {b} bits (relative error under the layer's own data; default = the shipped "
          f"normal:0,1 table)\n")
    print("| layer | default | calibrated | ratio | default, g² | calibrated g², g² | ratio | "
          f"bits @ {args.budget} | predicted error @ budget |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in plain:
        p, w, q = plain.layers[name], weighted.layers[name], budget.layers[name]
        print(f"| {name} | {p.default_relative_error:.3e} | {p.relative_error:.3e} | "
              f"{p.default_relative_error / p.relative_error:.2f}x | {w.default_relative_error:.3e} | "
              f"{w.relative_error:.3e} | {w.default_relative_error / w.relative_error:.2f}x | "
              f"{q.table.bits} | {q.predicted:.3e} |")
    lo, hi = math.floor(args.budget), math.ceil(args.budget)
    fixed = {w: sum(fixed_width_errors(model, cal_batches, w).values()) for w in sorted({lo, hi})}
    print(f"\nbudget {args.budget}: average {budget.average_bits:.3f} bits; predicted total error "
          f"{sum(c.predicted for c in budget.layers.values()):.4e}; with the same bits everywhere: "
          + ", ".join(f"{w} bits {e:.4e}" for w, e in fixed.items()) + " (the same g² data)")

    reservoir_cost(model, cal_batches[:args.full_batches], b)

    print(f"\n## Gradient error and continued training ({args.steps} steps from the warm model, "
          f"same data order per seed; {args.seeds} seed(s))\n")
    print("| tables | rel. error of the parameter gradient | held-out loss after | per seed |")
    print("|---|---|---|---|")
    grad_val = batches(val_data, 4, args.batch, args.ctx, gen)
    arms = [("native", None), (f"default {b}-bit", b), (f"calibrated {b}-bit", plain),
            (f"calibrated g² {b}-bit", weighted), (f"budget {args.budget} (g²)", budget)]
    for label, tables in arms:
        print(f"  arm {label}", file=sys.stderr, flush=True)
        m = copy.deepcopy(model)
        if isinstance(tables, int):
            ft.convert(m, bits=tables)
        elif tables is not None:
            ft.convert(m, tables=tables)
        ge = grad_error(model, m, grad_val) if tables is not None else 0.0
        losses = []
        for seed in range(args.seeds):
            trained = train(copy.deepcopy(m), train_data, args.steps, args, seed=3 + seed)
            losses.append(held_out_loss(trained, val))
        print(f"| {label} | {ge:.4f} | {np.mean(losses):.4f} | {' '.join(f'{v:.4f}' for v in losses)} |")


def fixed_width_errors(model, cal_batches, bits):
    """Predicted errors of every layer at a fixed width, from the same recorded data."""
    layers = record_inputs(model, cal_batches, loss_fn=loss_of, forward=FWD)
    return {n: c.predicted for n, c in calibrate_layers(layers, bits).layers.items()}


def reservoir_cost(model, cal_batches, bits):
    """Tables from the 65536-input reservoir vs from every input, both scored on every input."""
    full = record_inputs(model, [x for x, _ in cal_batches], samples=1 << 40)
    kept = record_inputs(model, [x for x, _ in cal_batches])
    print(f"\n## Reservoir (65536 inputs per layer) against every input ({len(cal_batches)} batches), "
          f"{bits} bits\n")
    print("| layer | inputs | error, table from all | error, table from reservoir | cost |")
    print("|---|---|---|---|---|")
    for name in full:
        act = get_activation(full[name].activation)
        everything = samples_from_array(full[name].values)
        t_all = design(act, bits, distribution=everything)
        t_res = design(act, bits, distribution=samples_from_array(kept[name].values))
        e_all, den = samples_error(act, everything, t_all.boundaries, t_all.levels[t_all.codes])
        e_res, _ = samples_error(act, everything, t_res.boundaries, t_res.levels[t_res.codes])
        print(f"| {name} | {full[name].values.size} | {e_all / den:.4e} | {e_res / den:.4e} | "
              f"+{100 * (e_res / e_all - 1):.2f} % |")


# -- BERT-base ---------------------------------------------------------------------------------

def part2(args):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig()).eval()
    gen = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 30522, (args.bert_batch, 128), generator=gen) for _ in range(4)]
    n = len(convertible(model))
    print(f"\n## BERT-base from its config (random init, CPU, {torch.get_num_threads()} threads): "
          f"{n} activations, 4 batches of {args.bert_batch} x 128 tokens\n")
    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - w, time.process_time() - c

    def forward_only():
        with torch.no_grad():
            for x in data:
                model(x)

    _, w_fwd, c_fwd = timed(forward_only)
    cal, w_cal, c_cal = timed(lambda: ft.calibrate(model, data, bits=3))
    _, w_bud, c_bud = timed(lambda: ft.calibrate(model, data, budget_bits=2.5))
    print("CPU seconds are the process's, all threads: on 2 otherwise idle cores the wall time lies "
          "between half of them and all of them.\n")
    print("| step | wall s | CPU s |")
    print("|---|---|---|")
    print(f"| 4 plain forward passes | {w_fwd:.1f} | {c_fwd:.1f} |")
    print(f"| calibrate(model, batches, bits=3): hooks + forward + {len(cal)} designs | {w_cal:.1f} | {c_cal:.1f} |")
    print(f"| calibrate(..., budget_bits=2.5): {8 * len(cal)} designs + the DP | {w_bud:.1f} | {c_bud:.1f} |")
    print(f"\n{cal!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="data orders for the continued training")
    ap.add_argument("--budget", type=float, default=2.5)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--chars", type=int, default=4_000_000)
    ap.add_argument("--full-batches", type=int, default=2)
    ap.add_argument("--bert-batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for part 1 (BERT: torch's default)")
    ap.add_argument("--skip-bert", action="store_true")
    ap.add_argument("--only-bert", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a dry run")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.steps, args.chars, args.layers, args.dim = 20, 5, 200_000, 2, 64
        args.bert_batch = 1
    print(f"# {' '.join(sys.argv)}", flush=True)
    if not args.only_bert:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        part1(args)
        torch.set_num_threads(threads)
    if not args.skip_bert:
        part2(args)


if __name__ == "__main__":
    main()
