"""Does few-bit training converge like exact training? Same models, seeds and batches, real data.

Two tasks, each trained with exact activations and with few-bit activations at 1-4 bits
(the shipped default tables, ``fewbit_design.torch.convert(model, bits=b)``) and at 3 bits
with calibrated tables (``fewbit_design.torch.calibrate`` on the first training batches at
initialisation, g²-weighted, then ``convert(model, tables=...)``):

- ``lm``: a GPT-style byte-level language model (pre-LN blocks, GELU MLPs) on the source of
  a fixed list of Python standard-library modules; the last 10 % of the text is held out.
- ``digits``: a SiLU MLP classifier on scikit-learn's digits (8x8 images, 10 classes);
  a fixed stratified 25 % of the images is held out.

For one seed every configuration starts from the same weights (the model is built with
native activations and then converted) and sees the same batches in the same order, so the
runs differ only in the activations' backward pass. Writes the curves and final metrics to a
JSON file and a figure:

    python -m benchmarks.convergence                 # full: 3 seeds, a few minutes on 2 cores
    python -m benchmarks.convergence --quick --out /tmp/c.json --plot /tmp/c.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import sysconfig
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import fewbit_design.torch as ft
from fewbit_design._atomic import atomic_write

from benchmarks._harness import results_path
from benchmarks._models import GPT

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Present in every CPython 3.10-3.14; the text is identified by its sha256 in the results.
STDLIB_FILES = ("argparse.py", "textwrap.py", "difflib.py", "string.py", "shlex.py", "heapq.py",
                "bisect.py", "fractions.py", "statistics.py", "calendar.py", "functools.py",
                "contextlib.py", "dataclasses.py", "enum.py", "inspect.py", "pprint.py", "random.py",
                "tokenize.py", "configparser.py", "csv.py", "gettext.py", "ftplib.py")


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run (full or quick)."""
    seeds: tuple = (0, 1, 2)
    bits: tuple = (1, 2, 3, 4)
    calibrated_bits: tuple = (3,)
    calibration_batches: int = 4
    lm_steps: int = 400
    lm_batch: int = 32
    lm_context: int = 64
    lm_dim: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    lm_val_windows: int = 256
    digits_epochs: int = 40
    digits_batch: int = 64
    digits_hidden: int = 128
    evals: int = 12          # validation points along each run (the last at the final step)


QUICK = Plan(seeds=(0,), bits=(1, 3), calibration_batches=2, lm_steps=30, lm_batch=8, lm_context=32, lm_dim=32, lm_layers=1,
             lm_heads=2, lm_val_windows=32, digits_epochs=3, digits_batch=64, digits_hidden=32, evals=3)


# ----------------------------------------------------------------------------- data

def stdlib_text() -> tuple[bytes, list[str]]:
    """Concatenated bytes of the STDLIB_FILES that exist here, and their names."""
    root = sysconfig.get_paths()["stdlib"]
    found = [f for f in STDLIB_FILES if os.path.isfile(os.path.join(root, f))]
    if len(found) < len(STDLIB_FILES) // 2:
        raise SystemExit(f"convergence: only {len(found)} of the standard-library files found under {root}")
    parts = []
    for name in found:
        with open(os.path.join(root, name), "rb") as fh:
            parts.append(fh.read())
    return b"\n".join(parts), found


