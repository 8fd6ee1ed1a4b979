"""Every simulation tool against the same computation done directly with ASE / tblite / PySCF."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.optimize import BFGS

tblite_ase = pytest.importorskip("tblite.ase")


def _xtb():
    return tblite_ase.TBLite(method="GFN2-xTB", verbosity=0)


def test_eos_cu_emt_matches_ase_fit(ws, call):
    cu = call("build_bulk", name="Cu", cubic=True)
    r = call("equation_of_state", structure_id=cu.structure_id, calculator="emt", volume_range=0.06, n_points=9)
    # direct: the same volumes with ASE's EMT and EquationOfState
    atoms = bulk("Cu", cubic=True)
    cell0 = atoms.cell.copy()
    vols, ens = [], []
    for s in np.linspace(0.94, 1.06, 9) ** (1 / 3):
        atoms.set_cell(cell0 * s, scale_atoms=True)
        atoms.calc = EMT()
        vols.append(atoms.get_volume())
        ens.append(atoms.get_potential_energy())
    v0, e0, b = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
    assert r.lattice_constant_A == pytest.approx(v0 ** (1 / 3), abs=1e-5)
    assert r.bulk_modulus_GPa == pytest.approx(b / units.GPa, rel=1e-4)
    assert r.minimum_energy_eV == pytest.approx(e0, abs=1e-5)
    assert 3.55 < r.lattice_constant_A < 3.62  # EMT Cu: 3.59 Å
    assert r.bravais_lattice == "CUB"
    # the equilibrium structure is stored as a child
    assert ws.record(r.structure_id)["parent"] == cu.structure_id
    assert ws.get(r.structure_id).get_volume() == pytest.approx(v0, rel=1e-6)


def test_eos_primitive_cells_report_the_conventional_lattice(call):
    # a primitive fcc cell has cell lengths a/sqrt(2); the tool reports the conventional a, as the cubic cell does
    cubic = call(
        "equation_of_state", structure_id=call("build_bulk", name="Cu", cubic=True).structure_id, calculator="emt"
    )
    prim = call("equation_of_state", structure_id=call("build_bulk", name="Cu").structure_id, calculator="emt")
    assert prim.bravais_lattice == "FCC" and cubic.bravais_lattice == "CUB"
    assert prim.lattice_constant_A == pytest.approx(cubic.lattice_constant_A, abs=2e-3)
    assert prim.cell_lengths_A[0] == pytest.approx(prim.lattice_constant_A / np.sqrt(2), rel=1e-6)
    hcp = call(
        "equation_of_state",
        structure_id=call("build_bulk", name="Ni", crystalstructure="hcp", a_A=2.5).structure_id,
        calculator="emt",
    )
    assert hcp.bravais_lattice == "HEX" and hcp.lattice_c_A == pytest.approx(
        hcp.lattice_constant_A * np.sqrt(8 / 3), rel=1e-6
    )


def test_single_point_matches_direct(ws, call):
    r = call("single_point", structure_id="water", calculator="gfn2-xtb")
    atoms = molecule("H2O")
    atoms.calc = _xtb()
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    assert r.energy_eV == pytest.approx(e, abs=1e-5)
    assert r.max_force_eV_per_A == pytest.approx(np.linalg.norm(f, axis=1).max(), abs=1e-5)
    np.testing.assert_allclose(r.dipole_e_A, atoms.get_dipole_moment(), atol=1e-5)
    np.testing.assert_allclose(r.charges_e, atoms.get_charges(), atol=1e-4)
    # stress of strained Cu with EMT
    cu = call("build_bulk", name="Cu", a_A=3.5, cubic=True)
    s = call("single_point", structure_id=cu.structure_id, calculator="emt")
    ref = bulk("Cu", a=3.5, cubic=True)
    ref.calc = EMT()
    np.testing.assert_allclose(s.stress_eV_per_A3, ref.get_stress(), atol=1e-7)
    assert s.pressure_GPa == pytest.approx(-ref.get_stress()[:3].mean() / units.GPa, rel=1e-4)
    assert s.pressure_GPa > 0  # compressed


def test_optimize_matches_direct_bfgs_and_cell_relax(ws, call):
    r = call("optimize_geometry", structure_id="water", calculator="gfn2-xtb", fmax_eV_per_A=0.01)
    atoms = molecule("H2O")
    atoms.calc = _xtb()
    BFGS(atoms, logfile=None).run(fmax=0.01)
    assert r.converged and r.energy_final_eV == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
    assert r.max_force_eV_per_A < 0.01
    assert (ws.root / r.trajectory_file).exists()
    # cell relaxation with FrechetCellFilter lands on the EMT equilibrium lattice constant
    cu = call("build_bulk", name="Cu", a_A=3.75, cubic=True)
    rc = call(
        "optimize_geometry",
        structure_id=cu.structure_id,
        calculator="emt",
        relax_cell=True,
        fmax_eV_per_A=0.001,
    )
    eos = call("equation_of_state", structure_id=rc.structure_id, calculator="emt", volume_range=0.02)
    assert rc.converged and abs(rc.pressure_GPa) < 0.05
    assert rc.cell_lengths_A[0] == pytest.approx(eos.lattice_constant_A, abs=2e-3)


def test_md_nve_matches_direct_velocity_verlet(ws, call):
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    cu = call("build_bulk", name="Cu", cubic=True, repeat=[2, 2, 2])
    r = call(
        "molecular_dynamics",
        structure_id=cu.structure_id,
        calculator="emt",
        ensemble="nve",
        temperature_K=600,
        timestep_fs=2.0,
        steps=100,
        interval=10,
        seed=7,
    )
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(7))
    Stationary(atoms)
    VelocityVerlet(atoms, timestep=2.0 * units.fs).run(100)
    assert r.potential_energy_final_eV == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    assert abs(r.energy_drift_eV_per_atom_per_ps) < 1e-3 and r.total_energy_std_eV < 1e-3
    assert 150 < r.temperature_mean_K < 600 and r.n_frames == 11
    from ase.io import read

    frames = read(ws.root / r.trajectory_file, index=":")
    assert len(frames) == 11


def test_md_langevin_and_npt_run(ws, call):
    nvt = call(
        "molecular_dynamics",
        structure_id="water",
        calculator="gfn2-xtb",
        ensemble="nvt",
        temperature_K=300,
        steps=40,
        interval=5,
    )
    assert nvt.n_frames == 9 and nvt.temperature_mean_K > 0
    cu = call("build_bulk", name="Cu", cubic=True, repeat=[2, 2, 2])
    npt = call(
        "molecular_dynamics",
        structure_id=cu.structure_id,
        calculator="emt",
        ensemble="npt",
        temperature_K=300,
        timestep_fs=2.0,
        steps=50,
        interval=10,
        pressure_GPa=0.0,
    )
    assert npt.volume_mean_A3 is not None and npt.volume_mean_A3 > 0


@pytest.fixture
def relaxed_water(ws, call):
    r = call("optimize_geometry", structure_id="water", calculator="gfn2-xtb", fmax_eV_per_A=0.001)
    atoms = ws.get(r.structure_id)
    atoms.info.clear()
    return r.structure_id, atoms


def test_vibrations_and_ir_match_ase(ws, call, relaxed_water, tmp_path):
    from ase.vibrations import Infrared

    sid, atoms = relaxed_water
    r = call("vibrational_analysis", structure_id=sid, calculator="gfn2-xtb", optimize_first=False)
    atoms.calc = _xtb()
    ir = Infrared(atoms, name=str(tmp_path / "ir"), delta=0.01, nfree=2)
    ir.run()
    ref = np.sort(ir.get_frequencies().real)[-3:]
    np.testing.assert_allclose(r.vibrational_frequencies_cm1, ref, atol=0.05)
    assert 1400 < r.vibrational_frequencies_cm1[0] < 1700 and r.n_imaginary == 0
    order = np.argsort(ir.get_frequencies().real)[-3:]
    np.testing.assert_allclose(r.ir_intensities_D2_per_A2_amu, np.asarray(ir.intensities)[order], rtol=1e-3)
    assert r.zero_point_energy_eV == pytest.approx(0.5 * np.sum(ir.get_energies().real[order]), abs=1e-5)


def test_thermochemistry_matches_idealgasthermo(ws, call, relaxed_water, tmp_path):
    from ase.thermochemistry import IdealGasThermo
    from ase.vibrations import Vibrations

    sid, atoms = relaxed_water
    r = call(
        "thermochemistry",
        structure_id=sid,
        calculator="gfn2-xtb",
        optimize_first=False,
        temperature_K=400.0,
        pressure_Pa=2e5,
    )
    atoms.calc = _xtb()
    e = atoms.get_potential_energy()
    vib = Vibrations(atoms, name=str(tmp_path / "vib"), delta=0.01, nfree=2)
    vib.run()
    th = IdealGasThermo(
        vib.get_energies(),
        "nonlinear",
        potentialenergy=e,
        atoms=atoms,
        symmetrynumber=2,
        spin=0,
        ignore_imag_modes=True,
    )
    assert r.symmetry_number == 2 and r.geometry == "nonlinear"
    assert r.gibbs_free_energy_eV == pytest.approx(th.get_gibbs_energy(400.0, 2e5, verbose=False), abs=1e-5)
    assert r.enthalpy_eV == pytest.approx(th.get_enthalpy(400.0, verbose=False), abs=1e-5)
    assert r.entropy_eV_per_K == pytest.approx(th.get_entropy(400.0, 2e5, verbose=False), abs=1e-8)


def test_linear_molecule_thermo_symmetry(call):
    r = call("thermochemistry", structure_id="CO2", calculator="gfn2-xtb")
    assert r.geometry == "linear" and r.symmetry_number == 2 and len(r.vibrational_frequencies_cm1) == 4


def test_reaction_energy_matches_species_energies(ws, call):
    r = call("reaction_energy", reaction="2 H2 + O2 -> 2 H2O", calculator="gfn2-xtb")
    e = {}
    for s in r.species:
        atoms = ws.get(s["structure_id"])
        atoms.calc = tblite_ase.TBLite(method="GFN2-xTB", verbosity=0, multiplicity=atoms.info["spin"] + 1)
        e[s["name"]] = atoms.get_potential_energy()
    assert ws.get(next(s["structure_id"] for s in r.species if s["name"] == "O2")).info["spin"] == 2
    ref = 2 * e["H2O"] - 2 * e["H2"] - e["O2"]
    assert r.reaction_energy_eV == pytest.approx(ref, abs=1e-4)
    assert r.reaction_energy_kJ_per_mol == pytest.approx(ref * 96.485332, rel=1e-4)
    assert r.reaction_energy_eV < 0


def test_reaction_free_energy(call):
    r = call("reaction_energy", reaction="H2 + Cl2 -> 2 HCl", calculator="gfn2-xtb", free_energy=True)
    assert r.reaction_gibbs_energy_eV is not None and r.reaction_enthalpy_eV is not None
    # no change in the number of gas molecules: ΔG stays close to ΔH (|TΔS| small)
    assert abs(r.reaction_gibbs_energy_eV - r.reaction_enthalpy_eV) < 0.15


def test_reaction_species_take_their_lowest_conformer(ws, call):
    """g2's ethanol (anti) relaxes with GFN2-xTB into a minimum above the gauche one an RDKit conformer reaches;
    the reaction uses the lowest of the species' relaxed starting geometries (conformers=1: the built one only)."""
    many = call("reaction_energy", reaction="C2H4 + H2O -> ethanol", calculator="gfn2-xtb")
    one = call("reaction_energy", reaction="C2H4 + H2O -> ethanol", calculator="gfn2-xtb", conformers=1)
    e_many, e_one = (next(s for s in r.species if s["name"] == "ethanol") for r in (many, one))
    assert e_many["conformers_tried"] == 4 and e_one["conformers_tried"] == 1
    lowered = e_one["energy_eV"] - e_many["energy_eV"]
    assert lowered > 0.03  # 0.067 eV with tblite 0.4
    assert many.reaction_energy_eV == pytest.approx(one.reaction_energy_eV - lowered, abs=1e-5)
    assert any("RDKit conformer relaxed" in n for n in many.notes)
    assert all(s["conformers_tried"] == 1 for s in many.species if s["name"] != "ethanol")  # < 3 heavy atoms


