"""Sanity of a pretrained model against reference data nobody here wrote.

    python benchmarks/model_sanity.py [--model triscale-base] [--markdown]

* Crystals: lattice constants from an equation-of-state fit (ase.eos, 9 volumes within +-6 %) with TriScale
  (material domain) and with CHGNet (its teacher), next to ASE's ``reference_states`` (experimental values).
* Molecules: bond lengths and angles of g2 molecules relaxed with TriScale (molecule domain) and with GFN2-xTB
  (its teacher), both with BFGS to fmax 0.01 eV/Å from the same g2 geometry.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from ase.data import atomic_numbers, covalent_radii, reference_states  # noqa: E402
from ase.eos import EquationOfState  # noqa: E402
from ase.optimize import BFGS  # noqa: E402

CRYSTALS = {  # name: (ase.build.bulk arguments, symbol whose reference state holds the experimental a)
    "Cu (fcc)": (dict(name="Cu", crystalstructure="fcc", a=3.61), "Cu"),
    "Al (fcc)": (dict(name="Al", crystalstructure="fcc", a=4.05), "Al"),
    "Ni (fcc)": (dict(name="Ni", crystalstructure="fcc", a=3.52), "Ni"),
    "Si (diamond)": (dict(name="Si", crystalstructure="diamond", a=5.43), "Si"),
    "NaCl (rocksalt)": (dict(name="NaCl", crystalstructure="rocksalt", a=5.64), None),
    "MgO (rocksalt)": (dict(name="MgO", crystalstructure="rocksalt", a=4.21), None),
}
EXPERIMENT = {"NaCl (rocksalt)": 5.64, "MgO (rocksalt)": 4.21}  # room-temperature experimental values, Å
MOLECULES = ["H2O", "NH3", "CH4", "C2H4", "HCN", "CO2", "CH3OH", "H2CO", "CH3CH2OH", "C6H6"]


def lattice_constant(atoms, a_start: float, calc) -> float:
    """Cubic lattice constant (Å) from a Birch-Murnaghan fit over +-6 % in volume (fractional coordinates fixed)."""
    atoms = atoms.copy()
    cell0 = atoms.cell.array.copy()
    volumes, energies = [], []
    for s in np.linspace(0.98, 1.02, 9):
        atoms.set_cell(cell0 * s, scale_atoms=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    v0, _, _ = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    # the cell is the starting one scaled uniformly, so a scales as the cube root of the volume
    return a_start * (v0 / abs(np.linalg.det(cell0))) ** (1 / 3)


def geometry(atoms) -> tuple[dict, dict]:
    """Bond lengths (Å) and bond angles (degrees) keyed by atom indices, bonds by 1.25 x covalent radii."""
    n = len(atoms)
    d = atoms.get_all_distances()
    r = covalent_radii[atoms.numbers]
    bonds = {(i, j): d[i, j] for i in range(n) for j in range(i + 1, n) if d[i, j] < 1.25 * (r[i] + r[j])}
    angles = {}
    for i, j in bonds:
        for k, m in bonds:
            shared = {i, j} & {k, m}
            if (i, j) < (k, m) and len(shared) == 1:
                c = shared.pop()
                a, b = ({i, j} - {c}).pop(), ({k, m} - {c}).pop()
                angles[(a, c, b)] = atoms.get_angle(a, c, b)
    return bonds, angles


def relax(atoms, calc, fmax: float = 0.01):
    atoms = atoms.copy()
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=300)
    return atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="triscale-base")
    parser.add_argument("--no-chgnet", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import triscale

    ours = triscale.calculator(args.model, dtype="float64")
    supported = set(ours.config.supported_elements)
    chg = None
    if not args.no_chgnet:
        from chgnet.model.dynamics import CHGNetCalculator

        chg = CHGNetCalculator(use_device="cpu")

    print("\nLattice constants (Å): EOS fit, cubic conventional a\n")
    print(
        "| crystal | TriScale | CHGNet 0.3.0 | experiment (ASE reference_states) | TriScale - CHGNet | TriScale - exp |"
    )
    print("|---|---|---|---|---|---|")
    rows = []
    for name, (kwargs, ref_symbol) in CRYSTALS.items():
        atoms = bulk(**kwargs)
        if not set(atoms.numbers) <= supported:
            print(f"| {name} | unsupported element | | | | |")
            continue
        a_ours = lattice_constant(atoms, kwargs["a"], ours)
        a_chg = lattice_constant(atoms, kwargs["a"], chg) if chg else float("nan")
        a_exp = reference_states[atomic_numbers[ref_symbol]]["a"] if ref_symbol else EXPERIMENT[name]
        rows.append((a_ours - a_chg, a_ours - a_exp))
        print(f"| {name} | {a_ours:.3f} | {a_chg:.3f} | {a_exp:.3f} | {a_ours - a_chg:+.3f} | {a_ours - a_exp:+.3f} |")
    if rows:
        arr = np.abs(np.array(rows))
        print(f"| **MAE** | | | | {arr[:, 0].mean():.3f} | {arr[:, 1].mean():.3f} |")

    from tblite.ase import TBLite

    print("\nMolecules relaxed from g2 geometries: TriScale vs GFN2-xTB\n")
    print("| molecule | bonds | bond MAE (Å) | max bond error (Å) | angles | angle MAE (°) |")
    print("|---|---|---|---|---|---|")
    all_b, all_a = [], []
    for name in MOLECULES:
        atoms = molecule(name)
        if not set(atoms.numbers) <= supported:
            continue
        ref = relax(atoms, TBLite(method="GFN2-xTB", verbosity=0))
        mine = relax(atoms, ours)
        b_ref, a_ref = geometry(ref)
        b_ours = {k: mine.get_distance(*k) for k in b_ref}
        a_ours = {k: mine.get_angle(*k) for k in a_ref}
        db = np.array([abs(b_ours[k] - b_ref[k]) for k in b_ref])
        da = np.array([abs(a_ours[k] - a_ref[k]) for k in a_ref]) if a_ref else np.zeros(0)
        all_b.extend(db)
        all_a.extend(da)
        print(
            f"| {name} | {len(db)} | {db.mean():.4f} | {db.max():.4f} | {len(da)} | "
            + (f"{da.mean():.2f} |" if len(da) else "- |")
        )
    print(
        f"| **all** | {len(all_b)} | {np.mean(all_b):.4f} | {np.max(all_b):.4f} | {len(all_a)} | {np.mean(all_a):.2f} |"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
