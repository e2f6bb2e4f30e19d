"""Memory and time per training step of real architectures: native, few-bit, checkpointing.

BERT-base (GELU), GPT-2 small (gelu_new, i.e. tanh GELU) and ViT-base/16 (GELU), and on
request (``--models smollm-135m``) SmolLM-135M, a Llama with a gated SiLU MLP, built with
transformers from their configs (hidden size, heads, MLP size, vocabulary as published),
randomly initialised, nothing downloaded, in bfloat16, dropout off. To keep the run to
minutes on 2 CPU cores the models have ``--layers`` transformer layers (default 2) of the
published width; every layer is identical, so per-layer figures hold for the 12-layer models.

Rows: native activations; few-bit at 1-4 bits (``fewbit_design.torch.convert``); MLP
recomputation (``torch.utils.checkpoint`` around up-projection, activation and
down-projection of every layer); few-bit at 3 bits inside the same checkpoint.
Regimes: all weights trainable; LoRA on attention (peft, r=8 on the query and value
projections; GPT-2: its fused c_attn), everything else frozen; all weights trainable under ``torch.compile``
(each transformer layer compiled, inductor).

Saved bytes: the distinct storages that autograd keeps from forward to backward
(torch.autograd.graph.saved_tensors_hooks, parameters excluded), plus the inputs that a
checkpoint keeps for its recomputation. "codes" are the uint8 storages other than the
level-set tables' code maps (a compiled graph saves the code map it reads, once per table; the
few-bit codes are the only other uint8 storages here); they are checked against b*ceil(n/8)
per activation call.

    python -m benchmarks.memory_models [--layers 2 --batch 4 --seq 128 --repeat 2]
    python -m benchmarks.memory_models --show benchmarks/results/memory_models*.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import fewbit_design.torch as ft
from fewbit_design._atomic import atomic_write

from benchmarks._harness import is_default_run, results_path

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = ("native", "few-bit 1 bit", "few-bit 2 bit", "few-bit 3 bit", "few-bit 4 bit",
        "checkpoint MLP", "few-bit 3 bit + checkpoint MLP")
REGIMES = ("trainable", "lora", "compile")
CKPT_BITS = 3


# ----------------------------------------------------------------------------- models

def build(name: str, layers: int, image: int = 224):
    """(model, LoRA target module names, function batch -> model inputs) for one architecture."""
    import transformers as tr
    if name == "bert-base":
        cfg = tr.BertConfig(num_hidden_layers=layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return tr.BertModel(cfg, add_pooling_layer=False), ["query", "value"], "ids"
    if name == "gpt2-small":
        cfg = tr.GPT2Config(n_layer=layers, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return tr.GPT2Model(cfg), ["c_attn"], "ids"
    if name == "vit-base":
        cfg = tr.ViTConfig(num_hidden_layers=layers, image_size=image, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)
        model = tr.ViTModel(cfg, add_pooling_layer=False)
        targets = ["q_proj", "v_proj"] if hasattr(model.get_submodule(_layers(model)[0]), "mlp") else ["query", "value"]
        return model, targets, "pixels"
    if name == "smollm-135m":  # HuggingFaceTB/SmolLM-135M's config: a Llama with a gated SiLU MLP (SwiGLU)
        cfg = tr.LlamaConfig(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                             num_hidden_layers=layers, vocab_size=49152, tie_word_embeddings=True)
        return tr.LlamaModel(cfg), ["q_proj", "v_proj"], "ids"
    raise ValueError(name)


MODELS = ("bert-base", "gpt2-small", "vit-base", "smollm-135m")
DEFAULT_MODELS = MODELS[:3]
LAYER_TYPES = ("BertLayer", "GPT2Block", "ViTLayer", "LlamaDecoderLayer")


def _layers(model) -> list[str]:
    return [n for n, m in model.named_modules() if type(m).__name__ in LAYER_TYPES]


class Recompute(nn.Module):
    """Runs `inner` under torch.utils.checkpoint; reports its inputs (kept for the recomputation)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.held = None  # callback(tensor) while counting saved bytes (eager only)

    def forward(self, x):
        if self.held is not None and not torch.compiler.is_compiling():
            self.held(x)
        return checkpoint(self.inner, x, use_reentrant=False)


class _BertMLP(nn.Module):
    """BERT's up-projection + activation (BertIntermediate) and down-projection in one module."""

    def __init__(self, intermediate: nn.Module, down: nn.Linear):
        super().__init__()
        self.intermediate, self.down = intermediate, down

    def forward(self, x):
        return self.down(self.intermediate(x))


def recompute_mlps(model) -> None:
    """Wrap every layer's MLP (up, activation, down) in a Recompute, in place."""
    for name in _layers(model):
        layer = model.get_submodule(name)
        if hasattr(layer, "mlp"):                       # GPT-2, ViT (transformers 5)
            layer.mlp = Recompute(layer.mlp)
        else:                                           # BERT: down-projection moved inside
            layer.intermediate = Recompute(_BertMLP(layer.intermediate, layer.output.dense))
            layer.output.dense = nn.Identity()          # BertOutput: LayerNorm(h + residual)


