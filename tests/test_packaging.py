"""Packaging: every shipped checkpoint file is package data, so a non-editable ``pip install .`` carries it."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "triscale"


def _matches(relative: str, pattern: str) -> bool:
    # setuptools globs: "**" spans directories; fnmatch's "*" already crosses "/", so the two agree here
    return fnmatch.fnmatch(relative, pattern.replace("**/", "*"))


def test_every_checkpoint_file_is_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["triscale"]
    shipped = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file()
        and "checkpoints" in p.relative_to(PACKAGE).parts
        and p.suffix != ".py"
        and "__pycache__" not in p.parts
    ]
    assert shipped, "no shipped checkpoint files found"
    missing = [f for f in shipped if not any(_matches(f, pat) for pat in patterns)]
    assert not missing, f"not package data (a wheel would lack them): {missing[:5]}"
