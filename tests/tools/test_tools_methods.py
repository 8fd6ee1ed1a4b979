"""Every method name computes what it says: 'hf' is Hartree-Fock, 'pbe'/'b3lyp' are DFT with that functional (the
same numbers as PySCF called directly); unknown functionals and bases, basis paths and impossible charges/spins
are refused before any work, for every method; orbital_energies is a subset of electronic_structure."""

import numpy as np
import pytest
from ase import units

from triscale.tools import ToolInputError
from triscale.tools.calculators import is_dft


def _direct_pyscf(atoms, xc):
    from pyscf import dft, gto, scf

    mol = gto.M(
        atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)],
        unit="Angstrom",
        basis="sto-3g",
        verbose=0,
    )
    if xc == "hf":
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = xc
    mf.verbose = 0
    return mf.kernel() * units.Hartree


def test_hf_pbe_b3lyp_are_what_runs(ws, call):
    sid = call("build_molecule", name="H2").structure_id
    atoms = ws.get(sid)
    energies = {}
    for name, label in (("hf", "hf/sto-3g"), ("pbe", "dft/pbe/sto-3g"), ("b3lyp", "dft/b3lyp/sto-3g")):
        r = call("single_point", structure_id=sid, calculator={"method": name, "basis": "sto-3g"})
        assert r.method == label
        assert r.energy_eV == pytest.approx(_direct_pyscf(atoms, name), abs=1e-6)
        energies[name] = r.energy_eV
    # RHF -30.39, PBE -31.35, B3LYP -31.71 eV: three different numbers, not one functional three times
    values = sorted(energies.values())
    assert min(np.diff(values)) > 0.3, energies
    # 'dft' with an explicit functional is the same calculation as the functional's name
    same = call("single_point", structure_id=sid, calculator={"method": "dft", "functional": "pbe", "basis": "sto-3g"})
    assert same.method == "dft/pbe/sto-3g" and same.energy_eV == pytest.approx(energies["pbe"], abs=1e-6)
    hf = call("single_point", structure_id=sid, calculator={"method": "dft", "functional": "hf", "basis": "sto-3g"})
    assert hf.method == "hf/sto-3g" and hf.energy_eV == pytest.approx(energies["hf"], abs=1e-6)


@pytest.mark.parametrize(
    "calculator, match, listed",
    [
        ({"method": "dft", "functional": "nosuchxc"}, "Unknown functional 'nosuchxc'", "b3lyp"),
        ({"method": "pbe", "functional": "b3lyp"}, "names 'pbe' but functional='b3lyp'", "method 'dft'"),
        ({"method": "hf", "functional": "pbe"}, "names 'hf' but functional='pbe'", "method 'dft'"),
        ({"method": "gfn2-xtb", "functional": "pbe"}, "no exchange-correlation functional", "dft"),
        ({"method": "hf", "basis": "no-such-basis"}, "Unknown basis 'no-such-basis'", "def2-svp"),
        ({"method": "dft", "basis": "/etc/passwd"}, "not a path", "sto-3g"),
        ({"method": "hf", "basis": "../basis.nw"}, "not a path", "sto-3g"),
        ({"method": "gfn2-xtb", "basis": "sto-3g"}, "takes no basis", "'hf' and 'dft'"),
        ("ccsd", "Unknown calculator 'ccsd'", "gfn2-xtb"),
    ],
)
def test_unknown_or_conflicting_options_are_refused_with_the_accepted_list(call, calculator, match, listed):
    with pytest.raises(ToolInputError, match=match) as info:
        call("single_point", structure_id="water", calculator=calculator)
    assert listed in (info.value.hint or "")


