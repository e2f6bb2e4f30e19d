"""How the command line fails (front end): exit code 2 on bad input, one-line messages, no traceback."""

from __future__ import annotations

import functools
import warnings

import click

from ..errors import FewbitError


MAX_MESSAGE = 400


class InputError(click.ClickException):
    """Bad input: printed as one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file=None):
        msg = " ".join(self.format_message().split())
        if len(msg) > MAX_MESSAGE:         # a 5000-character name is not echoed back in full
            msg = msg[:MAX_MESSAGE - 3] + "..."
        click.echo(f"Error: {msg}", err=True)


def silence_stdout() -> None:
    """After a closed pipe: send what is still buffered for stdout nowhere (no second error)."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # not a real file (CliRunner): nothing to do
        pass


def handle_errors(fn):
    """Turn FewbitError and OSError (but a closed pipe) into InputError; warnings become one
    line each on stderr."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            except FewbitError as e:
                raise InputError(str(e)) from None
            except BrokenPipeError:   # `fewbit-design list | head -1`: the reader has all it wants
                silence_stdout()
                raise SystemExit(0) from None
            except OSError as e:
                name = f": {e.filename}" if getattr(e, "filename", None) else ""
                raise InputError(f"{e.strerror or e}{name}") from None
            finally:
                seen = {}
                for w in caught:
                    seen[str(w.message)] = seen.get(str(w.message), 0) + 1
                for msg, count in seen.items():
                    click.echo(f"warning: {msg}" + (f" ({count} times)" if count > 1 else ""), err=True)

    return wrapper
