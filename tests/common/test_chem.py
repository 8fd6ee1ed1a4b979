"""The project's one SMILES -> 3D routine: real RDKit embeddings, seeded, bounded, with clear errors."""

import subprocess
import sys

import numpy as np
import pytest

from triscale.common.chem import (
    EmbeddingError,
    MoleculeTooLargeError,
    SmilesError,
    SmilesParseError,
    embed_smiles,
)


def _bonds(atoms, a: str, b: str) -> list[float]:
    d = atoms.get_all_distances()
    s = atoms.get_chemical_symbols()
    return [d[i, j] for i in range(len(s)) for j in range(len(s)) if s[i] == a and s[j] == b and 0 < d[i, j] < 1.7]


def test_ethanol_geometry_hydrogens_and_info():
    (atoms,) = embed_smiles("CCO", seed=1, relax="mmff")
    assert atoms.get_chemical_formula() == "C2H6O" and not atoms.pbc.any()
    assert atoms.info == {"charge": 0, "spin": 0}
    assert min(_bonds(atoms, "C", "C")) == pytest.approx(1.51, abs=0.03)
    assert min(_bonds(atoms, "O", "H")) == pytest.approx(0.97, abs=0.03)


def test_same_seed_bit_identical_other_seed_differs_and_matches_embed_molecule():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    a = embed_smiles("CC(=O)Oc1ccccc1C(=O)O", seed=42)[0]
    b = embed_smiles("CC(=O)Oc1ccccc1C(=O)O", seed=42)[0]
    c = embed_smiles("CC(=O)Oc1ccccc1C(=O)O", seed=43)[0]
    assert np.array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    # one conformer is exactly what RDKit's EmbedMolecule gives with the same seed
    mol = Chem.AddHs(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"))
    params = AllChem.ETKDGv3()
    params.randomSeed = 42
    assert AllChem.EmbedMolecule(mol, params) == 0
    assert np.array_equal(mol.GetConformer().GetPositions(), a.positions)


def test_seed_is_deterministic_across_processes():
    code = "from triscale.common.chem import embed_smiles; print(embed_smiles('CCCCO', seed=5)[0].positions.tolist())"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in (0, 1)]
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stdout.strip() == str(embed_smiles("CCCCO", seed=5)[0].positions.tolist())


def test_several_conformers_are_distinct_and_relaxation_lowers_the_force_field_energy():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    confs = embed_smiles("CCCCCCO", seed=3, n_conformers=4)
    assert 1 <= len(confs) <= 4 and len({c.positions.tobytes() for c in confs}) == len(confs)
    raw, relaxed = embed_smiles("CCCCCCO", seed=3)[0], embed_smiles("CCCCCCO", seed=3, relax="mmff")[0]
    mol = Chem.AddHs(Chem.MolFromSmiles("CCCCCCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    props = AllChem.MMFFGetMoleculeProperties(mol)

    def energy(atoms):
        conf = mol.GetConformer()
        for i, p in enumerate(atoms.positions):
            conf.SetAtomPosition(i, p.tolist())
        return AllChem.MMFFGetMoleculeForceField(mol, props).CalcEnergy()

    assert energy(relaxed) < energy(raw) - 1.0
    uff = embed_smiles("CCCCCCO", seed=3, relax="uff")[0]
    assert not np.allclose(uff.positions, raw.positions)


def test_auto_relax_falls_back_to_uff_where_mmff_has_no_parameters():
    with pytest.raises(EmbeddingError, match="MMFF94 has no parameters"):
        embed_smiles("C[Se]C", relax="mmff")  # MMFF94 has no selenium; UFF has
    raw, auto = embed_smiles("C[Se]C")[0], embed_smiles("C[Se]C", relax="auto")[0]
    assert auto.get_chemical_formula() == "C2H6Se" and not np.allclose(auto.positions, raw.positions)


@pytest.mark.parametrize("bad", ["", "   ", "C1CC", "not a smiles", "C(C)(C)(C)(C)C"])
def test_unparsable_smiles_is_a_clear_value_error(bad):
    with pytest.raises(SmilesParseError, match="not a valid SMILES") as info:
        embed_smiles(bad)
    assert isinstance(info.value, SmilesError) and isinstance(info.value, ValueError)


def test_size_bounds_are_checked_before_embedding(monkeypatch):
    from rdkit.Chem import AllChem

    def forbidden(*args, **kwargs):
        raise AssertionError("embedding attempted for a molecule over the bound")

    monkeypatch.setattr(AllChem, "EmbedMultipleConfs", forbidden)
    with pytest.raises(MoleculeTooLargeError, match="31 heavy atoms; the bound is 30"):
        embed_smiles("C" * 31, max_heavy_atoms=30)
    with pytest.raises(MoleculeTooLargeError, match="with hydrogens"):
        embed_smiles("CCCC", max_heavy_atoms=None, max_atoms=13)  # butane: 14 atoms
    with pytest.raises(MoleculeTooLargeError):
        embed_smiles("C" * 101)  # the default bound: 100 heavy atoms


def test_bad_arguments_are_refused():
    for kwargs in ({"seed": -1}, {"seed": 2**31}, {"n_conformers": 0}, {"relax": "gaff"}):
        with pytest.raises(ValueError):
            embed_smiles("CCO", **kwargs)


def test_charge_and_radicals_are_reported():
    assert embed_smiles("C(=O)[O-]")[0].info == {"charge": -1, "spin": 0}
    assert embed_smiles("[CH3]")[0].info == {"charge": 0, "spin": 1}


def test_embedding_failure_retries_with_random_coordinates_then_raises(monkeypatch):
    from rdkit.Chem import AllChem

    calls = []

    def no_conformer(mol, numConfs, params):  # noqa: N803 - RDKit's keyword names
        calls.append(params.useRandomCoords)
        return []

    monkeypatch.setattr(AllChem, "EmbedMultipleConfs", no_conformer)
    with pytest.raises(EmbeddingError, match="could not embed 'CCO'"):
        embed_smiles("CCO")
    assert calls == [False, True]
