"""electronic_structure: the same numbers as direct tblite/PySCF calls, AO layout, caching, files and clear errors."""

import numpy as np
import pytest
import scipy.linalg as sl
from ase import Atoms, units
from ase.build import molecule

from triscale.quantum.electronic import (
    QuantumInputError,
    clear_cache,
    electronic_structure,
    load_npz,
    save_npz,
)


def _tblite(atoms, method="GFN2-xTB"):
    from tblite.interface import Calculator

    calc = Calculator(method, atoms.numbers, atoms.positions / units.Bohr)
    calc.set("verbosity", 0)
    calc.set("save-integrals", 1)
    return calc.singlepoint()


def test_gfn2_matches_direct_tblite():
    atoms = molecule("CH3CH2OH")
    es = electronic_structure(atoms, "gfn2-xtb", use_cache=False)
    ref = _tblite(atoms)
    np.testing.assert_allclose(es.orbital_energies_eV, ref.get("orbital-energies") * units.Hartree, atol=1e-8)
    np.testing.assert_allclose(es.charges_e, ref.get("charges"), atol=1e-8)
    np.testing.assert_allclose(es.dipole_e_A, ref.get("dipole") * units.Bohr, atol=1e-8)
    np.testing.assert_allclose(es.overlap, ref.get("overlap-matrix"), atol=1e-12)
    np.testing.assert_allclose(es.core_hamiltonian_Eh, ref.get("hamiltonian-matrix"), atol=1e-12)
    assert es.energy_eV == pytest.approx(ref.get("energy") * units.Hartree, abs=1e-8)
    # the converged Fock matrix reproduces the orbital energies through F C = S C eps
    eps = sl.eigh(es.fock_Eh, es.overlap, eigvals_only=True) * units.Hartree
    np.testing.assert_allclose(eps, es.orbital_energies_eV, atol=1e-6)
    n_el = int(sum({1: 1, 6: 4, 8: 6}[z] for z in atoms.numbers))  # xTB treats valence electrons only
    assert es.occupations.sum() == pytest.approx(n_el, abs=1e-6)
    assert es.homo_index == n_el // 2 - 1 and es.gap_eV > 3
    # AO layout: H has one s function, C and O have s + 3 p
    assert es.n_ao == sum(1 if z == 1 else 4 for z in atoms.numbers)
    assert list(np.bincount(es.ao_atom)) == [1 if z == 1 else 4 for z in atoms.numbers]
    assert set(es.ao_l[es.ao_atom == 0]) == {0, 1}


def test_tblite_p_order_is_y_z_x():
    # an H atom along +x, +y, +z of a C atom overlaps one p function each: tblite orders p as (y, z, x)
    for axis, expected in ((0, 3), (1, 1), (2, 2)):
        pos = np.zeros((2, 3))
        pos[1, axis] = 1.1
        es = electronic_structure(Atoms("CH", positions=pos), spin=1, use_cache=False)
        s_cp = es.overlap[1:4, 4]
        assert int(np.argmax(np.abs(s_cp))) == expected - 1 and s_cp[expected - 1] > 0.3


def test_pyscf_matches_direct_pyscf():
    from pyscf import dft, gto

    atoms = molecule("H2O")
    es = electronic_structure(atoms, "dft", functional="pbe", basis="sto-3g", use_cache=False)
    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)], basis="sto-3g")
    mol.verbose = 0
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    e = mf.kernel()
    assert es.method == "dft/pbe/sto-3g" and es.code == "pyscf"
    assert es.energy_eV == pytest.approx(e * units.Hartree, abs=1e-5)
    np.testing.assert_allclose(es.orbital_energies_eV, mf.mo_energy * units.Hartree, atol=1e-4)
    np.testing.assert_allclose(es.dipole_e_A, mf.dip_moment(unit="AU", verbose=0) * units.Bohr, atol=1e-5)
    np.testing.assert_allclose(es.charges_e, mf.mulliken_pop(verbose=0)[1], atol=1e-5)
    np.testing.assert_allclose(es.fock_Eh, mf.get_fock(), atol=1e-6)
    assert es.n_ao == 7 and list(es.ao_l) == [0, 0, 1, 1, 1, 0, 0]
    assert es.n_scf_cycles is not None and es.n_scf_cycles > 0


def test_cache_and_npz_round_trip(tmp_path):
    clear_cache()
    atoms = molecule("NH3")
    a = electronic_structure(atoms)
    assert electronic_structure(atoms.copy()) is a  # same geometry and method: the cached object
    moved = atoms.copy()
    moved.positions[0, 0] += 0.01
    assert electronic_structure(moved) is not a
    assert electronic_structure(atoms, "gfn1-xtb") is not a
    b = load_npz(save_npz(a, tmp_path / "x.npz"))
    assert b.method == a.method and b.homo_index == a.homo_index and b.gap_eV == pytest.approx(a.gap_eV)
    np.testing.assert_array_equal(b.fock_Eh, a.fock_Eh)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert {"fock_Eh", "overlap", "density_matrix", "core_hamiltonian_Eh", "ao_atom"} <= set(z.files)