def prepare(name: str, row: str, regime: str, layers: int, image: int, dtype) -> tuple[nn.Module, str]:
    torch.manual_seed(0)
    model, targets, kind = build(name, layers, image)
    if row.startswith("few-bit"):
        ft.convert(model, bits=int(row.split()[1]))
    if regime == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    if "checkpoint" in row:
        recompute_mlps(model)
    return model.to(dtype).train(), kind


def activation_calls(model, batch) -> list:
    """(bits, elements) of every few-bit activation call in one forward."""
    calls = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: calls.append((mod.bits, args[0].numel())))
             for m in model.modules() if isinstance(m, ft.FewbitActivation)]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return calls


def inputs(kind: str, batch: int, seq: int, image: int, dtype, device):
    g = torch.Generator().manual_seed(1)
    if kind == "ids":
        return {"input_ids": torch.randint(0, 30000, (batch, seq), generator=g).to(device)}
    return {"pixel_values": torch.randn(batch, 3, image, image, generator=g).to(device, dtype)}


# ----------------------------------------------------------------------------- measurement

def step(model, batch) -> None:
    out = model(**batch).last_hidden_state
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)


def _code_maps(model) -> list:
    """The level-set tables' interval -> code maps (uint8), one per few-bit module: a compiled
    graph saves the code map it reads (as a graph constant, a copy), but that is per table, not
    per call, so it is not counted as codes."""
    return [torch.from_numpy(m.table.codes.astype("uint8")) for m in model.modules()
            if isinstance(m, ft.FewbitActivation) and m.table.partition == "levelset"]


