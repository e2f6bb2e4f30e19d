"""Commands that design many tables (front end of the sweep and calibration steps): sweep, calibrate."""

from __future__ import annotations

import os
import sys

import click

from .errors import handle_errors
from .options import bits_option, output_option, param_option, partition_option


@click.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@output_option("Output folder [default: the config's folder].", folder=True)
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
    from ..sweep import SweepInterrupted, load_config, run_sweep

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


@click.command("calibrate")
@click.argument("acts", type=click.Path(dir_okay=False))
@click.option("-a", "--activation", required=True, help="The layers' activation (registry name).")
@bits_option("Code width of every table, 1..8.", type=int, default=3, show_default=True)
@click.option("--budget-bits", type=float, default=None,
              help="Average bits per element in [1, 8]: choose bits per layer (exact DP) instead of --bits.")
@click.option("-w", "--weights", "weights", type=click.Path(dir_okay=False), default=None,
              help=".npz with the same layer names: one weight per input (e.g. g², the output gradient squared).")
@param_option()
@partition_option("Table form per layer; auto: the better of the two.")
@output_option("Write the bundle (JSON, for convert(model, tables=...)) here, atomically.", writable=True)
@handle_errors
def calibrate_cmd(acts, activation, bits, budget_bits, weights, params, partition, output):
    """Design one table per layer from saved activation inputs (ACTS: .npz, one array per layer).

    \b
    Examples:
      fewbit-design calibrate acts.npz --activation gelu --bits 3 -o bundle.json
      fewbit-design calibrate acts.npz -a gelu --budget-bits 2.5 -w g2.npz -o bundle.json
    """
    from ..activations import parse_params
    from ..calibration import calibrate_file

    cal = calibrate_file(acts, activation, bits, params=parse_params(params), weights_path=weights,
                         budget_bits=budget_bits, partition=partition)
    click.echo(repr(cal))
    if output:
        cal.save(output)
        click.echo(f"wrote {output} ({len(cal)} tables, average {cal.average_bits:.4g} bits)", err=True)


COMMANDS = [sweep, calibrate_cmd]