def test_orbitals_xtb_and_pyscf_match_direct(ws, call):
    from pyscf import gto, scf
    from tblite.interface import Calculator

    r = call("orbital_energies", structure_id="water", calculator="gfn2-xtb")
    atoms = molecule("H2O")
    calc = Calculator("GFN2-xTB", atoms.numbers, atoms.positions / units.Bohr)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    eps = res.get("orbital-energies") * units.Hartree
    assert r.homo_index == 3 and r.homo_eV == pytest.approx(eps[3], abs=1e-4)
    assert r.gap_eV == pytest.approx(eps[4] - eps[3], abs=1e-4)
    d = call(
        "orbital_energies",
        structure_id="water",
        calculator={"method": "dft", "functional": "hf", "basis": "sto-3g"},
    )
    mol = gto.M(
        atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)],
        basis="sto-3g",
        verbose=0,
    )
    mf = scf.RHF(mol)
    mf.kernel()
    assert d.homo_index == 4
    assert d.homo_eV == pytest.approx(mf.mo_energy[4] * units.Hartree, abs=1e-4)
    assert d.energy_eV == pytest.approx(mf.e_tot * units.Hartree, abs=1e-4)


def test_dft_single_point_matches_pyscf(call):
    from pyscf import dft, gto

    r = call("single_point", structure_id="H2", calculator={"method": "dft", "functional": "pbe", "basis": "6-31g"})
    atoms = molecule("H2")
    mol = gto.M(atom=[("H", p) for p in atoms.positions], basis="6-31g", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "pbe"
    assert r.energy_eV == pytest.approx(mf.kernel() * units.Hartree, abs=1e-4)
    assert r.method == "dft/pbe/6-31g" and r.dipole_magnitude_debye == pytest.approx(0.0, abs=1e-3)


@pytest.mark.slow
def test_chgnet_single_point_and_stress_units(ws, call):
    """CHGNet via the factory matches CHGNet used directly; its stress is in eV/Å³ (finite differences)."""
    pytest.importorskip("chgnet")
    from chgnet.model.dynamics import CHGNetCalculator

    si = call("build_bulk", name="Si", a_A=5.30, cubic=False)
    r = call("single_point", structure_id=si.structure_id, calculator="chgnet")
    atoms = bulk("Si", a=5.30)
    atoms.calc = CHGNetCalculator(use_device="cpu")
    assert r.energy_eV == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(r.stress_eV_per_A3, atoms.get_stress(), atol=1e-5)
    # stress_xx = (1/V) dE/d(eps_xx): central difference of the energy under a small strain
    h, v = 1e-3, atoms.get_volume()
    es = []
    for sgn in (1, -1):
        a = atoms.copy()
        strain = np.eye(3)
        strain[0, 0] += sgn * h
        a.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        a.calc = atoms.calc
        es.append(a.get_potential_energy())
    assert r.stress_eV_per_A3[0] == pytest.approx((es[0] - es[1]) / (2 * h * v), abs=2e-3)


def test_vibrations_on_a_minimum_reuse_the_structure(ws, call, relaxed_water):
    sid, _ = relaxed_water
    n = ws.count()
    r = call("vibrational_analysis", structure_id=sid, calculator="gfn2-xtb", fmax_eV_per_A=0.01, ir=False)
    assert r.structure_id == sid and r.parent_id is None and ws.count() == n
    assert r.ir_intensities_D2_per_A2_amu is None


def test_thermochemistry_uses_the_calculations_spin(call):
    # O2 built without a spin but computed as a triplet: the electronic entropy is R ln 3 (spin S = 1), the spin
    # the calculation used, not the structure's 0.
    sid = call("build_molecule", smiles="O=O").structure_id
    r = call("thermochemistry", structure_id=sid, calculator={"method": "gfn2-xtb", "spin": 2}, optimize_first=False)
    assert r.spin_S == 1.0
