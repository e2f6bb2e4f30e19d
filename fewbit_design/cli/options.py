"""Options that several commands share (front end), one decorator each, as sqlite-utils and
click's own docs do: the same flag reads and helps the same everywhere."""

from __future__ import annotations

import click

from ..table import PARTITION_CHOICES

PARAM_HELP = "Activation parameter, e.g. --param alpha=0.2 (repeatable)."


def bits_option(help: str, **kw):
    """-b/--bits: a code width (design, calibrate) or a list of them (plot error)."""
    return click.option("-b", "--bits", help=help, **kw)


def dist_option(help: str, *, multiple: bool = False):
    """-d/--dist: one weight spec (`dist`, normal:0,1 by default) or several (`dists`)."""
    kw = {"multiple": True} if multiple else {"default": "normal:0,1", "show_default": True}
    return click.option("-d", "--dist", "dists" if multiple else "dist", help=help, **kw)


def param_option(help: str = PARAM_HELP):
    """-p/--param K=V, repeatable: the activation's parameters (parse_params reads them)."""
    return click.option("-p", "--param", "params", multiple=True, metavar="K=V", help=help)


def partition_option(help: str, *, multiple: bool = False):
    """--partition: one of contiguous, levelset, auto (auto by default), or several (`partitions`)."""
    kw = {"multiple": True} if multiple else {"default": "auto", "show_default": True}
    return click.option("--partition", "partitions" if multiple else "partition",
                        type=click.Choice(PARTITION_CHOICES), help=help, **kw)


def output_option(help: str, *, required: bool = False, folder: bool = False, writable: bool = False):
    """-o/--output: the file (or, with `folder`, the folder) to write."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False, writable=writable)
    return click.option("-o", "--output", type=kind, default=None, required=required, help=help)


def trust_option():
    """--trust-activation-code: allow a table that names a custom activation to import it."""
    return click.option("--trust-activation-code", is_flag=True,
                        help="Allow a custom activation (module:function) named in FILE: this imports that "
                             "module and runs it. Without it such tables are refused.")
