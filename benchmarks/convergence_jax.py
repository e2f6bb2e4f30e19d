"""Does few-bit training converge like exact training in JAX? The digits task of
benchmarks/convergence.py (a SiLU MLP on scikit-learn's digits, stratified 25 % held out),
trained with jax.nn.silu and with fewbit_design.jax at 3 bits (the shipped table), same
weights, same batches, same AdamW (optax) with warm-up and cosine decay, per seed.

    python -m benchmarks.convergence_jax                    # 3 seeds, writes benchmarks/results/convergence_jax.json
    python -m benchmarks.convergence_jax --quick            # 1 seed, 3 epochs, writes to a temporary file
    python -m benchmarks.convergence_jax --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fewbit_design as fd
from fewbit_design._atomic import atomic_write
from fewbit_design.jax import fewbit_activation

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "convergence_jax.json")
FULL = {"seeds": (0, 1, 2), "epochs": 40, "batch": 64, "hidden": 128, "bits": 3}
QUICK = {"seeds": (0,), "epochs": 3, "batch": 64, "hidden": 32, "bits": 3}


def digits_data():
    """(x_train, y_train, x_val, y_val), pixels in [0, 1]; the split of benchmarks/convergence.py."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return (np.asarray(x_tr, np.float32), np.asarray(y_tr, np.int32),
            np.asarray(x_va, np.float32), np.asarray(y_va, np.int32))


def init_mlp(key, hidden: int):
    """64 -> hidden -> hidden -> 10, torch.nn.Linear's default init (uniform ±1/sqrt(fan_in))."""
    sizes = [(64, hidden), (hidden, hidden), (hidden, 10)]
    params = []
    for k, (fan_in, fan_out) in zip(jax.random.split(key, len(sizes)), sizes):
        kw, kb = jax.random.split(k)
        bound = 1.0 / math.sqrt(fan_in)
        params.append((jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
                       jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)))
    return params


def mlp(params, x, act):
    for w, b in params[:-1]:
        x = act(x @ w + b)                                                 # (B, hidden)
    w, b = params[-1]
    return x @ w + b                                                       # (B, 10)


def cross_entropy(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(seed: int, act, plan: dict, data) -> dict:
    x_tr, y_tr, x_va, y_va = data
    per_epoch = math.ceil(len(x_tr) / plan["batch"])
    steps = plan["epochs"] * per_epoch
    # linear warm-up over one epoch, then cosine decay to 10 % of the peak (as convergence.py)
    sched = optax.warmup_cosine_decay_schedule(0.0, 3e-3, per_epoch, steps, end_value=3e-4)
    opt = optax.adamw(sched, weight_decay=0.01)
    params = init_mlp(jax.random.PRNGKey(seed), plan["hidden"])
    state = opt.init(params)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x_tr)) for _ in range(plan["epochs"])])

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(mlp(p, x, act), y))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    @jax.jit
    def evaluate(params):
        logits = mlp(params, x_va, act)
        return cross_entropy(logits, y_va), jnp.mean(jnp.argmax(logits, -1) == y_va)

    train_loss = []
    for i in range(steps):
        e, j = divmod(i, per_epoch)
        idx = order[e * len(x_tr):(e + 1) * len(x_tr)][j * plan["batch"]:(j + 1) * plan["batch"]]
        params, state, loss = step(params, state, x_tr[idx], y_tr[idx])
        train_loss.append(float(loss))
        if not math.isfinite(train_loss[-1]):
            raise FloatingPointError(f"training loss is {train_loss[-1]} at step {i}")
    val_loss, val_acc = evaluate(params)
    return {"final_val_loss": float(val_loss), "final_val_acc": float(val_acc),
            "final_train_loss_last_epoch": float(np.mean(train_loss[-per_epoch:])),
            "train_loss_per_epoch": [float(np.mean(train_loss[e * per_epoch:(e + 1) * per_epoch]))
                                     for e in range(plan["epochs"])], "first_loss": train_loss[0]}


