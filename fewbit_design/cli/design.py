"""Commands that design one table (front end of the design step): design, and list (what can be designed)."""

from __future__ import annotations

import os

import click

from .. import formats
from ..errors import FewbitError
from ..table import format_params
from .errors import InputError, handle_errors
from .options import bits_option, dist_option, output_option, param_option, partition_option


@click.command("design")
@click.argument("activation")
@bits_option("Code width, 1..8 (2**bits levels).", type=int, required=True)
@dist_option("Input distribution: normal[:mean,std], uniform:a,b, laplace[:loc,scale], "
             "logistic[:loc,scale], t:df[,loc,scale], samples:FILE.")
@param_option()
@partition_option("contiguous: one interval per code; levelset: a code may cover several intervals; "
                  "auto: the better of the two.")
@click.option("--grid", type=int, default=None, help="Core grid cells for the DP [default: 1024].")
@click.option("-f", "--format", "fmt", type=click.Choice(formats.OUTPUT_FORMATS), default=None,
              help="Output format [default: from -o's extension, else text].")
@output_option("Write the table to this file (atomically) instead of stdout.", writable=True)
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
    from ..activations import parse_params
    from ..designer import design

    with _Heartbeat(f"designing {activation[:60]} at {bits} bits"):
        table = design(activation, bits, distribution=dist, params=parse_params(params),
                       partition=partition, grid=grid)
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
    """Write `table` to `output` (a samples path made relative to its folder), else to stdout."""
    if fmt is None:
        fmt = formats.format_from_path(output) if output else "text"
    elif output and fmt != "text":
        try:
            implied = formats.format_from_path(output)
        except FewbitError:
            implied = None
        if implied is not None and implied != fmt:
            click.echo(f"warning: {output}: writing {fmt} although the extension says {implied}", err=True)
    if output:
        formats.write_table(table, output, fmt, base=os.curdir)   # design() read samples from here
        click.echo(f"wrote {output} ({fmt}, relative error {table.relative_error:.4g})", err=True)
    elif fmt == "npz":
        raise InputError("npz is binary: give -o FILE")
    else:
        data = formats.dumps(table, fmt)
        click.echo(data.decode(), nl=not data.endswith(b"\n"))


@click.command("list")
@handle_errors
def list_cmd():
    """List the activations (with parameters and defaults) and the distributions.

    \b
    Example:
      fewbit-design list
    """
    from ..activations import REGISTRY
    from ..distributions import DISTRIBUTIONS

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


COMMANDS = [design_cmd, list_cmd]
