"""Render the measured figures of README.md and docs/ from the committed results.

Every table or sentence with a measured number sits between two markers in the markdown,

    <!-- report:NAME -->
    ...rendered text...
    <!-- /report -->

and is rendered here from benchmarks/results/ (the JSON of memory_models, convergence and output_tables,
the text outputs of cpu_runtime). No figure is copied by hand:

    python -m benchmarks.report            # re-render every block in place (atomic writes)
    python -m benchmarks.report --check    # exit 1 if any block differs from its rendering

tests/test_docs.py runs the check. Needs only the standard library (no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CPU = RESULTS / "cpu_runtime"
BLOCK = re.compile(r"(<!-- report:([a-z_]+) -->\n)(.*?)(<!-- /report -->)", re.S)


def documents() -> list[pathlib.Path]:
    """The markdown files that may hold blocks: README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ memory (memory_models)

MEMORY_FILES = ("memory_models.json", "memory_models_compile.json", "memory_models_gated.json")
ROWS = ("native", "few-bit 1 bit", "few-bit 2 bit", "few-bit 3 bit", "few-bit 4 bit",
        "checkpoint MLP", "few-bit 3 bit + checkpoint MLP")
REGIMES = ("trainable", "lora", "compile")


def _memory() -> dict:
    by = {}
    for name in MEMORY_FILES:
        for r in _json(name)["results"]:
            by[(r["model"], r["row"], r["regime"])] = r
    return by


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def _saved(by, model, row, regime) -> str:
    r, native = by.get((model, row, regime)), by.get((model, "native", regime))
    if r is None:
        return "not run"
    return f"{_mib(r['saved_bytes'])} ({r['saved_bytes'] / native['saved_bytes']:.3f})"


def memory_headline() -> str:
    by = _memory()
    models = list(dict.fromkeys(m for m, _, _ in by))
    out = ["| model (bfloat16, 2 layers, batch 4 × 128 tokens) | native, trainable | 3-bit, trainable (× native) "
           "| native, LoRA | 3-bit, LoRA (× native) |",
           "|---|---:|---:|---:|---:|"]
    for m in models:
        out.append(f"| {m} | {_mib(by[(m, 'native', 'trainable')]['saved_bytes'])} MiB "
                   f"| {_saved(by, m, 'few-bit 3 bit', 'trainable')} "
                   f"| {_mib(by[(m, 'native', 'lora')]['saved_bytes'])} MiB "
                   f"| {_saved(by, m, 'few-bit 3 bit', 'lora')} |")
    return "\n".join(out)


def memory_models() -> str:
    by = _memory()
    models = list(dict.fromkeys(m for m, _, _ in by))
    out = ["| model | row | trainable saved MiB (× native) | lora saved MiB (× native) "
           "| compile saved MiB (× native) | codes = b·ceil(n/8) |",
           "|---|---|---:|---:|---:|---|"]
    for m in models:
        for row in ROWS:
            rs = [by[(m, row, g)] for g in REGIMES if (m, row, g) in by]
            ok = all(r["code_bytes"] == r["expected_code_bytes"] for r in rs)
            check = "–" if row == "native" else ("NO" if not ok else ("none kept" if "checkpoint" in row else "yes"))
            out.append(f"| {m} | {row} | " + " | ".join(_saved(by, m, row, g) for g in REGIMES) + f" | {check} |")
    return "\n".join(out)


def memory_setup() -> str:
    d = _json("memory_models.json")
    failed = [name for name in MEMORY_FILES if _json(name)["compile_errors"]]
    return (f"torch {d['machine']['torch']}, {d['device']}, {d['dtype']}, {d['layers']} layers of the published "
            f"width, batch {d['batch']}, {d['seq']} tokens ({d['image']}px images for ViT); "
            f"compile failures recorded: {', '.join(failed) if failed else 'none'}.")


# ------------------------------------------------------------------ convergence

TASKS = {"lm": "byte GPT, stdlib source (GELU)", "digits": "digits MLP (SiLU)"}


def convergence() -> str:
    d = _json("convergence.json")
    out = [f"torch {d['machine']['torch']}; {len(d['plan']['seeds'])} seeds {d['plan']['seeds']}; "
           "final validation loss and accuracy, mean ± sample std over seeds", "",
           "| task | activations | val loss | vs exact | val accuracy |", "|---|---|---:|---:|---:|"]
    for task, label in TASKS.items():
        for cfg, s in d["summary"][task].items():
            out.append(f"| {label} | {cfg} | {s['val_loss_mean']:.4f} ± {s['val_loss_std']:.4f} "
                       f"| {100 * s['val_loss_vs_exact']:+.2f} % "
                       f"| {100 * s['val_acc_mean']:.2f} ± {100 * s['val_acc_std']:.2f} % |")
    return "\n".join(out)