def run(plan: dict) -> dict:
    data = digits_data()
    table = fd.shipped_table("silu", plan["bits"])
    acts = {"exact": jax.nn.silu, f"fewbit-{plan['bits']}bit": lambda h: fewbit_activation(h, table)}
    runs, per_seed = {name: {} for name in acts}, []
    t0 = time.perf_counter()
    for seed in plan["seeds"]:
        for name, act in acts.items():
            runs[name][str(seed)] = train(seed, act, plan, data)
        ex, fb = (runs[n][str(seed)] for n in acts)
        assert ex["first_loss"] == fb["first_loss"], "configurations start from different losses"
        per_seed.append({"seed": seed, "exact_val_loss": ex["final_val_loss"], "fewbit_val_loss": fb["final_val_loss"],
                         "val_loss_ratio": fb["final_val_loss"] / ex["final_val_loss"],
                         "exact_val_acc": ex["final_val_acc"], "fewbit_val_acc": fb["final_val_acc"],
                         "exact_train_loss": ex["final_train_loss_last_epoch"],
                         "fewbit_train_loss": fb["final_train_loss_last_epoch"],
                         "train_loss_ratio": fb["final_train_loss_last_epoch"] / ex["final_train_loss_last_epoch"]})
    ratios = np.array([r["val_loss_ratio"] for r in per_seed])
    summary = {"val_loss_ratio_mean": float(ratios.mean()),
               "train_loss_ratio_mean": float(np.mean([r["train_loss_ratio"] for r in per_seed])),
               "exact_val_loss_mean": float(np.mean([r["exact_val_loss"] for r in per_seed])),
               "fewbit_val_loss_mean": float(np.mean([r["fewbit_val_loss"] for r in per_seed])),
               "val_loss_mean_within_1_percent": bool(abs(ratios.mean() - 1.0) <= 0.01),
               "val_loss_every_seed_within_1_percent": bool(np.all(np.abs(ratios - 1.0) <= 0.01))}
    return {"task": "digits MLP (SiLU), benchmarks/convergence.py's split and schedule, in JAX",
            "table": f"fd.shipped_table('silu', {plan['bits']}) (normal:0,1, {table.partition})",
            "optimizer": "optax.adamw(lr 3e-3 peak, weight_decay 0.01), 1 warm-up epoch, cosine to 3e-4",
            "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
            "per_seed": per_seed, "summary": summary, "seconds": round(time.perf_counter() - t0, 1),
            "environment": {"jax": jax.__version__, "optax": optax.__version__, "backend": jax.default_backend(),
                            "python": platform.python_version(), "machine": platform.machine()},
            "train_loss_per_epoch": {name: {s: r["train_loss_per_epoch"] for s, r in by_seed.items()}
                                     for name, by_seed in runs.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 3 epochs; writes to a temporary file unless --out")
    ap.add_argument("--out", help=f"output JSON (default {os.path.relpath(DEFAULT_OUT)} for a full run)")
    args = ap.parse_args(argv)
    out = args.out or (os.path.join(tempfile.gettempdir(), "convergence_jax_quick.json") if args.quick else DEFAULT_OUT)
    result = run(QUICK if args.quick else FULL)
    atomic_write(out, json.dumps(result, indent=1) + "\n")
    print("| seed | exact val loss | 3-bit val loss | ratio | exact acc | 3-bit acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in result["per_seed"]:
        print(f"| {r['seed']} | {r['exact_val_loss']:.4f} | {r['fewbit_val_loss']:.4f} | {r['val_loss_ratio']:.4f} "
              f"| {100 * r['exact_val_acc']:.2f} | {100 * r['fewbit_val_acc']:.2f} |")
    s = result["summary"]
    print(f"mean val-loss ratio {s['val_loss_ratio_mean']:.4f} (train-loss ratio {s['train_loss_ratio_mean']:.4f}); "
          f"{result['seconds']} s; written to {out}")


if __name__ == "__main__":
    main()
