"""Batch designs (the designer, many tables at once) from a YAML config: the cross product, in
parallel, written incrementally.

A config (see ``tables/sweep.yaml``)::

    activations:                 # registry names, {name: ..., params: {...}}, or "all"
      - gelu
      - {name: leaky_relu, params: {negative_slope: 0.2}}
    bits: 1-8                    # "1-8", "1,2,4", 3 or a list
    distributions: ["normal:0,1", "uniform:-10,10"]
    partitions: [auto]           # contiguous | levelset | auto (default [auto])
    formats: [json]              # json yaml npz csv h (default [json])
    grid: 1024                   # optional: core grid cells for the DP
    bundle:                      # optional: one compact JSON of some tables, for the package
      path: ../fewbit_design/data/tables_normal.json   # relative to the config file
      distributions: ["normal:0,1"]

Output layout: ``DIR/<distribution>/<activation>-<bits>bit-<partition>.<ext>``, plus
``DIR/index.json`` and ``DIR/index.csv`` (one row per table with its error). A table whose
files exist and whose config key and package version match the index is not redesigned.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from ._version import __version__
from .errors import FewbitError
from .formats import FORMATS, read_table, write_bundle, write_table
from ._atomic import atomic_write
from .table import PARTITION_CHOICES, format_params, parse_bits

CONFIG_KEYS = ("activations", "bits", "distributions", "partitions", "formats", "grid", "bundle")
INDEX_FORMAT = "fewbit-sweep-index"
@dataclass(frozen=True)
class Job:
    """One table to design: what the config asked for, and where its files go."""

    activation: str
    params: dict            # as given in the config (defaults not filled in)
    bits: int
    distribution: str       # the canonical spec
    dist_key: dict          # Distribution.to_dict(): samples carry their digest
    partition: str
    grid: int | None
    stem: str               # DIR-relative path without extension

    @property
    def key(self) -> dict:
        """What makes two jobs the same table (with the package version)."""
        return {"activation": self.activation, "params": self.params, "bits": self.bits,
                "distribution": self.dist_key, "partition": self.partition, "grid": self.grid}


@dataclass
class SweepConfig:
    jobs: list[Job]
    formats: tuple[str, ...]
    bundle_path: str | None = None
    bundle_distributions: tuple[str, ...] = ()


@dataclass
class SweepResult:
    """What a sweep did: counts, the index rows, and where things went."""

    designed: int = 0
    converted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rows: list = field(default_factory=list)
    bundle: str | None = None
    design_seconds: dict = field(default_factory=dict)     # stem -> seconds inside design()

    def __repr__(self) -> str:
        return (f"SweepResult(tables={len(self.rows)}, designed={self.designed}, "
                f"converted={self.converted}, skipped={self.skipped}, seconds={self.seconds:.1f})")


# -- config ------------------------------------------------------------------------------

def load_config(path: str) -> SweepConfig:
    """Read and check a sweep config; FewbitError names the file and the key."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as e:
        raise FewbitError(f"{path}: cannot read ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FewbitError(f"{path}: not valid YAML{where}") from None
    try:
        return parse_config(raw, base=os.path.dirname(os.path.abspath(path)))
    except FewbitError as e:
        raise FewbitError(f"{path}: {e}") from None


def parse_config(raw, *, base: str = ".") -> SweepConfig:
    """Check a config mapping and expand it into jobs (see the module docstring)."""
    from .activations import REGISTRY, get_activation
    from .distributions import parse_distribution

    if not isinstance(raw, dict):
        raise FewbitError("the config must be a mapping with keys " + ", ".join(CONFIG_KEYS))
    unknown = [k for k in raw if k not in CONFIG_KEYS]
    if unknown:
        raise FewbitError(f"unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})")
    for key in ("activations", "bits", "distributions"):
        if key not in raw:
            raise FewbitError(f"missing key {key!r}")

    acts = raw["activations"]
    if acts == "all":
        acts = list(REGISTRY)
    if not isinstance(acts, list) or not acts:
        raise FewbitError("activations: expected a non-empty list (or 'all')")
    activations = []
    for i, a in enumerate(acts):
        where = f"activations[{i}]"
        if isinstance(a, str):
            name, params = a, {}
        elif isinstance(a, dict):
            bad = [k for k in a if k not in ("name", "params")]
            if bad or "name" not in a:
                raise FewbitError(f"{where}: expected {{name: ..., params: {{...}}}}, got keys {sorted(map(str, a))}")
            name, params = a["name"], a.get("params") or {}
            if not isinstance(params, dict) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in params.values()):
                raise FewbitError(f"{where}.params: expected a mapping of numbers")
        else:
            raise FewbitError(f"{where}: expected a name or a mapping, got {a!r}")
        try:
            act = get_activation(name, params)
        except FewbitError as e:
            raise FewbitError(f"{where}: {e}") from None
        activations.append((act.name, {k: float(v) for k, v in params.items()}))

    try:
        bits = parse_bits(raw["bits"])
    except FewbitError as e:
        raise FewbitError(str(e)) from None

    dists = _str_list(raw, "distributions", None)
    distributions = []
    for i, spec in enumerate(dists):
        try:
            d = parse_distribution(spec)
        except FewbitError as e:
            raise FewbitError(f"distributions[{i}]: {e}") from None
        distributions.append((d.spec, d.to_dict()))

    partitions = _str_list(raw, "partitions", ["auto"])
    for i, p in enumerate(partitions):
        if p not in PARTITION_CHOICES:
            raise FewbitError(f"partitions[{i}]: {p!r} is not one of {', '.join(PARTITION_CHOICES)}")
    formats = _str_list(raw, "formats", ["json"])
    for i, f in enumerate(formats):
        if f not in FORMATS:
            raise FewbitError(f"formats[{i}]: {f!r} is not one of {', '.join(FORMATS)}")

    grid = raw.get("grid")
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or not 16 <= grid <= 1 << 20):
        raise FewbitError(f"grid: expected an integer in 16..1048576, got {grid!r}")

    bundle_path, bundle_dists = None, ()
    if raw.get("bundle") is not None:
        b = raw["bundle"]
        if not isinstance(b, dict) or not isinstance(b.get("path"), str) or set(b) - {"path", "distributions"}:
            raise FewbitError("bundle: expected {path: FILE.json, distributions: [SPEC, ...]}")
        bundle_path = os.path.normpath(os.path.join(base, b["path"]))
        specs = _str_list(b, "distributions", dists, where="bundle.distributions")
        bundle_dists = tuple(parse_distribution(s).spec for s in specs)
        missing = [s for s in bundle_dists if s not in {d for d, _ in distributions}]
        if missing:
            raise FewbitError(f"bundle.distributions: {missing[0]!r} is not among the swept distributions")

    jobs = []
    for dspec, dkey in distributions:
        for name, params in activations:
            for b in bits:
                for p in partitions:
                    stem = f"{_slug(dspec)}/{_slug(name, params)}-{b}bit-{p}"
                    jobs.append(Job(name, params, b, dspec, dkey, p, grid, stem))
    stems = [j.stem for j in jobs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise FewbitError(f"two entries would write the same file {dup!r}: remove the duplicate")
    return SweepConfig(jobs, tuple(dict.fromkeys(formats)), bundle_path, bundle_dists)


def _str_list(raw: dict, key: str, default, *, where: str | None = None) -> list[str]:
    v = raw.get(key, default)
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
        raise FewbitError(f"{where or key}: expected a non-empty list of strings, got {v!r}")
    return v


def _slug(name: str, params: dict | None = None) -> str:
    parts = [name] + ([format_params(params, "_")] if params else [])
    if name.startswith("samples:"):
        parts = ["samples", os.path.splitext(os.path.basename(name[8:]))[0]]
    return re.sub(r"[^\w.=+-]+", "_", "_".join(parts)).strip("_")


# -- running -----------------------------------------------------------------------------

def _design_job(job: Job) -> tuple[dict, float]:
    """Worker: design one table; returns its canonical dict and the seconds design() took."""
    from .designer import design

    t0 = time.perf_counter()
    table = design(job.activation, job.bits, distribution=job.distribution, params=job.params,
                   partition=job.partition, grid=job.grid)
    return table.to_dict(), time.perf_counter() - t0


def _cost(job: Job) -> float:
    """Rough relative cost, to start the slow jobs first."""
    return 2.0 ** job.bits * (2.0 if job.partition == "auto" else 1.0)


def run_sweep(config: SweepConfig, out_dir: str, *, jobs: int | None = None, force: bool = False,
              progress=None) -> SweepResult:
    """Design every job of `config` not already current in `out_dir`; write files and the index.

    Parameters
    ----------
    jobs : worker processes (default os.cpu_count()); 1 runs in this process.
    force : redesign every table even if current.
    progress : optional callable(n_done) -> None, called after each table.
    """
    from .table import Table

    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    previous = {} if force else _read_index(out_dir)
    result = SweepResult()
    tables: dict[int, Table] = {}
    todo = []
    for i, job in enumerate(config.jobs):
        paths = [os.path.join(out_dir, f"{job.stem}.{f}") for f in config.formats]
        entry = previous.get(_key_text(job.key))
        current = entry is not None and entry.get("package_version") == __version__
        if current and all(os.path.exists(p) for p in paths):
            tables[i] = None            # read lazily, only if the bundle needs it
            result.skipped += 1
            if progress:
                progress(1)
            continue
        existing = [p for p in entry.get("files", [])] if current else []
        existing = [os.path.join(out_dir, p) for p in existing if os.path.exists(os.path.join(out_dir, p))]
        if existing:
            try:
                tables[i] = read_table(existing[0])
                _write_all(tables[i], job, config.formats, out_dir)
                result.converted += 1
                if progress:
                    progress(1)
                continue
            except FewbitError:
                pass
        todo.append(i)

    todo.sort(key=lambda i: -_cost(config.jobs[i]))
    failed = []
    n_workers = max(1, min(jobs or os.cpu_count() or 1, len(todo) or 1))

    def finish(i, get):
        try:
            tables[i] = _finish(*get(), config.jobs[i], config.formats, out_dir, result.design_seconds)
        except FewbitError as e:
            failed.append((i, e))
        except Exception as e:      # a worker that died, or a bug: a line in the report, not a traceback
            failed.append((i, FewbitError(f"{type(e).__name__}: {str(e)[:200]}")))
        if progress:
            progress(1)

    interrupted = False
    try:
        if n_workers == 1:
            for i in todo:
                finish(i, lambda: _design_job(config.jobs[i]))
        else:
            pool = ProcessPoolExecutor(max_workers=n_workers, initializer=_ignore_sigint)
            try:
                futures = {pool.submit(_design_job, config.jobs[i]): i for i in todo}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result)
            except KeyboardInterrupt:
                _stop(pool)         # promptly: queued designs cancelled, running ones ended
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    except KeyboardInterrupt:
        interrupted = True          # the index still lists every table finished so far
    result.designed = len(todo) - len(failed)

    def table_of(i):
        if tables[i] is None:
            tables[i] = read_table(os.path.join(out_dir, f"{config.jobs[i].stem}.{config.formats[0]}"))
        return tables[i]

    result.rows = _write_index(config, out_dir, previous, tables, table_of)
    if interrupted:
        raise SweepInterrupted(len(result.rows), len(config.jobs))
    if failed:
        i, e = failed[0]
        raise FewbitError(f"{len(failed)} of {len(config.jobs)} tables failed (the index lists the rest); "
                          f"first: {config.jobs[i].stem}: {e}")
    if config.bundle_path:
        result.bundle = write_bundle(
            [table_of(i) for i, j in enumerate(config.jobs) if j.distribution in config.bundle_distributions],
            config.bundle_path)
    result.seconds = time.perf_counter() - t0
    return result


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, after the index of the finished tables was written."""

    def __init__(self, done: int, total: int):
        super().__init__(done, total)
        self.done, self.total = done, total


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the main process, which stops them (no traceback from each)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(pool) -> None:
    """Cancel the queued designs and end the running ones now, not when they finish."""
    procs = list((getattr(pool, "_processes", None) or {}).values())   # no public API for this;
    pool.shutdown(wait=False, cancel_futures=True)                       # shutdown forgets them
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(5)


def _finish(d: dict, took: float, job: Job, formats, out_dir, seconds: dict):
    from .table import Table

    seconds[job.stem] = took
    table = Table.from_dict(d, source=job.stem)
    _write_all(table, job, formats, out_dir)
    return table


def _write_all(table, job: Job, formats, out_dir: str) -> None:
    os.makedirs(os.path.join(out_dir, os.path.dirname(job.stem)), exist_ok=True)
    for f in formats:
        write_table(table, os.path.join(out_dir, f"{job.stem}.{f}"), f)


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)


def _read_index(out_dir: str) -> dict:
    """Entries of a previous index.json by key; an unreadable index means a full re-run."""
    path = os.path.join(out_dir, "index.json")
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
        return {_key_text(e["key"]): e for e in d["tables"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


INDEX_COLUMNS = ("activation", "params", "bits", "distribution", "partition", "partition_used",
                 "intervals", "levels", "mse", "relative_error", "file")


def _write_index(config: SweepConfig, out_dir: str, previous: dict, tables, table_of) -> list[dict]:
    rows, entries = [], []
    for i, job in enumerate(config.jobs):
        if i not in tables:
            continue                        # failed
        files = [f"{job.stem}.{f}" for f in config.formats]
        prev = previous.get(_key_text(job.key))
        if tables[i] is None and prev and "result" in prev:
            res = prev["result"]            # skipped: reuse what the index already says
        else:
            t = table_of(i)
            res = {"partition_used": t.partition, "intervals": t.n_intervals, "levels": int(t.levels.size),
                   "mse": t.mse, "relative_error": t.relative_error}
        entries.append({"key": job.key, "package_version": __version__, "files": files, "result": res})
        rows.append({"activation": job.activation, "params": json.dumps(job.params), "bits": job.bits,
                     "distribution": job.distribution, "partition": job.partition, **res, "file": files[0]})
    head = json.dumps({"format": INDEX_FORMAT, "version": 1, "package_version": __version__})[:-1]
    body = ",\n".join(f"  {json.dumps(e)}" for e in entries)     # one table a line
    atomic_write(os.path.join(out_dir, "index.json"), f'{head}, "tables": [\n{body}\n]}}\n')
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})
    atomic_write(os.path.join(out_dir, "index.csv"), buf.getvalue())
    return rows


__all__ = ["Job", "SweepConfig", "SweepResult", "SweepInterrupted", "load_config", "parse_config",
           "run_sweep"]