def convergence_summary() -> str:
    s = _json("convergence.json")["summary"]

    def rel(cfgs):
        return [100 * s[t][c]["val_loss_vs_exact"] for t in TASKS for c in cfgs]

    hi = rel(["3 bit", "4 bit"])
    lo = rel(["1 bit", "2 bit"])
    cal = rel(["calibrated 3 bit"])
    return (f"At 3 and 4 bits the mean final validation loss is within {max(map(abs, hi)):.2f} % of exact "
            f"training on both tasks (the goal was 1 %); at 1 and 2 bits it is {min(lo):+.2f} % to "
            f"{max(lo):+.2f} %. Calibrated 3-bit tables end {cal[0]:+.2f} % (language model) and "
            f"{cal[1]:+.2f} % (digits) from exact.")


# ------------------------------------------------------------------ CPU runtime (text outputs)

CPU_RUNS = (("full", "full run"), ("skip1", "`--skip-activations` #1"), ("skip2", "`--skip-activations` #2"),
            ("skip3", "`--skip-activations` #3"), ("skip4", "`--skip-activations` #4"),
            ("skip5", "`--skip-activations` #5"), ("default", "`--skip-activations --malloc default`"),
            ("preswap", "the commit before coding ahead of f(x) (95e380a), `--skip-activations`"),
            ("old", "the starting point of the CPU-path work (2c17c77, Python helper threads), `--skip-activations`"))
CURRENT = 7          # the first seven are the current code; the last two, earlier commits


def _rows(text: str, title: str) -> list[list[str]]:
    """The rows (cells) of the markdown table that follows the line starting with `title`."""
    part = text.split("\n" + title, 1)[1] if not text.startswith(title) else text[len(title):]
    lines = part.split("\n\n", 2)[1].splitlines()
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:] if ln.startswith("|")]


def _section(text: str, title: str) -> str:
    """The title line and the markdown table below it, as printed."""
    part = text.split("\n" + title, 1)[1] if not text.startswith(title) else text[len(title):]
    head, table = part.split("\n\n", 2)[:2]
    return title + head + "\n\n" + table.strip("\n")


def cpu_run(name: str) -> dict:
    text = (CPU / f"{name}.txt").read_text(encoding="utf-8")
    focus = {r[0]: r for r in _rows(text, "GELU forward + backward, 2^20 float32")}
    step = {r[0]: r for r in _rows(text, "Training step, char-level GPT")}
    n, b = focus["native"], focus["3 bit"]
    return {"native": n[1], "bit3": b[1], "medians": b[3], "mins": b[4], "per_round": b[5],
            "faults": f"{n[6]} / {b[6]}", "step": step["3-bit GELU"][2], "head": text.splitlines()[0]}