def test_clear_errors():
    with pytest.raises(QuantumInputError, match="limited to 30 atoms"):
        electronic_structure(Atoms("H32", positions=np.arange(96.0).reshape(32, 3)), "dft")
    with pytest.raises(QuantumInputError, match="unpaired"):
        electronic_structure(molecule("H2O"), spin=1)
    with pytest.raises(QuantumInputError, match="Unknown method"):
        electronic_structure(molecule("H2O"), "mp2")
    with pytest.raises(QuantumInputError, match="basis"):
        electronic_structure(molecule("H2O"), "hf", basis="no-such-basis")
    with pytest.raises(QuantumInputError, match="no electronic structure"):
        electronic_structure(molecule("H2O"), "emt")
    with pytest.raises(QuantumInputError, match="names 'pbe' but functional='b3lyp'"):
        electronic_structure(molecule("H2O"), "pbe", functional="b3lyp")
    with pytest.raises(QuantumInputError, match="molecules only"):  # PySCF here is molecular; xTB also periodic
        electronic_structure(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True), "hf")


# ------------------------------------------------------------------------------------------------- the tool


def test_tool_results_files_and_cache(call, ws):
    r = call("electronic_structure", structure_id="water")
    direct = electronic_structure(molecule("H2O"), use_cache=False)
    assert r.method == "gfn2-xtb" and not r.cached
    assert r.gap_eV == pytest.approx(direct.gap_eV, abs=1e-4)
    assert r.charges_e == pytest.approx(list(direct.charges_e), abs=1e-4)
    with np.load(ws.root / r.npz_path) as z:
        np.testing.assert_allclose(z["fock_Eh"], direct.fock_Eh, atol=1e-10)
    again = call("electronic_structure", structure_id=r.structure_id, method="xtb")
    assert again.cached and again.npz_path == r.npz_path and again.gap_eV == r.gap_eV


def test_tool_density_cube_and_png(call, ws):
    r = call(
        "electronic_structure",
        structure_id="water",
        method="hf",
        basis="sto-3g",
        density_cube=True,
        cube_resolution_A=0.2,
    )
    assert r.method == "hf/sto-3g" and r.n_scf_cycles > 0
    cube = (ws.root / r.cube_path).read_text().splitlines()
    n_atoms, nx = int(cube[2].split()[0]), int(cube[3].split()[0])
    assert n_atoms == 3 and nx == r.cube_grid[0]
    # 10 electrons; the O 1s cusp is under-sampled on a 0.2 Å grid, so the integral is a little low
    assert 7.5 < r.cube_integrated_electrons < 10.5
    assert (ws.root / r.png_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tool_errors(call):
    from triscale.tools import ToolInputError
    from triscale.tools.errors import ToolLimitError

    with pytest.raises(ToolInputError, match="H, C, N, O only"):
        call("electronic_structure", structure_id="SH2", density_cube=True)
    with pytest.raises(ToolInputError, match="H, C, N, O only"):
        call("electronic_structure", structure_id="water", method="gfn1-xtb", density_cube=True)
    with pytest.raises(ToolLimitError, match="limited to 30 atoms"):  # the same limit check as single_point
        call("electronic_structure", structure_id="CCCCCCCCCC", method="dft")
    with pytest.raises(ToolInputError, match="method"):
        call("electronic_structure", structure_id="water", method="ccsd")


def test_gfn2_valence_density_from_the_rebuilt_basis(tmp_path):
    # the GFN2 basis rebuilt for PySCF reproduces tblite's overlap (checked inside) and the valence density
    # integrates to the valence electron count; the on-grid density matches a direct AO evaluation at a point
    from pyscf.dft import numint

    from triscale.quantum.electronic import _density_mol, density_cube, density_slice_png

    es = electronic_structure(molecule("CH3CH2OH"), use_cache=False)
    mol, dm, kind = _density_mol(es)
    assert kind == "valence" and mol.nao == es.n_ao
    _, shape, n_el = density_cube(es, tmp_path / "d.cube", resolution_A=0.12)
    assert 18.5 < n_el < 20.2  # 2x4 (C) + 6 (O) + 6 (H) valence electrons; 2s primitives are still sharp
    assert (tmp_path / "d.cube").stat().st_size > 1000
    png, rho_max = density_slice_png(es, tmp_path / "d.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and rho_max > 0.1
    # Mulliken populations from the permuted density and PySCF's overlap equal tblite's charge-free sum
    s = mol.intor("int1e_ovlp")
    assert np.trace(dm @ s) == pytest.approx(20.0, abs=1e-6)
    rho0 = numint.eval_rho(mol, mol.eval_gto("GTOval", es.positions[:1] / 0.529177210903), dm)
    assert rho0[0] > 0
