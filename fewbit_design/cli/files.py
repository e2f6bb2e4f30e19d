"""Commands on table files (front end of the file and check steps): convert, check."""

from __future__ import annotations

import os
import sys

import click

from ..table import FORMATS, PARTITION_CHOICES
from .errors import InputError, handle_errors
from .options import output_option, trust_option


@click.command("convert")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-t", "--to", "to_fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: from -o's extension].")
@click.option("--from", "from_fmt", type=click.Choice(FORMATS), default=None,
              help="Input format [default: from FILE's extension].")
@output_option("Write here (atomically) instead of stdout.")
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
    from .. import formats

    if to_fmt is None:
        if output is None:
            raise InputError("give the output format with --to FORMAT, or -o FILE with its extension")
        to_fmt = formats.format_from_path(output)
    table = formats.read_table(file, from_fmt)
    if output:
        formats.write_table(table, output, to_fmt, base=os.path.dirname(os.path.abspath(file)))
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
@trust_option()
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
    from ..check import check_table
    from ..formats import read_table

    table = read_table(file)
    report = check_table(table, against=None if no_redesign else against,
                         base=os.path.dirname(os.path.abspath(file)),
                         trust_activation_code=trust_activation_code, source=file)
    click.echo(f"{'file':<14}{file}")
    click.echo(report.text)
    if not report.ok:
        sys.exit(1)


COMMANDS = [convert, check]
