"""JSON and YAML (Table -> file step): the canonical mapping as text, one top-level key per line
in JSON; the same mapping in YAML, whose writer gives floats as repr (bit-exact)."""

from __future__ import annotations

import json

from ..errors import FewbitError
from ._common import ARRAYS, _no_duplicates


def _dump_json(d: dict) -> str:
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items())
    return "{\n" + body + "\n}\n"


def _load_json(text: str, source: str):
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(source))
    except json.JSONDecodeError as e:
        raise FewbitError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


# -- YAML: the same mapping; PyYAML writes floats as repr (bit-exact) -----------------

def _yaml():
    import yaml
    return yaml


def _dump_yaml(d: dict) -> str:
    yaml = _yaml()
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    # the arrays last, levels the very last as a flow list: a truncated file never parses as a table
    d = {**{k: v for k, v in d.items() if k not in ARRAYS}, **{k: d[k] for k in ARRAYS}}
    return yaml.dump(d, Dumper=dumper, sort_keys=False, default_flow_style=None, width=100)


def _unique_key_loader(yaml, source: str):
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str) and key in seen:
                    raise FewbitError(f"{source}: field {key[:60]!r} is given twice "
                                      f"(line {key_node.start_mark.line + 1})")
                if isinstance(key, str):
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_yaml_map)
    return Loader


def _load_yaml(text: str, source: str):
    yaml = _yaml()
    loader = _unique_key_loader(yaml, source)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise FewbitError(f"{source}: not valid YAML ({problem}{where})") from None