def test_a_basis_that_exists_as_a_file_is_refused(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sto-3g").write_text("H S\n 1.0 1.0\n")
    with pytest.raises(ToolInputError, match="not a path"):
        call("single_point", structure_id="water", calculator={"method": "hf", "basis": "sto-3g"})


@pytest.mark.parametrize("method", ["gfn2-xtb", "dft", "hf"])
@pytest.mark.parametrize(
    "charge, spin, match",
    [
        (10, None, "leaves 0 electrons"),
        (None, 20, "10 electrons cannot have 20 unpaired"),
        (None, 1, "10 electrons cannot have 1 unpaired"),
        (1, 0, "9 electrons cannot have 0 unpaired"),
    ],
)
def test_impossible_charge_and_spin_are_refused_for_every_electronic_method(ws, call, method, charge, spin, match):
    calc = {"method": method}
    if charge is not None:
        calc["charge"] = charge
    if spin is not None:
        calc["spin"] = spin
    with pytest.raises(ToolInputError, match=match):
        call("single_point", structure_id="water", calculator=calc)
    # the same check in electronic_structure and orbital_energies
    with pytest.raises(ToolInputError, match=match):
        call("electronic_structure", structure_id="water", method=method, charge=charge, spin=spin)
    with pytest.raises(ToolInputError, match=match):
        call("orbital_energies", structure_id="water", calculator=calc)
    assert not list(ws.root.glob("quantum/*.npz"))  # refused before any work


@pytest.mark.parametrize("method", ["emt", "triscale"])
def test_methods_without_charge_refuse_a_charge(call, method):
    with pytest.raises(ToolInputError, match=f"{method} takes no net charge or spin"):
        call("single_point", structure_id="water", calculator={"method": method, "charge": 1})
    with pytest.raises(ToolInputError, match=f"{method} takes no net charge or spin"):
        call("single_point", structure_id="water", calculator={"method": method, "spin": 2})


def test_a_charged_structure_is_not_silently_neutral(call):
    ion = call("build_molecule", name="[NH4+]").structure_id
    with pytest.raises(ToolInputError, match="emt takes no net charge"):
        call("single_point", structure_id=ion, calculator="emt")
    # xTB takes the structure's charge (10 electrons, closed shell); auto avoids the neutral-only model
    r = call("single_point", structure_id=ion, calculator="gfn2-xtb")
    auto = call("single_point", structure_id=ion)
    assert auto.method == "gfn2-xtb" and auto.energy_eV == pytest.approx(r.energy_eV, abs=1e-8)


def test_open_shell_radical_still_runs(ws, call):
    from tblite.interface import Calculator

    oh = call("build_molecule", name="[OH]").structure_id
    atoms = ws.get(oh)
    direct = Calculator("GFN2-xTB", atoms.numbers, atoms.positions / units.Bohr, uhf=1)
    direct.set("verbosity", 0)
    e_direct = direct.singlepoint().get("energy") * units.Hartree
    r = call("single_point", structure_id=oh, calculator={"method": "gfn2-xtb", "spin": 1})
    o = call("orbital_energies", structure_id=oh, calculator={"method": "gfn2-xtb", "spin": 1})
    assert r.method == o.method == "gfn2-xtb"
    assert r.energy_eV == pytest.approx(e_direct, abs=1e-5) and o.energy_eV == pytest.approx(e_direct, abs=1e-5)
    # 7 valence electrons in the 5 GFN2 AOs of OH (tblite: spin-summed occupations, the pi pair shares 3)
    assert o.n_orbitals == 5 and sum(o.occupations) == pytest.approx(7.0, abs=1e-6)


def test_orbital_energies_is_a_subset_of_electronic_structure(call):
    o = call("orbital_energies", structure_id="water", calculator={"method": "pbe", "basis": "sto-3g"}, n_window=3)
    e = call("electronic_structure", structure_id="water", method="pbe", basis="sto-3g", n_window=3)
    assert o.method == e.method == "dft/pbe/sto-3g"
    for field in ("energy_eV", "homo_eV", "lumo_eV", "gap_eV", "homo_index", "orbital_energies_eV", "occupations"):
        assert getattr(o, field) == getattr(e, field), field
    assert o.n_orbitals == e.n_ao == 7


def test_periodic_xtb_orbitals(call):
    si = call("build_bulk", name="Si").structure_id
    r = call("orbital_energies", structure_id=si, calculator="gfn1-xtb")
    assert r.method == "gfn1-xtb" and r.gap_eV is not None and r.gap_eV > 0
    assert any("Gamma point" in n for n in r.notes)
    with pytest.raises(ToolInputError, match="molecules only"):
        call("orbital_energies", structure_id=si, calculator="hf")


def test_is_dft_for_approval_policies():
    from triscale.tools.calculators import CalculatorSpec

    assert is_dft("pbe") and is_dft("hf") and is_dft({"method": "dft"}) and is_dft(CalculatorSpec(method="b3lyp"))
    assert not is_dft("gfn2-xtb") and not is_dft({"method": "emt"}) and not is_dft(None) and not is_dft("nonsense")


def test_uhf_is_unrestricted_and_rhf_refuses_open_shells(ws, call):
    from pyscf import gto, scf

    sid = call("build_molecule", name="H2").structure_id
    atoms = ws.get(sid)
    r = call("single_point", structure_id=sid, calculator={"method": "uhf", "basis": "sto-3g", "spin": 2})
    mol = gto.M(atom=[("H", tuple(p)) for p in atoms.positions], basis="sto-3g", spin=2, verbose=0)
    assert r.method == "hf/sto-3g" and r.energy_eV == pytest.approx(scf.UHF(mol).kernel() * units.Hartree, abs=1e-6)
    with pytest.raises(ToolInputError, match="restricted calculation cannot have 2 unpaired"):
        call("single_point", structure_id=sid, calculator={"method": "rhf", "basis": "sto-3g", "spin": 2})
