"""NPZ (Table -> file step): raw float64/int64 arrays plus the rest of the mapping as a JSON string."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from ..errors import FewbitError
from ._common import ARRAYS, _no_duplicates, _one_line

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)   # fixed, so the same table gives the same bytes


def _dump_npz(d: dict) -> bytes:
    meta = {k: v for k, v in d.items() if k not in ARRAYS}
    arrays = {"boundaries": np.asarray(d["boundaries"], dtype=np.float64),
              "codes": np.asarray(d["codes"], dtype=np.int64),
              "levels": np.asarray(d["levels"], dtype=np.float64),
              "meta": np.array(json.dumps(meta))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE), member.getvalue())
    return buf.getvalue()


def _load_npz(data: bytes, source: str, limit: int) -> dict:
    """The mapping of an NPZ table; refused when its members inflate to over `limit` bytes."""
    try:                   # sizes from the zip directory, before anything is inflated
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            inflated = sum(i.file_size for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        inflated = 0                        # not an archive: np.load says what is wrong
    if inflated > limit:
        raise FewbitError(f"{source}: the NPZ inflates to {inflated / 2**20:.0f} MiB, over the table "
                          f"limit of {limit / 2**20:.0f} MiB")
    try:
        npz = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except Exception as e:   # numpy raises many types on garbage: ValueError, BadZipFile, EOFError, OSError
        raise FewbitError(f"{source}: not a valid NPZ file ({_one_line(e) or type(e).__name__})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise FewbitError(f"{source}: not a valid NPZ file (a single array, not an archive)")
    with npz:
        missing = [k for k in ("meta", *ARRAYS) if k not in npz.files]
        if missing:
            raise FewbitError(f"{source}: missing field '{missing[0]}'")
        out = {}
        for key in ("meta", *ARRAYS):
            try:
                out[key] = npz[key]
            except Exception as e:
                raise FewbitError(f"{source}: field '{key}' is unreadable ({_one_line(e) or type(e).__name__})") from None
    meta = out.pop("meta")
    if meta.dtype.kind != "U" or meta.ndim != 0:
        raise FewbitError(f"{source}: field 'meta' must be a JSON string")
    try:
        d = json.loads(str(meta), object_pairs_hook=_no_duplicates(f"{source}: field 'meta'"))
    except json.JSONDecodeError as e:
        raise FewbitError(f"{source}: field 'meta' is not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise FewbitError(f"{source}: field 'meta' must be a JSON mapping")
    d.update(out)
    return d


