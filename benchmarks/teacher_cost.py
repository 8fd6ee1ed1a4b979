"""Labelling cost per frame of candidate material teachers on ONE core: CHGNet 0.3.0 (the datagen teacher) against
SevenNet-0 and SevenNet-l3i5 (shipped inside the ``sevenn`` wheel, so offline like CHGNet).

A frame is what datagen pays per stored material frame: one fresh single point (energy, forces, stress) at new
positions. Cells: Si diamond (8 atoms), NaCl rock salt 2x2x2 (64), MgO rock salt 3x3x3 (216), and Si diamond at
64 and 216 atoms (size alone, same chemistry; dense MgO has many more neighbours and angles per atom), each rattled
by 0.03 Å; every timed frame gets its own seeded rattle so nothing is served from a cache. The first call per
(teacher, cell) is a warm-up and not counted; the table gives the median of ``--repeats`` frames, in CPU seconds
of the (single-threaded) process, which stay close to the cost on one idle core when the machine is shared.

    OMP_NUM_THREADS=1 python benchmarks/teacher_cost.py [--repeats 3]

``sevenn`` is not a TriScale dependency: put it on ``PYTHONPATH`` (e.g. ``pip install --no-deps --target DIR
sevenn e3nn torch-geometric matscipy ...``); without it its rows say "not installed". Timings depend on the load of
the machine; compare rows of one run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, set before torch is imported
    os.environ[_var] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402

RATTLE = 0.03  # Å


def cells() -> dict[str, Atoms]:
    """The three periodic cells (8, 64, 216 atoms), rattled with a fixed seed."""
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    out = {
        "Si diamond": si,
        "Si diamond 2x2x2": si * (2, 2, 2),
        "Si diamond 3x3x3": si * (3, 3, 3),
        "NaCl rock salt": bulk("NaCl", "rocksalt", a=5.64, cubic=True) * (2, 2, 2),
        "MgO rock salt": bulk("MgO", "rocksalt", a=4.21, cubic=True) * (3, 3, 3),
    }
    rng = np.random.default_rng(0)
    for atoms in out.values():
        atoms.positions += rng.normal(0.0, RATTLE, atoms.positions.shape)
    return out


def _chgnet() -> object:
    from triscale.foundation.datagen import MaterialConfig, chgnet_calculator

    return chgnet_calculator(MaterialConfig())  # exactly the datagen teacher: CHGNet 0.3.0 weights, CPU


def _sevennet(name: str) -> Callable[[], object]:
    def make() -> object:
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(model=name, device="cpu")

    return make


TEACHERS: dict[str, Callable[[], object]] = {
    "CHGNet 0.3.0": _chgnet,
    "SevenNet-0": _sevennet("7net-0"),
    "SevenNet-l3i5": _sevennet("7net-l3i5"),
}


def label(calc, atoms: Atoms) -> tuple[float, float, float]:
    """One fresh single point (energy, forces, stress); returns (CPU s, wall s, energy per atom in eV).

    CPU seconds of this process (all its threads; with one thread that is the cost on one otherwise idle core)
    are the measure; wall seconds are printed too but grow with whatever else the machine runs.
    """
    work = atoms.copy()
    work.calc = calc
    calc.reset()
    c0, t0 = time.process_time(), time.perf_counter()
    energy = work.get_potential_energy()
    forces = work.get_forces()
    stress = work.get_stress(voigt=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
        raise RuntimeError("non-finite labels")
    return cpu, wall, float(energy) / len(atoms)


def measure(repeats: int) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    rows = []
    structures = cells()
    for teacher, make in TEACHERS.items():
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                calc = make()
                load = time.perf_counter() - t0
        except ImportError as exc:
            rows.append({"teacher": teacher, "error": f"not installed ({exc.name})"})
            continue
        for cell_name, atoms in structures.items():
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                _, _, e_atom = label(calc, atoms)  # warm-up: graph code paths, allocator
                cpu, wall = [], []
                rng = np.random.default_rng(1)
                for _ in range(repeats):
                    frame = atoms.copy()
                    frame.positions += rng.normal(0.0, 0.01, frame.positions.shape)
                    c, w, _ = label(calc, frame)
                    cpu.append(c)
                    wall.append(w)
            rows.append(
                {
                    "teacher": teacher,
                    "cell": cell_name,
                    "atoms": len(atoms),
                    "seconds": statistics.median(cpu),
                    "wall": statistics.median(wall),
                    "load": load,
                    "e_atom": e_atom,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed frames per (teacher, cell); median reported")
    args = parser.parse_args()
    import torch

    rows = measure(args.repeats)
    threads = torch.get_num_threads()
    print(f"cost per frame (E+F+stress), {threads} torch thread, torch {torch.__version__}, median of {args.repeats}")
    print(
        f"{'teacher':<15} {'cell':<17} {'atoms':>5} {'CPU s/frame':>11} {'ms/atom':>8} {'x CHGNet':>8} "
        f"{'wall s':>7} {'E/atom eV':>10}"
    )
    base = {r["cell"]: r["seconds"] for r in rows if r["teacher"] == "CHGNet 0.3.0" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"{r['teacher']:<15} {r['error']}")
            continue
        ratio = r["seconds"] / base[r["cell"]] if r["cell"] in base else float("nan")
        print(
            f"{r['teacher']:<15} {r['cell']:<17} {r['atoms']:>5} {r['seconds']:>11.3f} "
            f"{1e3 * r['seconds'] / r['atoms']:>8.2f} {ratio:>8.1f} {r['wall']:>7.2f} {r['e_atom']:>10.3f}"
        )
    loads = {r["teacher"]: r["load"] for r in rows if "load" in r}
    print("model load (s): " + ", ".join(f"{k} {v:.1f}" for k, v in loads.items()))


if __name__ == "__main__":
    main()