def count_saved(model, batch) -> dict:
    """Distinct non-parameter storages kept for backward during one forward: all, and the
    few-bit codes (the uint8 storages other than the tables' code maps)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, maps = {}, _code_maps(model)

    def is_code_map(t):
        return any(t.shape == m.shape and torch.equal(t.detach().cpu(), m) for m in maps)

    def keep(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen.setdefault(s.data_ptr(), (s.nbytes(), t.dtype == torch.uint8 and not is_code_map(t)))
        return t

    recomputes = [m for m in model.modules() if isinstance(m, Recompute)]
    for m in recomputes:
        m.held = keep
    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = model(**batch).last_hidden_state.float().square().mean()
    finally:
        for m in recomputes:
            m.held = None
    out.backward()  # the graph is used and freed as in training
    model.zero_grad(set_to_none=True)
    return {"saved": sum(n for n, _ in seen.values()),
            "codes": sum(n for n, code in seen.values() if code)}


def measure(name, row, regime, args, dtype, device) -> dict:
    model, kind = prepare(name, row, regime, args.layers, args.image, dtype)
    model.to(device)
    batch = inputs(kind, args.batch, args.seq, args.image, dtype, device)
    calls = activation_calls(model, batch)  # eager: module hooks do not run inside compiled code
    t0 = time.perf_counter()
    if regime == "compile":
        torch._dynamo.reset()  # every row compiles afresh: no recompile limit carried over from earlier rows
        for layer in _layers(model):
            model.get_submodule(layer).compile()
        step(model, batch)  # compiles forward and backward
    first = time.perf_counter() - t0
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    counted = count_saved(model, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        step(model, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # checkpointed codes are recomputed in backward, not kept
    expected = sum(b * math.ceil(n / 8) for b, n in calls) if "checkpoint" not in row else 0
    return {"model": name, "row": row, "regime": regime, "saved_bytes": counted["saved"],
            "code_bytes": counted["codes"], "expected_code_bytes": expected,
            "activation_calls": len(calls), "activation_elements": sum(n for _, n in calls),
            "step_seconds": statistics.median(times), "step_seconds_all": times,
            "first_step_seconds": first if regime == "compile" else None,
            "peak_cuda_bytes": peak, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


# ----------------------------------------------------------------------------- report

def mib(n) -> str:
    return "–" if n is None else f"{n / 2**20:.1f}"


def table(results: list[dict]) -> str:
    """One markdown table: a line per (model, row), the regimes side by side."""
    regimes = [g for g in REGIMES if any(r["regime"] == g for r in results)]
    gpu = any(r["peak_cuda_bytes"] is not None for r in results)
    by = {(r["model"], r["row"], r["regime"]): r for r in results}
    head = "| model | row |" + "".join(f" {g} saved MiB (× native) |" for g in regimes)
    head += " codes = b·ceil(n/8) | step s (" + " / ".join(regimes) + ") |"
    head += " peak CUDA MiB |" if gpu else ""
    out = [head, "|---|---|" + "---:|" * len(regimes) + "---|---:|" + ("---:|" if gpu else "")]
    for model in dict.fromkeys(r["model"] for r in results):
        for row in ROWS:
            cells, ok, times, peaks = [], True, [], []
            for g in regimes:
                r, native = by.get((model, row, g)), by.get((model, "native", g))
                if r is None:
                    cells.append("not run")
                    times.append("–")
                    continue
                ratio = f" ({r['saved_bytes'] / native['saved_bytes']:.3f})" if native else ""
                cells.append(f"{mib(r['saved_bytes'])}{ratio}")
                ok &= r["code_bytes"] == r["expected_code_bytes"]
                times.append(f"{r['step_seconds']:.2f}")
                peaks.append(mib(r["peak_cuda_bytes"]))
            check = "–" if row == "native" or not peaks else ("yes" if ok else "NO")
            check = "none kept" if "checkpoint" in row and peaks and ok else check
            out.append(f"| {model} | {row} | " + " | ".join(cells) + f" | {check} | " + " / ".join(times) + " |"
                       + (f" {' / '.join(peaks)} |" if gpu else ""))
    return "\n".join(out)


def header(report: dict) -> str:
    return (f"torch {report['machine']['torch']}, {report['device']}, {report['dtype']}, {report['layers']} layers of "
            f"the published width, batch {report['batch']}, {report['seq']} tokens (BERT, GPT-2), {report['image']}px "
            f"(ViT, {(report['image'] // 16) ** 2 + 1} tokens); step = forward + backward, median of "
            f"{report['repeat']}, {report['threads']} threads")


def show(paths: list[str]) -> None:
    """Print one table from one or more JSON results (e.g. the eager and the compile run)."""
    results = []
    for path in paths:
        with open(path) as fh:
            report = json.load(fh)
        print(f"{os.path.basename(path)}: {header(report)}" + ("" if report["complete"] else " (incomplete run)"))
        for where, error in report["compile_errors"].items():
            print(f"torch.compile failed for {where}: {error}")
        results += report["results"]
    print()
    print(table(results))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2, help="transformer layers per model (default 2)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128, help="tokens per sequence for BERT and GPT-2")
    p.add_argument("--image", type=int, default=224, help="ViT image size (patch 16: (image/16)^2 + 1 tokens)")
    p.add_argument("--repeat", type=int, default=2, help="timed steps per row (median reported)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"any of {', '.join(MODELS)}")
    p.add_argument("--regimes", default=",".join(REGIMES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON results (default: benchmarks/results/memory_models.json for "
                   "a run with every default, else a temporary folder)")
    p.add_argument("--show", nargs="+", metavar="JSON", help="print the table of earlier runs and exit")
    a = p.parse_args(argv)
    if a.show:
        return show(a.show)
    models, regimes = a.models.split(","), a.regimes.split(",")
    for bad in [m for m in models if m not in MODELS] + [r for r in regimes if r not in REGIMES]:
        p.error(f"unknown model or regime {bad!r}")
    if min(a.layers, a.batch, a.seq, a.image, a.repeat, a.threads) < 1:
        p.error("--layers, --batch, --seq, --image, --repeat and --threads must be positive")
    # only the run with every default replaces the committed results
    a.out = results_path(a.out, os.path.join(HERE, "results", "memory_models.json"),
                         full_run=is_default_run(p, a, ignore=("threads",)))
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    results, compile_errors, t0 = [], {}, time.perf_counter()

    def write(results, compile_errors, complete):  # after every row, so that a long run leaves its part
        report = {
            "benchmark": "memory_models", "complete": complete, "dtype": str(dtype).removeprefix("torch."),
            "device": device.type, "layers": a.layers, "batch": a.batch, "seq": a.seq, "image": a.image,
            "repeat": a.repeat, "threads": a.threads, "compile_errors": compile_errors,
            "wall_seconds": time.perf_counter() - t0,
            "machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                        "platform": platform.platform(), "cpus": os.cpu_count()},
            "results": results,
        }
        atomic_write(a.out, json.dumps(report, indent=1) + "\n")

    for name in models:
        for regime in regimes:
            for row in ROWS:
                try:
                    r = measure(name, row, regime, a, dtype, device)
                except Exception as e:  # noqa: BLE001 - torch.compile may fail: record it, go on
                    if regime != "compile":
                        raise
                    compile_errors[f"{name} / {row}"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
                    print(f"torch.compile failed ({name}, {row}): {compile_errors[f'{name} / {row}']}", file=sys.stderr)
                    continue
                results.append(r)
                write(results, compile_errors, complete=False)
                print(f"{name:10s} {regime:9s} {row:32s} saved {mib(r['saved_bytes']):>8s} MiB  "
                      f"codes {mib(r['code_bytes']):>6s} MiB  step {r['step_seconds']:.2f} s", file=sys.stderr)
    write(results, compile_errors, complete=True)
    show([a.out])
    bad = [r for r in results if r["code_bytes"] != r["expected_code_bytes"]]
    if bad:
        raise SystemExit(f"saved code bytes differ from b*ceil(n/8) in {len(bad)} rows")


if __name__ == "__main__":
    main()
