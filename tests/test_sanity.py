"""triscale.sanity: the one structure check shared by the tools and the foundation CLI."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list

from triscale.sanity import MIN_DISTANCE_A, StructureCheckError, check_structure, min_distance


@pytest.mark.parametrize(
    "atoms",
    [
        bulk("Cu", cubic=True),
        bulk("Cu"),  # primitive fcc: 60° cell
        bulk("Si"),
        bulk("Mg"),  # hcp: no pair within 3 Å
        fcc111("Pt", (2, 2, 3), vacuum=5.0),
        Atoms("Cu2", positions=[[0, 0, 0], [1.3, 1.2, 4.0]], cell=[[3, 0, 0], [2.9, 0.8, 0], [0, 0, 0]], pbc=[1, 1, 0]),
        molecule("C6H6"),
    ],
    ids=["cu-cubic", "cu-prim", "si", "mg", "pt-slab", "skewed-2d", "benzene"],
)
def test_min_distance_matches_ase(atoms):
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=3)
    atoms.positions += 7.3  # outside the cell: wrapped internally
    d = neighbor_list("d", atoms, 3.0)
    expected = float(d.min()) if len(d) else None
    assert min_distance(atoms, 3.0) == pytest.approx(expected, abs=1e-12) if expected else min_distance(atoms) is None
    check_structure(atoms)


def test_one_atom_cell_sees_its_images():
    assert min_distance(Atoms("Cu", cell=[2.0, 3.0, 4.0], pbc=True), 3.0) == pytest.approx(2.0)
    assert min_distance(Atoms("Cu", cell=[2.0, 3.0, 4.0], pbc=[0, 1, 1]), 3.5) == pytest.approx(3.0)
    assert min_distance(Atoms("H")) is None


BAD = {
    "empty": (Atoms(), "no atoms"),
    "unknown element": (Atoms(numbers=[0, 1], positions=[[0, 0, 0], [1, 0, 0]]), "unknown element"),
    "nan": (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN or infinite coordinates"),
    "inf cell": (Atoms("Cu", cell=[np.inf, 3, 3], pbc=True), "NaN or infinite entries"),
    "coincident": (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0]]), "Atoms overlap.*0.000"),
    "0.1 Å": (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.1]]), "Atoms overlap.*0.100"),
    "1e12 Å": (Atoms("H2", positions=[[0, 0, 0], [1e12, 0, 0]]), "out of range"),
    "extent 2e4 Å": (Atoms("H2", positions=[[-1e4 + 1, 0, 0], [1e4 - 1, 0, 0]]), "spans"),
    "zero cell": (Atoms("Cu", cell=[0, 0, 0], pbc=True), "zero volume"),
    "dependent cell": (Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True), "zero volume"),
    "0.01 Å cell": (Atoms("Cu", cell=[0.01] * 3, pbc=True), "far too small"),
    "near-singular cell": (Atoms("Cu", cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0.2]], pbc=True), "nearly singular"),
    "image closer than 0.5 Å": (
        Atoms("Cu2", positions=[[0, 0, 0], [2.9, 0, 0]], cell=[3, 3, 3], pbc=True),
        "Atoms overlap.*periodic image",
    ),
    "huge cell vector": (Atoms("Cu", cell=[1e5, 3, 3], pbc=True), "cell vectors"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_structure_refuses(case):
    atoms, pattern = BAD[case]
    with pytest.raises(StructureCheckError, match=pattern):
        check_structure(atoms)
    assert issubclass(StructureCheckError, ValueError)


def test_far_atoms_in_a_slab_are_cheap():
    # vesin spent 40 s on this (non-periodic direction spanning 1e4 Å); the k-d tree does not bin space
    slab = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 9.9e3]], cell=[5, 5, 0], pbc=[1, 1, 0])
    check_structure(slab)
    assert min_distance(slab, 3.0) is None and MIN_DISTANCE_A == 0.5
