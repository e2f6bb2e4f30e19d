"""How parameters and parametrised names are printed (a leaf module: the input step and the
Table both use it; table.py re-exports both names)."""

from __future__ import annotations


def format_params(params: dict, sep: str = ", ", *, names: bool = True) -> str:
    """Parameters as text, numbers in %g: 'alpha=0.5, beta=2' (or '0.5,2' without names).

    The one way parameters are printed: reports, figure titles, file names, reprs. Exact
    values travel in the files, never through this text.
    """
    def value(v):
        return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
    return sep.join(f"{k}={value(v)}" if names else value(v) for k, v in params.items())


def label(name: str, params: dict) -> str:
    """'name(a=1, b=2)', or 'name' without parameters: the one way a parametrised name is printed."""
    return f"{name}({format_params(params)})" if params else name
