"""Every lower bound in setup.cfg is the version .ci/run installs in its oldest-versions venv."""

import configparser
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirements():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in ("torch", "test"):
        lines += cfg["options.extras_require"][extra].splitlines()
    return [line.split(";")[0].strip() for line in lines if line.strip()]


def test_every_lower_bound_is_pinned_in_the_oldest_set():
    pins = {}
    for line in open(os.path.join(ROOT, "ci", "oldest.txt")):
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    bounds = {}
    for req in requirements():
        m = re.fullmatch(r"([A-Za-z0-9_.\[\]-]+?)(\[[a-z,]+\])?>=([0-9.]+)", req)
        assert m, f"{req!r}: every requirement has one lower bound (name>=version) and no upper bound"
        bounds[m.group(1).lower()] = m.group(3)
    assert bounds == pins
