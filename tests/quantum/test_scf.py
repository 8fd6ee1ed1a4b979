"""SCF-acceleration plumbing: the density of an exact Fock matrix is PySCF's density, and an SCF started from it
converges in fewer cycles than from minao (so a good predicted Fock matrix would show up as saved cycles)."""

import numpy as np
from ase.build import molecule

from triscale.quantum.electronic import electronic_structure
from triscale.quantum.scf import compare_guesses, density_from_fock


def test_density_from_exact_fock_and_cycles():
    atoms = molecule("H2O")
    es = electronic_structure(atoms, "hf", basis="sto-3g", use_cache=False)
    dm = density_from_fock(es.fock_Eh, es.overlap, 5)
    np.testing.assert_allclose(dm, es.density_matrix, atol=1e-4)  # SCF converged to PySCF's default tolerance
    runs = compare_guesses(atoms, es.fock_Eh, "sto-3g", "hf", guesses=("minao",))
    assert runs["predicted"]["converged"] and runs["minao"]["converged"]
    assert runs["predicted"]["cycles"] < runs["minao"]["cycles"]
    assert abs(runs["predicted"]["energy_Eh"] - runs["minao"]["energy_Eh"]) < 1e-7
    # a bad "prediction" (the core Hamiltonian) is no better than minao
    bad = compare_guesses(atoms, es.core_hamiltonian_Eh, "sto-3g", "hf", guesses=())
    assert bad["predicted"]["cycles"] > runs["predicted"]["cycles"]