def digits_data():
    """(x_train, y_train, x_val, y_val) of scikit-learn's digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    as_t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return as_t(x_tr, torch.float32), as_t(y_tr, torch.long), as_t(x_va, torch.float32), as_t(y_va, torch.long)


# ----------------------------------------------------------------------------- models

def digits_mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, 10))


# ----------------------------------------------------------------------------- training

def _schedule(opt, steps: int, warmup: int):
    # linear warm-up, then cosine decay to 10 % of the peak
    def factor(i):
        if i < warmup:
            return (i + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _eval_points(steps: int, evals: int) -> set:
    return {round(steps * (i + 1) / evals) for i in range(evals)}


def configs(plan: Plan) -> list:
    """None (exact), then (bits, calibrated) per few-bit configuration."""
    calibrated = plan.calibrated_bits if hasattr(ft, "calibrate") else ()
    return [None] + [(b, False) for b in plan.bits] + [(b, True) for b in calibrated]


def _label(cfg) -> str:
    return "exact" if cfg is None else f"calibrated {cfg[0]} bit" if cfg[1] else f"{cfg[0]} bit"


def _few_bit(model, cfg, plan: Plan, batch, loss_fn) -> None:
    """Convert `model` for `cfg`; calibrated tables come from its first training batches, as it is now."""
    if cfg is None:
        return
    bits, calibrated = cfg
    if not calibrated:
        ft.convert(model, bits=bits)
        return
    cal = ft.calibrate(model, [batch(i) for i in range(plan.calibration_batches)], bits=bits,
                       forward=lambda m, b: m(b[0]), loss_fn=lambda out, b: loss_fn(out, b[1]), seed=0)
    ft.convert(model, tables=cal)


def train_lm(plan: Plan, seed: int, cfg) -> dict:
    """Train the byte GPT; cfg None is exact. Returns curves and final validation metrics."""
    text, _ = stdlib_text()
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    T = plan.lm_context
    starts = torch.linspace(0, len(val) - T - 2, plan.lm_val_windows).long()
    val_x = torch.stack([val[s:s + T] for s in starts])
    val_y = torch.stack([val[s + 1:s + T + 1] for s in starts])

    torch.manual_seed(seed)
    model = GPT(256, dim=plan.lm_dim, layers=plan.lm_layers, heads=plan.lm_heads, context=T, tied_head=True)
    batches = np.random.default_rng(seed).integers(0, len(train) - T - 1, (plan.lm_steps, plan.lm_batch))

    def batch(i):
        return (torch.stack([train[s:s + T] for s in batches[i]]),
                torch.stack([train[s + 1:s + T + 1] for s in batches[i]]))

    def loss_fn(out, y):
        return F.cross_entropy(out.reshape(-1, 256), y.reshape(-1))

    _few_bit(model, cfg, plan, batch, loss_fn)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
    sched = _schedule(opt, plan.lm_steps, warmup=max(1, plan.lm_steps // 20))

    def evaluate():
        model.eval()
        with torch.no_grad():
            logits = model(val_x)
            loss = F.cross_entropy(logits.reshape(-1, 256), val_y.reshape(-1)).item()
            acc = (logits.argmax(-1) == val_y).float().mean().item()
        model.train()
        return loss, acc

    return _loop(model, opt, sched, plan.lm_steps, plan.evals, evaluate, batch, loss_fn)


def train_digits(plan: Plan, seed: int, cfg) -> dict:
    """Train the SiLU MLP on digits; cfg None is exact."""
    x_tr, y_tr, x_va, y_va = digits_data()
    torch.manual_seed(seed)
    model = digits_mlp(plan.digits_hidden)
    per_epoch = math.ceil(len(x_tr) / plan.digits_batch)
    steps = plan.digits_epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = _schedule(opt, steps, warmup=per_epoch)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x_tr)) for _ in range(plan.digits_epochs)])

    def evaluate():
        model.eval()
        with torch.no_grad():
            logits = model(x_va)
            loss = F.cross_entropy(logits, y_va).item()
            acc = (logits.argmax(-1) == y_va).float().mean().item()
        model.train()
        return loss, acc

    def batch(i):
        e, j = divmod(i, per_epoch)
        idx = torch.as_tensor(order[e * len(x_tr):(e + 1) * len(x_tr)][j * plan.digits_batch:(j + 1) * plan.digits_batch])
        return x_tr[idx], y_tr[idx]

    _few_bit(model, cfg, plan, batch, F.cross_entropy)
    return _loop(model, opt, sched, steps, plan.evals, evaluate, batch, F.cross_entropy)


def _loop(model, opt, sched, steps, evals, evaluate, batch, loss_fn) -> dict:
    at = _eval_points(steps, evals)
    train_loss, val_curve = [], []
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batch(i)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_loss.append(loss.item())
        if not math.isfinite(train_loss[-1]):
            raise FloatingPointError(f"training loss is {train_loss[-1]} at step {i}")
        if i + 1 in at:
            val_curve.append([i + 1, *evaluate()])
    _, loss, acc = val_curve[-1]
    return {"train_loss": train_loss, "val": val_curve, "final_val_loss": loss, "final_val_acc": acc,
            "seconds": time.perf_counter() - t0}


TASKS = {"lm": train_lm, "digits": train_digits}


def _run_one(job):
    task, plan, seed, cfg = job
    torch.set_num_threads(1)  # one thread per worker process: these models are too small to split
    return job, TASKS[task](plan, seed, cfg)


# ----------------------------------------------------------------------------- results

def summarise(runs: dict, plan: Plan) -> dict:
    """Per task and configuration: mean and sample std over seeds, and mean vs exact."""
    out = {}
    for task, by_cfg in runs.items():
        rows = {}
        for cfg, by_seed in by_cfg.items():
            loss = np.array([by_seed[str(s)]["final_val_loss"] for s in plan.seeds])
            acc = np.array([by_seed[str(s)]["final_val_acc"] for s in plan.seeds])
            rows[cfg] = {"val_loss_mean": loss.mean(), "val_loss_std": loss.std(ddof=1) if len(loss) > 1 else 0.0,
                         "val_acc_mean": acc.mean(), "val_acc_std": acc.std(ddof=1) if len(acc) > 1 else 0.0}
        exact = rows["exact"]["val_loss_mean"]
        for r in rows.values():
            r["val_loss_vs_exact"] = r["val_loss_mean"] / exact - 1.0
        out[task] = {k: {m: float(v) for m, v in r.items()} for k, r in rows.items()}
    return out


def table(summary: dict, plan: Plan) -> str:
    lines = [f"final validation loss and accuracy, mean ± sample std over seeds {list(plan.seeds)}\n",
             "| task | activations | val loss | vs exact | val accuracy |", "|---|---|---:|---:|---:|"]
    names = {"lm": "byte GPT, stdlib source (GELU)", "digits": "digits MLP (SiLU)"}
    for task, rows in summary.items():
        for cfg, r in rows.items():
            lines.append(f"| {names[task]} | {cfg} | {r['val_loss_mean']:.4f} ± {r['val_loss_std']:.4f} "
                         f"| {100 * r['val_loss_vs_exact']:+.2f} % | {100 * r['val_acc_mean']:.2f} ± "
                         f"{100 * r['val_acc_std']:.2f} % |")
    return "\n".join(lines)


def plot(runs: dict, plan: Plan, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = {"lm": "byte GPT on stdlib source (GELU)", "digits": "digits MLP (SiLU)"}
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (task, by_cfg) in zip(axes[0], runs.items()):
        for cfg, by_seed in by_cfg.items():
            curves = np.array([by_seed[str(s)]["val"] for s in plan.seeds])  # (seeds, evals, 3)
            style = {"color": "black", "lw": 1.6, "ls": "--", "zorder": 5} if cfg == "exact" else {"lw": 1.3}
            ax.plot(curves[0, :, 0], curves[:, :, 1].mean(0), marker="o", ms=3, label=cfg, **style)
        ax.set_title(titles[task])
        ax.set_xlabel("training step")
        ax.set_ylabel(f"validation loss (mean of {len(plan.seeds)} seeds)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def run(plan: Plan, jobs: int, tasks=tuple(TASKS), previous: dict | None = None) -> dict:
    """Train every (task, seed, configuration); return the JSON-ready result.

    With `previous` (an earlier result of the same plan), only the configurations it lacks are
    trained; every run is deterministic and independent of the others, so the merged result is
    the one a full run gives (up to timings).
    """
    text, files = stdlib_text()
    old = previous["runs"] if previous else {}
    todo = [(task, plan, seed, cfg) for task in tasks for seed in plan.seeds for cfg in configs(plan)
            if _label(cfg) not in old.get(task, {})]
    runs = {task: {_label(cfg): dict(old.get(task, {}).get(_label(cfg), {})) for cfg in configs(plan)}
            for task in tasks}
    t0 = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_run_one, todo))
    else:
        results = [_run_one(job) for job in todo]
    for (task, _, seed, cfg), res in results:
        runs[task][_label(cfg)][str(seed)] = res
    for task, by_cfg in runs.items():  # same weights, same batches: the first loss agrees exactly
        for seed in plan.seeds:
            first = {by_cfg[c][str(seed)]["train_loss"][0] for c in by_cfg}
            assert len(first) == 1, f"{task} seed {seed}: configurations start from different losses {first}"
    wall = time.perf_counter() - t0
    added = sorted({_label(cfg) for _, _, _, cfg in todo}) if previous else None
    return {
        "benchmark": "convergence", "plan": asdict(plan), "jobs": jobs,
        "wall_seconds": previous["wall_seconds"] if previous else wall,
        **({"added": {"configurations": added, "wall_seconds": wall}} if previous else {}),
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "data": {"lm": {"files": files, "bytes": len(text), "sha256": hashlib.sha256(text).hexdigest(),
                        "split": "first 90 % train, last 10 % validation"},
                 "digits": {"source": "sklearn.datasets.load_digits", "split": "stratified 25 % validation, random_state=0"}},
        "summary": summarise(runs, plan), "runs": runs,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny run (1 seed, 1 and 3 bits, a few steps)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes, one thread each (default 2)")
    p.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/convergence.json for "
                   "the full run, a temporary folder for --quick)")
    p.add_argument("--plot", default=None, help="figure (default: plots/convergence.png for the full run, a "
                   "temporary folder for --quick)")
    p.add_argument("--replot", metavar="JSON", help="redraw the figure and table of an earlier run, no training")
    p.add_argument("--add", metavar="JSON", help="train only the configurations an earlier run lacks, and add them")
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error("--jobs must be at least 1")
    full = not a.quick   # a --quick run never replaces the committed 3-seed results or their figure
    out = results_path(a.out, os.path.join(HERE, "results", "convergence.json"), full_run=full)
    fig = results_path(a.plot, os.path.join(ROOT, "plots", "convergence.png"), full_run=full)
    if a.replot or a.add:
        with open(a.replot or a.add) as fh:
            result = json.load(fh)
        plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in result["plan"].items()})
        out = a.replot or a.add
        if a.add:
            result = run(plan, a.jobs, previous=result)
            atomic_write(out, json.dumps(result, indent=1) + "\n")
    else:
        plan = QUICK if a.quick else Plan()
        result = run(plan, a.jobs)
        atomic_write(out, json.dumps(result, indent=1) + "\n")
    plot(result["runs"], plan, fig)
    added = result.get("added")
    print(f"torch {result['machine']['torch']}; {len(plan.seeds)} seeds; {result['jobs']} worker processes, "
          f"1 thread each; wall {result['wall_seconds']:.0f} s"
          + (f" (+ {added['wall_seconds']:.0f} s for {', '.join(added['configurations'])}, added)" if added else "")
          + "\n")
    print(table(result["summary"], plan))
    print(f"\nwrote {os.path.relpath(out)} and {os.path.relpath(fig)}")


if __name__ == "__main__":
    main()
