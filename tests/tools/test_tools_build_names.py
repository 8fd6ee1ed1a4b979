"""build_molecule: the canonical SMILES it built, names from ASE's g2 synonyms and the small SMILES table."""

import pytest
from rdkit import Chem

from triscale.tools import ToolInputError
from triscale.tools.builders import _EXTRA_NAMES, _OPEN_SHELL_SMILES, molecule_from_text, molecule_smiles


def _canon(smiles):
    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


@pytest.mark.parametrize(
    "args, formula, smiles",
    [
        ({"smiles": "OCC"}, "C2H6O", "CCO"),  # canonicalised, not echoed
        ({"smiles": "[C-]#[O+]"}, "CO", "[C-]#[O+]"),
        ({"name": "carbonic acid"}, "CH2O3", "O=C(O)O"),
        ({"name": "Carbonic  Acid"}, "CH2O3", "O=C(O)O"),
        ({"name": "water"}, "H2O", "O"),  # g2 geometry, SMILES from RDKit's bond perception
        ({"name": "sulfur dioxide"}, "O2S", "O=S=O"),
        ({"name": "carbonic difluoride"}, "CF2O", "O=C(F)F"),  # a synonym in g2's 'name' field
        ({"name": "methyl cyanide"}, "C2H3N", "CC#N"),
        ({"name": "nitrogen dioxide"}, "NO2", "[O]N=O"),  # open shell: from the radical table
        ({"name": "caffeine"}, "C8H10N4O2", _canon("Cn1cnc2c1c(=O)n(C)c(=O)n2C")),
    ],
)
def test_build_molecule_returns_its_canonical_smiles(call, args, formula, smiles):
    r = call("build_molecule", **args)
    assert r.formula == formula and r.smiles == smiles


def test_every_table_smiles_matches_what_is_built():
    for name, target in _EXTRA_NAMES.items():
        atoms, label, _ = molecule_from_text(name)
        smi = molecule_smiles(atoms, label)
        if target.startswith("smiles:"):
            assert smi == _canon(target[7:]), name
    for key, smi in _OPEN_SHELL_SMILES.items():
        atoms, label, _ = molecule_from_text(key)
        assert molecule_smiles(atoms, label) == _canon(smi)
        assert atoms.info["spin"] == 1  # really an odd-electron g2 molecule


def test_unknown_names_are_refused(call):
    for bad in ("unobtainium acid", "carbonic", "2A"):
        with pytest.raises(ToolInputError, match="not a known molecule name"):
            call("build_molecule", name=bad)


def test_smiles_of_periodic_or_mislabelled_structures():
    from ase.build import bulk

    assert molecule_smiles(bulk("Cu")) is None
    atoms, _, _ = molecule_from_text("CO")  # carbon monoxide; the label 'CO' read as SMILES would be methanol
    assert molecule_smiles(atoms, "CO") == "[C-]#[O+]"


@pytest.mark.parametrize(
    "text, formula, periodic",
    [
        ("Al", "Al", True),  # an element alone: its reference crystal (fcc), not one atom
        ("aluminium", "Al", True),
        ("al", "Al", True),
        ("Co", "Co2", True),  # cobalt (hcp) ...
        ("CO", "CO", False),  # ... and carbon monoxide
        ("co", "CO", False),  # a lower-case symbol that names a molecule stays the molecule
        ("C", "C", False),  # carbon: not diamond ('C' is also methane's SMILES; g2 wins as before)
        ("water", "H2O", False),
    ],
)
def test_structure_references_name_crystals_for_elements(text, formula, periodic):
    from triscale.tools.builders import structure_from_text

    atoms, _, _ = structure_from_text(text)
    assert atoms.get_chemical_formula() == formula and bool(atoms.pbc.all()) is periodic
    if text != "aluminium":  # no molecule has that name
        molecule, _, _ = structure_from_text(text, crystals=False)  # reaction species: molecules only
        assert not molecule.pbc.any()
