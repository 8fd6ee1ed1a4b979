"""``triscale predict`` refuses unphysical structures before the model loads: exit code 1, one clear line on
stderr, nothing (no NaN, no number) on stdout."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = 'Lattice="0.01 0 0 0 0.01 0 0 0 0.01" Properties=species:S:1:pos:R:3 pbc="T T T"'
WATER = "3\n\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n"

CASES = {
    "coincident atoms": ("2\n\nH 0 0 0\nH 0 0 0\n", r"frame 0: Atoms overlap: .* 0\.000 Å"),
    "atoms 0.1 Å apart": ("2\n\nH 0 0 0\nH 0 0 0.1\n", r"frame 0: Atoms overlap: .* 0\.100 Å"),
    "atoms 1e12 Å apart": ("2\n\nH 0 0 0\nH 1e12 0 0\n", r"frame 0: The coordinates are out of range"),
    "0.01 Å cell": (f"1\n{TINY}\nCu 0 0 0\n", r"frame 0: Atoms overlap their periodic images: the cell is far too"),
    "bad second frame": (WATER + "2\n\nH 0 0 0\nH 0 0 0\n", r"frame 1: Atoms overlap"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_refuses_unphysical_structures(tmp_path, case):
    text, pattern = CASES[case]
    path = tmp_path / "in.xyz"
    path.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "triscale.cli", "predict", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""  # no NaN, no number, no table
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith(f"error: {path} frame")
    import re

    assert re.search(pattern, err[-1]), err[-1]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.xyz"]  # nothing written
