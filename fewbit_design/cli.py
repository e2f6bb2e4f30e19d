"""The fewbit-design command line (front end of every step): parse, call one library function, echo."""

from __future__ import annotations

import os
import sys

import click

from ._version import __version__
from ._cli_util import InputError, handle_errors, silence_stdout
from .table import FORMATS, PARTITION_CHOICES, format_params, label

OUTPUT_FORMATS = ("text", *FORMATS)


class _Main(click.Group):
    """A group whose unknown first word is an activation: `fewbit-design gelu --bits 3`.

    Errors are one line on stderr (exit 2 for bad input), never a traceback.
    """

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["design", *args]
        return super().resolve_command(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"Error: {e.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:     # `fewbit-design list | head -1`: the reader has all it wants
            silence_stdout()
            sys.exit(0)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fewbit-design")
def main():
    """Design optimal few-bit tables for the backward pass of activations.

    \b
    Examples:
      fewbit-design gelu --bits 3
      fewbit-design silu --bits 2 --dist normal:0,2 --format json -o silu2.json
      fewbit-design elu --bits 4 --param alpha=0.5 --dist samples:acts.npy
      fewbit-design list
    """


def run(argv=None) -> None:
    """Console-script entry: run main, then leave without tearing the interpreter down.

    With numba and LLVM loaded, interpreter teardown takes ~0.3 s, a third of a design's wall
    time, and does nothing for us: main has closed every file it wrote and joined its worker
    processes, and stdout and stderr are flushed here. So exit with os._exit. Calls of main
    from Python (tests, CliRunner) are unaffected.
    """
    try:
        main(argv, prog_name="fewbit-design")
        code = 0
    except SystemExit as e:
        code = e.code
    if code is None:
        code = 0
    elif not isinstance(code, int):   # what the interpreter does with sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:   # a closed pipe (`| head`): nothing more can be said
            pass
        except (OSError, ValueError) as e:   # e.g. a full disk under `> file`: say so, fail
            try:
                os.write(2, f"Error: cannot write output: {e}\n".encode())
            except OSError:
                pass
            code = code or 1
    os._exit(code)


@main.command("design")
@click.argument("activation")
@click.option("-b", "--bits", type=int, required=True, help="Code width, 1..8 (2**bits levels).")
@click.option("-d", "--dist", "dist", default="normal:0,1", show_default=True,
              help="Input distribution: normal[:mean,std], uniform:a,b, laplace[:loc,scale], "
                   "logistic[:loc,scale], t:df[,loc,scale], samples:FILE.")
@click.option("-p", "--param", "params", multiple=True, metavar="K=V",
              help="Activation parameter, e.g. --param alpha=0.2 (repeatable).")
@click.option("--partition", type=click.Choice(PARTITION_CHOICES), default="auto",
              show_default=True, help="contiguous: one interval per code; levelset: a code may "
                                      "cover several intervals; auto: the better of the two.")
@click.option("--grid", type=int, default=None, help="Core grid cells for the DP [default: 1024].")
@click.option("-f", "--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None,
              help="Output format [default: from -o's extension, else text].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the table to this file (atomically) instead of stdout.")
@handle_errors
def design_cmd(activation, bits, dist, params, partition, grid, fmt, output):
    """Design the optimal BITS-bit table for ACTIVATION's derivative.

    \b
    Examples:
      fewbit-design gelu --bits 3
      fewbit-design tanh -b 2 --partition contiguous
      fewbit-design leaky_relu -b 1 --param negative_slope=0.2
      fewbit-design gelu -b 4 --dist uniform:-10,10 -o gelu4.json
      fewbit-design mymod:myact -b 2          # custom numpy activation
    """
    from .activations import parse_params
    from .designer import design

    with _Heartbeat(f"designing {activation[:60]} at {bits} bits"):
        table = design(activation, bits, distribution=dist, params=parse_params(params),
                       partition=partition, grid=grid)
    if output and table.distribution == "samples" and not os.path.isabs(table.dist_params["path"]):
        # the samples path, relative to the table's folder: where check looks for it
        import dataclasses
        rel = os.path.relpath(os.path.abspath(table.dist_params["path"]),
                              os.path.dirname(os.path.abspath(output)))
        table = dataclasses.replace(table, dist_params={**table.dist_params, "path": rel})
    _emit(table, fmt, output)


class _Heartbeat:
    """Say on stderr, every few seconds, that a long design is still running."""

    def __init__(self, what: str, first: float = 2.0, every: float = 5.0):
        import threading
        import time

        self.what, self.first, self.every, self.time = what, first, every, time
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = self.time.perf_counter()
        wait = self.first
        while not self.stop.wait(wait):
            click.echo(f"{self.what}: {self.time.perf_counter() - t0:.0f} s ...", err=True)
            wait = self.every

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _emit(table, fmt, output):
    from . import formats

    if fmt is None:
        fmt = formats.format_from_path(output) if output else "text"
    elif output and fmt != "text":
        try:
            implied = formats.format_from_path(output)
        except Exception:
            implied = None
        if implied is not None and implied != fmt:
            click.echo(f"warning: {output}: writing {fmt} although the extension says {implied}", err=True)
    if fmt == "text":
        data = format_text(table).encode()
    else:
        data = formats.dumps(table, fmt)
    if output:
        from ._atomic import atomic_write

        atomic_write(output, data)
        click.echo(f"wrote {output} ({fmt}, relative error {table.relative_error:.4g})", err=True)
    elif fmt in ("npz",):
        raise InputError("npz is binary: give -o FILE")
    else:
        click.echo(data.decode(), nl=not data.endswith(b"\n"))


def _dist_spec(table) -> str:
    """The table's weight as a --dist spec that can be pasted back (shortest exact floats)."""
    p = table.dist_params
    if table.distribution == "samples":
        return f"samples:{p.get('path', '?')}"
    vals = [repr(float(v)) for v in p.values()]
    vals = [v[:-2] if v.endswith(".0") else v for v in vals]
    return f"{table.distribution}:{','.join(vals)}" if vals else table.distribution


def format_text(table) -> str:
    """A readable table: header, error, then one row per interval."""
    lines = [
        f"{label(table.activation, table.params)}: {table.bits}-bit {table.partition} table "
        f"for inputs ~ {_dist_spec(table)}",
        f"relative error {table.relative_error:.6e}   (mse {table.mse:.6e})",
    ]
    other = table.solver.get("alternatives", {})
    for name, rel in other.items():
        ratio = f", {rel / table.relative_error:.4g}x the chosen" if table.relative_error > 0 else ""
        lines.append(f"  {name} partition: relative error {rel:.6e}{ratio}")
    lines.append(f"{len(table.levels)} levels, {table.n_intervals} intervals")
    lines.append("")
    lines.append(f"{'interval':>8}  {'from':>22}  {'to':>22}  {'code':>4}  {'level':>22}")
    edges = [-float("inf"), *table.boundaries.tolist(), float("inf")]
    for i, c in enumerate(table.codes.tolist()):
        lines.append(f"{i:>8}  {edges[i]:>22.15g}  {edges[i + 1]:>22.15g}  {c:>4}  {table.levels[c]:>22.15g}")
    return "\n".join(lines) + "\n"


@main.command("calibrate")
@click.argument("acts", type=click.Path(dir_okay=False))
@click.option("-a", "--activation", required=True, help="The layers' activation (registry name).")
@click.option("-b", "--bits", type=int, default=3, show_default=True, help="Code width of every table, 1..8.")
@click.option("--budget-bits", type=float, default=None,
              help="Average bits per element in [1, 8]: choose bits per layer (exact DP) instead of --bits.")
@click.option("-w", "--weights", "weights", type=click.Path(dir_okay=False), default=None,
              help=".npz with the same layer names: one weight per input (e.g. g², the output gradient squared).")
@click.option("-p", "--param", "params", multiple=True, metavar="K=V",
              help="Activation parameter, e.g. --param alpha=0.2 (repeatable).")
@click.option("--partition", type=click.Choice(PARTITION_CHOICES), default="auto",
              show_default=True, help="Table form per layer; auto: the better of the two.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the bundle (JSON, for convert(model, tables=...)) here, atomically.")
@handle_errors
def calibrate_cmd(acts, activation, bits, budget_bits, weights, params, partition, output):
    """Design one table per layer from saved activation inputs (ACTS: .npz, one array per layer).

    \b
    Examples:
      fewbit-design calibrate acts.npz --activation gelu --bits 3 -o bundle.json
      fewbit-design calibrate acts.npz -a gelu --budget-bits 2.5 -w g2.npz -o bundle.json
    """
    from .activations import parse_params
    from .calibration import calibrate_file

    cal = calibrate_file(acts, activation, bits, params=parse_params(params), weights_path=weights,
                         budget_bits=budget_bits, partition=partition)
    click.echo(repr(cal))
    if output:
        cal.save(output)
        click.echo(f"wrote {output} ({len(cal)} tables, average {cal.average_bits:.4g} bits)", err=True)


@main.command("list")
@handle_errors
def list_cmd():
    """List the activations (with parameters and defaults) and the distributions.

    \b
    Example:
      fewbit-design list
    """
    from .activations import REGISTRY
    from .distributions import DISTRIBUTIONS

    click.echo("Activations (fewbit-design NAME --bits B [--param K=V]):")
    for name, spec in REGISTRY.items():
        params = format_params(spec.defaults)
        aliases = f"  (also {', '.join(spec.aliases)})" if spec.aliases else ""
        click.echo(f"  {name:<14} {spec.doc}{'  [' + params + ']' if params else ''}{aliases}")
    click.echo("  module:function[:derivative]  a custom vectorised numpy activation")
    click.echo("")
    click.echo("Distributions (--dist SPEC):")
    for name, doc in DISTRIBUTIONS.items():
        click.echo(f"  {name:<14} {doc}")


def _register_table_commands():
    from .cli_tables import COMMANDS

    for cmd in COMMANDS:
        main.add_command(cmd)


_register_table_commands()
