"""The fewbit-design command line (front end of every step): parse, call one library function, echo.

One module per command group, each command a thin call of the library: design (design, list),
files (convert, check), batch (sweep, calibrate), plot (plot error, plot table); the options
they share are the decorators of options, the way they fail is errors.
"""

from __future__ import annotations

import os
import sys

import click

from .._version import __version__
from . import batch, design, files, plot
from .errors import silence_stdout


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


COMMANDS = [*design.COMMANDS, *files.COMMANDS, *batch.COMMANDS, *plot.COMMANDS]
for _command in COMMANDS:
    main.add_command(_command)
