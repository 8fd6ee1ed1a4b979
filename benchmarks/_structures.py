"""Benchmark structures, built deterministically (shared by the main script and the peer script)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule


def aspirin() -> Atoms:
    """A 21-atom organic molecule (aspirin, C9H8O4) from RDKit ETKDG with a fixed seed, or a fallback."""
    try:
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"))
        AllChem.EmbedMolecule(mol, randomSeed=42)
        AllChem.MMFFOptimizeMolecule(mol)
        pos = mol.GetConformer().GetPositions()
        return Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=pos)
    except ImportError:  # the peer venv may lack RDKit: the main script passes structures by file anyway
        return molecule("CH3CH2OH")


def water_box(n_side: int = 4, spacing: float = 3.1, seed: int = 0) -> Atoms:
    """n_side**3 randomly oriented water molecules on a cubic grid in a periodic box (64 -> 192 atoms)."""
    rng = np.random.default_rng(seed)
    w = molecule("H2O")
    w.positions -= w.get_center_of_mass()
    atoms = Atoms(cell=[n_side * spacing] * 3, pbc=True)
    for idx in np.ndindex(n_side, n_side, n_side):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        m = w.copy()
        m.positions = m.positions @ q.T + (np.array(idx) + 0.5) * spacing
        atoms += m
    return atoms


def benchmark_structures() -> dict[str, Atoms]:
    cu108 = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)
    cu500 = bulk("Cu", "fcc", a=3.61, cubic=True) * (5, 5, 5)
    for a in (cu108, cu500):
        a.rattle(0.02, seed=1)
    return {"Cu108 (fcc)": cu108, "Cu500 (fcc)": cu500, "aspirin (21 atoms)": aspirin(), "water box (192)": water_box()}


def big_cell(n_atoms: int = 5000) -> Atoms:
    """A ~n_atoms fcc Cu cell (rattled) for the peak-memory measurement."""
    reps = round((n_atoms / 4) ** (1 / 3))
    a = bulk("Cu", "fcc", a=3.61, cubic=True) * (reps, reps, reps)
    a.rattle(0.02, seed=1)
    return a
