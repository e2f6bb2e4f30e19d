"""Command line on table files (front end of the file, check, sweep and plot steps); cli.py registers COMMANDS."""

from __future__ import annotations

import os
import sys

import click

from ._cli_util import InputError, handle_errors
from .table import FORMATS, PARTITION_CHOICES, PARTITIONS


@click.command("convert")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-t", "--to", "to_fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: from -o's extension].")
@click.option("--from", "from_fmt", type=click.Choice(FORMATS), default=None,
              help="Input format [default: from FILE's extension].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here (atomically) instead of stdout.")
@handle_errors
def convert(file, to_fmt, from_fmt, output):
    """Convert a table FILE to another format (json, yaml, npz, csv, h).

    The table is validated on the way; floats are carried bit for bit.

    \b
    Examples:
      fewbit-design convert gelu3.json --to h > gelu3.h
      fewbit-design convert gelu3.json -o gelu3.npz
      fewbit-design convert tables/normal_0_1/gelu-3bit-auto.json --to csv
    """
    from . import formats

    if to_fmt is None:
        if output is None:
            raise InputError("give the output format with --to FORMAT, or -o FILE with its extension")
        to_fmt = formats.format_from_path(output)
    table = formats.read_table(file, from_fmt)
    if output:
        formats.write_table(table, output, to_fmt)
        click.echo(f"wrote {output} ({to_fmt})", err=True)
    elif to_fmt == "npz":
        raise InputError("npz is binary: give -o FILE")
    else:
        click.echo(formats.dumps(table, to_fmt).decode(), nl=False)


@click.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--against", type=click.Choice([*PARTITION_CHOICES, "same"]), default="auto", show_default=True,
              help="Partition of the table to compare with: auto (the best), or 'same' as FILE's.")
@click.option("--no-redesign", is_flag=True, help="Only validate and recompute the error.")
@click.option("--trust-activation-code", is_flag=True,
              help="Allow a custom activation (module:function) named in FILE: this imports that "
                   "module and runs it. Without it such tables are refused.")
@handle_errors
def check(file, against, no_redesign, trust_activation_code):
    """Validate a table FILE, recompute its error and look for a better table.

    Exit 0 if the table is valid, its stored error matches the error recomputed by exact
    quadrature under the distribution it names (within 1e-9 relative; differences below
    1e-15 of the total ∫w f'² are round-off), and design() finds no better table.
    Exit 1 otherwise, with the reason; exit 2 if the file cannot be read.

    \b
    Examples:
      fewbit-design check tables/normal_0_1/gelu-3bit-auto.json
      fewbit-design check paper_gelu2.json --against same
      fewbit-design check gelu3.h --no-redesign
    """
    from .check import check_table
    from .formats import read_table

    table = read_table(file)
    report = check_table(table, against=None if no_redesign else against,
                         base=os.path.dirname(os.path.abspath(file)),
                         trust_activation_code=trust_activation_code, source=file)
    click.echo(f"{'file':<14}{file}")
    click.echo(report.text)
    if not report.ok:
        sys.exit(1)


@click.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: the config's folder].")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), default=None,
              help="Worker processes [default: all CPUs].")
