"""fewbit-design: optimal piecewise-constant derivative tables for few-bit backward.

The pipeline, one module a step (every module's first docstring line names its step):

    activations (f, f')  +  distributions (the input weight w)
      -> cells             cells (a grid, or the samples) and their moments ∫ w f'^p; the error
      -> dp                exact DPs over the cells (numba kernels)
      -> refine            Newton / Levenberg–Marquardt to the optimality condition,
                           driven by the two methods: contiguous, levelset
      -> designer          design(): the better of the two candidates (candidate) -> Table (table)
      -> formats (file), plots (figure), torch/ (the PyTorch runtime)
    around them: check (verify a table), sweep (batch designs), shipped (packaged tables),
    cli (the command line).

    import fewbit_design as fd
    t = fd.design("gelu", 3)              # numba is imported here, not by `import fewbit_design`
    fd.write_table(t, "gelu3.json")

Importing the package is cheap: the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> module that defines it (loaded on first access)
_EXPORTS = {
    "design": "designer", "evaluate": "designer", "distribution_of": "designer",
    "Table": "table",
    "read_table": "formats", "write_table": "formats", "FORMATS": "formats",
    "shipped_table": "shipped", "shipped_tables": "shipped",
    "get_activation": "activations", "REGISTRY": "activations",
    "parse_distribution": "distributions", "samples_from_array": "distributions",
    "check_table": "check", "CheckReport": "check",
    "plot_error": "plots", "plot_table": "plots",
    "FewbitError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value          # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from .activations import REGISTRY, get_activation
    from .check import CheckReport, check_table
    from .designer import design, distribution_of, evaluate
    from .distributions import parse_distribution, samples_from_array
    from .errors import FewbitError
    from .formats import FORMATS, read_table, write_table
    from .plots import plot_error, plot_table
    from .shipped import shipped_table, shipped_tables
    from .table import Table
