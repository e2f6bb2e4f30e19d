"""What the format readers share (Table -> file step): one-line messages, duplicate keys, numbers."""

from __future__ import annotations

import re

from ..errors import FewbitError

ARRAYS = ("boundaries", "codes", "levels")


def _one_line(e) -> str:
    return " ".join(str(e).split())[:200]


def _no_duplicates(source: str):
    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise FewbitError(f"{source}: field {k[:60]!r} is given twice")
            d[k] = v
        return d
    return hook


def _parse_float(tok: str, where: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise FewbitError(f"{where} is not a number: {tok[:40]!r}") from None


def _parse_int(tok: str, where: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,18}", tok.strip()):
        raise FewbitError(f"{where} is not an integer: {tok[:40]!r}")
    return int(tok)