@click.option("--force", is_flag=True, help="Redesign every table, even those already current.")
@handle_errors
def sweep(config, output, jobs, force):
    """Design every table a YAML CONFIG lists, in parallel, skipping those already current.

    Writes DIR/<distribution>/<activation>-<bits>bit-<partition>.<format> for each table,
    DIR/index.json and DIR/index.csv with the errors, and the optional bundle.

    \b
    Config (keys: activations, bits, distributions, partitions, formats, grid, bundle):
      activations: [gelu, silu, {name: elu, params: {alpha: 0.5}}]   # or: all
      bits: 1-8
      distributions: ["normal:0,1", "uniform:-10,10"]
      partitions: [auto]            # contiguous | levelset | auto
      formats: [json, h]            # json yaml npz csv h

    \b
    Examples:
      fewbit-design sweep tables/sweep.yaml -o tables
      fewbit-design sweep my.yaml -o out -j 2 --force
    """
    from .sweep import SweepInterrupted, load_config, run_sweep

    cfg = load_config(config)
    out = output or os.path.dirname(os.path.abspath(config))
    try:
        with click.progressbar(length=len(cfg.jobs), label=f"{len(cfg.jobs)} tables", file=sys.stderr) as bar:
            result = run_sweep(cfg, out, jobs=jobs or os.cpu_count(), force=force, progress=bar.update)
    except SweepInterrupted as e:
        click.echo(f"\ninterrupted: {e.done} of {e.total} tables are done and listed in "
                   f"{os.path.join(out, 'index.json')}; run the same command again to resume", err=True)
        sys.exit(130)
    click.echo(f"{len(result.rows)} tables in {out}: {result.designed} designed, {result.skipped} already "
               f"current, {result.converted} converted, in {result.seconds:.1f} s")
    click.echo(f"index: {os.path.join(out, 'index.csv')}")
    if result.bundle:
        click.echo(f"bundle: {result.bundle}")


@click.group("plot")
def plot():
    """Figures: error vs bits, and one table against f'.

    \b
    Examples:
      fewbit-design plot error gelu silu tanh -o error.png
      fewbit-design plot table tables/normal_0_1/gelu-3bit-auto.json -o gelu3.svg
    """


@plot.command("error")
@click.argument("activations", nargs=-1, required=True)
@click.option("-b", "--bits", default="1-8", show_default=True, help="Bit widths: 1-8, 1,2,4, ...")
@click.option("-d", "--dist", "dists", multiple=True, help="Distribution spec (repeatable) [default: normal:0,1].")
@click.option("--partition", "partitions", multiple=True, type=click.Choice(PARTITION_CHOICES),
              help="Partition(s) to draw (repeatable) [default: contiguous and levelset].")
@click.option("-p", "--param", "params", multiple=True, metavar="K=V",
              help="Activation parameter for every ACTIVATION (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Figure file: .png, .svg or .pdf.")
@handle_errors
def plot_error_cmd(activations, bits, dists, partitions, params, output):
    """Relative error vs bits (log scale) for each ACTIVATION and distribution.

    One colour per activation (or per distribution when one activation is given); contiguous
    tables dashed, level-set solid.

    \b
    Examples:
      fewbit-design plot error gelu silu tanh sigmoid relu6 -o plots/error_vs_bits.png
      fewbit-design plot error gelu -d normal:0,1 -d uniform:-10,10 -o gelu.svg
      fewbit-design plot error elu -p alpha=0.5 --bits 1-4 --partition contiguous -o elu.pdf
    """
    from .activations import parse_params
    from .plots import plot_error
    from .table import parse_bits

    plot_error(list(activations), bits=parse_bits(bits), distributions=list(dists) or ["normal:0,1"],
               partitions=list(partitions) or list(PARTITIONS), params=parse_params(params),
               path=output)
    click.echo(f"wrote {output}", err=True)


@plot.command("table")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Figure file: .png, .svg or .pdf.")
@click.option("--trust-activation-code", is_flag=True,
              help="Allow a custom activation (module:function) named in FILE: this imports that "
                   "module and runs it. Without it such tables are refused.")
@handle_errors
def plot_table_cmd(file, output, trust_activation_code):
    """Draw f' and the table's step function q over x, the weight shaded, boundaries marked.

    \b
    Examples:
      fewbit-design plot table tables/normal_0_1/gelu-3bit-auto.json -o gelu3.png
      fewbit-design plot table my_table.h -o my_table.pdf
    """
    from .formats import read_table
    from .plots import plot_table

    plot_table(read_table(file), path=output, base=os.path.dirname(os.path.abspath(file)),
               trust_activation_code=trust_activation_code, source=file)
    click.echo(f"wrote {output}", err=True)


COMMANDS = [convert, check, sweep, plot]
