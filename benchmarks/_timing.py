"""Timing shared by the benchmark processes (the project's and the peers' venv): median of repeated calls."""

from __future__ import annotations

import time

import numpy as np


def time_energy_forces(calc, atoms, repeats: int) -> float:
    """Median wall time (s) of one energy + forces evaluation, after a warm-up call."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()  # warm-up (allocations, lazy initialisation)
    times = []
    for _ in range(repeats):
        calc.results = {}
        t = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(time.perf_counter() - t)
    return float(np.median(times))