def cpu_runs() -> str:
    out = ["| run | native, median [20 %, 80 %] | 3 bit, median [20 %, 80 %] | vs native (medians) "
           "| vs native (median of per-round ratios [20 %, 80 %]) | vs native (mins) "
           "| page faults per call (native / 3 bit) | training step, 3-bit vs exact |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in CPU_RUNS:
        r = cpu_run(name)
        out.append(f"| {label} (`{name}.txt`) | {r['native']} | {r['bit3']} | {r['medians']} | {r['per_round']} "
                   f"| {r['mins']} | {r['faults']} | {r['step']} |")
    return "\n".join(out)


def _ratios():
    runs = [cpu_run(n) for n, _ in CPU_RUNS]
    per_round = [float(r["per_round"].split()[0]) for r in runs]
    steps = [float(r["step"]) for r in runs]
    return per_round, steps


def cpu_summary() -> str:
    per_round, steps = _ratios()
    cur = per_round[:CURRENT]
    met = sum(x <= 1.3 for x in cur)
    return (f"GELU forward + backward on 2^20 float32 elements, 3 bits: the median of per-round ratios to native "
            f"is {min(cur):.2f}–{max(cur):.2f}× over the {CURRENT} runs of the current code (goal at most 1.3×: "
            f"met in {met} of {CURRENT}), where the starting point of the CPU-path work (a pool of Python "
            f"threads) gave {per_round[-1]:.2f}×. A training step of the small transformer with 3-bit GELU is "
            f"{min(steps[:CURRENT]):.3f}–{max(steps[:CURRENT]):.3f}× the exact one in those runs.")


def cpu_machine() -> str:
    return f"`full.txt`: {cpu_run('full')['head']}"


def cpu_breakdown() -> str:
    return _section((CPU / "full.txt").read_text(encoding="utf-8"), "Where the time goes")


def cpu_per_call() -> str:
    return _section((CPU / "full.txt").read_text(encoding="utf-8"), "Cost per call on 1024")


def cpu_training() -> str:
    return _section((CPU / "full.txt").read_text(encoding="utf-8"), "Training step, char-level GPT")


def _activation_rows() -> list[list[str]]:
    text = (CPU / "full.txt").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.startswith("| gelu |") or ln.startswith("| silu |")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def cpu_activations() -> str:
    rows = [r for r in _activation_rows() if r[3] == "forward+backward"]
    variants = list(dict.fromkeys(r[4] for r in rows if r[4] != "native"))
    out = ["| activation | dtype | n | native | " + " | ".join(variants) + " |",
           "|---|---|---:|---:|" + "---:|" * len(variants)]
    for key in dict.fromkeys((r[0], r[1], r[2]) for r in rows):
        cells = {r[4]: r for r in rows if (r[0], r[1], r[2]) == key}
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | {cells['native'][5]} | "
                   + " | ".join(f"{cells[v][6]}×" for v in variants) + " |")
    return "\n".join(out)


def cpu_activations_summary() -> str:
    rows = [r for r in _activation_rows() if r[3] == "forward+backward"]

    def span(act, variants):
        xs = [float(r[6]) for r in rows if r[0] == act and r[4] in variants]
        return f"{min(xs):.2f}–{max(xs):.2f}×"

    low = ("1 bit", "2 bit", "3 bit", "4 bit")
    torch_path = [float(r[6]) for r in rows if r[4] == "3 bit, torch path"]
    eight = [float(r[6]) for r in rows if r[4] == "8 bit"]
    return (f"In the full run, forward plus backward at 1–4 bits is {span('gelu', low)} native for GELU and "
            f"{span('silu', low)} for SiLU (float32 and bfloat16, 2^16 to 2^24 elements), against "
            f"{min(torch_path):.1f}–{max(torch_path):.1f}× for the plain torch path at 3 bits; 8 bits is the slow "
            f"corner ({min(eight):.2f}–{max(eight):.2f}×).")


# ------------------------------------------------------------------ JAX (convergence_jax)

