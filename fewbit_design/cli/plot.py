"""The plot commands (front end of the plot step): plot error, plot table."""

from __future__ import annotations

import os

import click

from ..table import PARTITIONS
from .errors import handle_errors
from .options import (bits_option, dist_option, output_option, param_option, partition_option,
                      trust_option)

FIGURE_HELP = "Figure file: .png, .svg or .pdf."


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
@bits_option("Bit widths: 1-8, 1,2,4, ...", default="1-8", show_default=True)
@dist_option("Distribution spec (repeatable) [default: normal:0,1].", multiple=True)
@partition_option("Partition(s) to draw (repeatable) [default: contiguous and levelset].", multiple=True)
@param_option("Activation parameter for every ACTIVATION (repeatable).")
@output_option(FIGURE_HELP, required=True)
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
    from ..activations import parse_params
    from ..plots import plot_error
    from ..table import parse_bits

    plot_error(list(activations), bits=parse_bits(bits), distributions=list(dists) or ["normal:0,1"],
               partitions=list(partitions) or list(PARTITIONS), params=parse_params(params),
               path=output)
    click.echo(f"wrote {output}", err=True)


@plot.command("table")
@click.argument("file", type=click.Path(dir_okay=False))
@output_option(FIGURE_HELP, required=True)
@trust_option()
@handle_errors
def plot_table_cmd(file, output, trust_activation_code):
    """Draw f' and the table's step function q over x, the weight shaded, boundaries marked.

    \b
    Examples:
      fewbit-design plot table tables/normal_0_1/gelu-3bit-auto.json -o gelu3.png
      fewbit-design plot table my_table.h -o my_table.pdf
    """
    from ..formats import read_table
    from ..plots import plot_table

    plot_table(read_table(file), path=output, base=os.path.dirname(os.path.abspath(file)),
               trust_activation_code=trust_activation_code, source=file)
    click.echo(f"wrote {output}", err=True)


COMMANDS = [plot]