def convergence_jax() -> str:
    """The JAX digits run: per seed exact vs 3-bit, and the means, from convergence_jax.json."""
    r = _json("convergence_jax.json")
    lines = [f"Results in `benchmarks/results/convergence_jax.json` (jax {r['environment']['jax']}, "
             f"{r['environment']['backend'].upper()}):", "",
             "| seed | exact val loss | 3-bit val loss | ratio | exact acc | 3-bit acc |", "|---|---:|---:|---:|---:|---:|"]
    for s in r["per_seed"]:
        lines.append(f"| {s['seed']} | {s['exact_val_loss']:.4f} | {s['fewbit_val_loss']:.4f} | {s['val_loss_ratio']:.4f} | "
                     f"{100 * s['exact_val_acc']:.2f} | {100 * s['fewbit_val_acc']:.2f} |")
    m = r["summary"]
    train = ", ".join(f"{s['train_loss_ratio']:.3f}" for s in r["per_seed"])
    lines += ["", f"Mean validation-loss ratio {m['val_loss_ratio_mean']:.4f} "
              f"({'within' if m['val_loss_mean_within_1_percent'] else 'NOT within'} 1 % of exact). The training loss "
              f"of the last epoch is {100 * (m['train_loss_ratio_mean'] - 1):.1f} % higher on average (ratios {train})."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ output tables (output_tables)

def _output_rows() -> dict:
    return {(r["activation"], r["dtype"]): r for r in _json("output_tables.json")["results"]}


def output_tables() -> str:
    d = _json("output_tables.json")
    rows = _output_rows()
    out = [f"N(0, 1), default {d['defaults']['pieces']} pieces of degree {d['defaults']['degree']} per branch; "
           "relative error E / ∫ w f'² by the independent quadrature, with g on y in the dtype "
           "(the floor, f'∘f⁻¹ on the same y, in brackets)", "",
           "| activation | branch bits | t | y exact | float32 y | float16 y | bfloat16 y |",
           "|---|---:|---|---:|---:|---:|---:|"]
    for name in dict.fromkeys(a for a, _ in rows):
        r = rows[(name, "float32")]
        if "refused" in r:
            out.append(f"| {name} | refused | | | | | |")
            continue
        t = " / ".join("y" if p == 1 else f"{'sqrt' if p == 2 else 'cbrt' if p == 3 else f'root {p}'}"
                       for p in r["powers"])
        cells = [f"{rows[(name, dt)]['independent']['rounded']:.2e} ({rows[(name, dt)]['independent']['floor']:.2e})"
                 for dt in d["dtypes"]]
        out.append(f"| {name} | {r['branch_bits']} | {t} | {r['independent']['relative']:.2e} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def output_tables_summary() -> str:
    d = _json("output_tables.json")
    rows = [r for r in d["results"] if "refused" not in r]
    named = [r for r in rows if r["activation"] in d["must_show"]]
    names = ", ".join(d["must_show"])
    worst = {dt: max(r["independent"]["rounded"] for r in named if r["dtype"] == dt) for dt in d["dtypes"]}
    bounds_met = all(r["within_bound"] for r in named)
    others = sorted({r["activation"] for r in rows if r["branch_bits"] == 1} - set(d["must_show"]))
    ratio = max(r["independent"]["rounded"] / r["target"] for r in rows)
    mono = {r["activation"] for r in rows if r["branch_bits"] == 0}
    mono_ok = all(r["within_target"] for r in rows if r["branch_bits"] == 0)
    over = [f"{r['activation']} {r['dtype']}" for r in rows if not r["within_target"]]
    return (f"With one branch bit, for {names}, the largest independent error is {worst['float32']:.2e} for float32 y, "
            f"{worst['float16']:.2e} for float16 and {worst['bfloat16']:.2e} for bfloat16 (bounds "
            f"{d['bounds']['float32']:g}, {d['bounds']['float16']:g}, {d['bounds']['bfloat16']:g}: "
            f"{'all met' if bounds_met else 'NOT all met'}); {', '.join(others) or 'no other'} also "
            f"{'takes' if len(others) == 1 else 'take'} one branch bit. The "
            f"{len(mono)} monotone activations, with 0 branch bits, are {'all' if mono_ok else 'NOT all'} within "
            f"max(2 · floor, 1e-9); over all rows the largest error / max(2 · floor, 1e-9) is {ratio:.3f}"
            + (f"; over it: {', '.join(over)}." if over else ".") + f" The full run took {d['seconds']:.0f} s.")


def output_tables_sweep() -> str:
    d = _json("output_tables.json")
    degrees = sorted({s["degree"] for s in d["sweep"]})
    out = ["| pieces per branch | " + " | ".join(f"degree {g}" for g in degrees) + " |",
           "|---:|" + "---:|" * len(degrees)]
    by = {(s["pieces"], s["degree"]): max(s["relative"].values()) for s in d["sweep"]}
    for pieces in sorted({s["pieces"] for s in d["sweep"]}):
        out.append(f"| {pieces} | " + " | ".join(f"{by[(pieces, g)]:.1e}" for g in degrees) + " |")
    c = d["choice"]["chosen"]
    return "\n".join(out) + (f"\n\nRule: {d['choice']['rule']}; chosen: {c['pieces']} pieces of degree {c['degree']}"
                             f" (the defaults used above: {d['defaults']['pieces']} of degree {d['defaults']['degree']}).")


BLOCKS = {f.__name__: f for f in (memory_headline, memory_models, memory_setup, convergence, convergence_summary,
                                  convergence_jax, cpu_runs, cpu_summary, cpu_machine, cpu_breakdown, cpu_per_call, cpu_training,
                                  cpu_activations, cpu_activations_summary,
                                  output_tables, output_tables_summary, output_tables_sweep)}


# ------------------------------------------------------------------ the files

def render(text: str) -> str:
    """`text` with every block re-rendered; an unknown block name raises KeyError."""
    return BLOCK.sub(lambda m: m.group(1) + BLOCKS[m.group(2)]().rstrip("\n") + "\n" + m.group(4), text)


def _write_atomic(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="report blocks that differ; write nothing")
    args = p.parse_args(argv)
    stale = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                _write_atomic(path, new)
    for s in stale:
        print(f"{s}: {'out of date' if args.check else 'rendered'}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
