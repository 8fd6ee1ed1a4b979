"""Reusable physics tests for TriScale models (in the spirit of nequip's model test mixins).

Subclass :class:`ModelPhysicsTests` in a test module and provide a ``model`` fixture (a
:class:`~triscale.foundation.FoundationModel`, any config, trained or random). Every test runs in float64 with
tight tolerances on structures that exercise molecules, triclinic periodic cells and slabs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from triscale.foundation import keys as K
from triscale.foundation.calculator import TriScaleCalculator
from triscale.foundation.graph import atoms_to_graph, collate

# float64 tolerances: the model is exactly equivariant, so only rounding remains.
ATOL_ENERGY = 1e-9
ATOL_FORCES = 1e-9
ATOL_STRESS = 1e-9


def random_rotation(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix), times -1 for an improper one."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if reflect else q


def structures(model) -> dict[str, Atoms]:
    """Test structures made of elements the model supports (molecule, triclinic bulk, slab)."""
    supported = set(model.config.supported_elements)

    def pick(*options: str) -> str:
        from ase.data import atomic_numbers

        for symbol in options:
            if atomic_numbers[symbol] in supported:
                return symbol
        raise RuntimeError(f"model supports none of {options}")

    rng = np.random.default_rng(7)
    mol = molecule("CH3CH2OH") if {1, 6, 8} <= supported else molecule("H2O")
    mol.positions += rng.normal(scale=0.05, size=mol.positions.shape)

    metal = pick("Cu", "Al", "Ni", "Na")
    cryst = bulk(metal, "fcc", a=3.7) * (2, 2, 1)
    cell = cryst.cell.array.copy()
    cell[2] += [0.4, -0.3, 0.0]  # make it triclinic
    cryst.set_cell(cell, scale_atoms=True)
    if 8 in supported:
        cryst.numbers[0] = 8  # a second species
    cryst.positions += rng.normal(scale=0.08, size=cryst.positions.shape)

    slab = fcc111(metal, size=(2, 2, 3), vacuum=5.0, a=3.7)
    slab.pbc = (True, True, False)
    slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
    return {"molecule": mol, "bulk": cryst, "slab": slab}


def evaluate(model, atoms: Atoms, domain: str | None = None) -> dict[str, np.ndarray]:
    calc = TriScaleCalculator(model, domain=domain, dtype="float64")
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if np.all(atoms.pbc):
        out["stress"] = atoms.get_stress(voigt=False)
    if "dipole" in calc.results:
        out["dipole"] = calc.results["dipole"]
    return out


def prepare_model(model, seed: int = 0):
    """A float64 eval copy of ``model`` with non-trivial reference energies (so E0 paths are exercised)."""
    model = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        untouched = model.atomic_energies.abs().sum() == 0
        if untouched:
            model.atomic_energies.copy_(-torch.rand(model.atomic_energies.shape, generator=gen, dtype=torch.float64))
    return model


class ModelPhysicsTests:
    """Physics every TriScale model must obey. Subclasses provide a ``model`` fixture."""

    @pytest.fixture
    def physics_model(self, model):
        return prepare_model(model)

    # --- symmetry ---------------------------------------------------------------------------------------
    @pytest.mark.parametrize("name", ["molecule", "bulk", "slab"])
    @pytest.mark.parametrize("reflect", [False, True])
    def test_rotation_reflection_translation(self, physics_model, name, reflect):
        atoms = structures(physics_model)[name]
        ref = evaluate(physics_model, atoms)
        rng = np.random.default_rng(1 + reflect)
        rot = random_rotation(rng, reflect=reflect)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + rng.normal(size=3) * 3.0
        if np.any(atoms.pbc):
            moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        new = evaluate(physics_model, moved)
        np.testing.assert_allclose(new["energy"], ref["energy"], atol=ATOL_ENERGY, rtol=0)
        np.testing.assert_allclose(new["forces"], ref["forces"] @ rot.T, atol=ATOL_FORCES, rtol=0)
        if "stress" in ref:
            np.testing.assert_allclose(new["stress"], rot @ ref["stress"] @ rot.T, atol=ATOL_STRESS, rtol=0)
        if "dipole" in ref:
            np.testing.assert_allclose(new["dipole"], ref["dipole"] @ rot.T, atol=1e-9, rtol=0)

    @pytest.mark.parametrize("name", ["molecule", "bulk"])
    def test_permutation(self, physics_model, name):
        atoms = structures(physics_model)[name]
        perm = np.random.default_rng(3).permutation(len(atoms))
        ref = evaluate(physics_model, atoms)
        new = evaluate(physics_model, atoms[perm])
        np.testing.assert_allclose(new["energy"], ref["energy"], atol=ATOL_ENERGY, rtol=0)
        np.testing.assert_allclose(new["forces"], ref["forces"][perm], atol=ATOL_FORCES, rtol=0)

    def test_periodic_images(self, physics_model):
        atoms = structures(physics_model)["bulk"]
        ref = evaluate(physics_model, atoms)
        big = evaluate(physics_model, atoms * (2, 2, 2))
        np.testing.assert_allclose(big["energy"], 8 * ref["energy"], atol=1e-8, rtol=0)
        np.testing.assert_allclose(big["forces"], np.tile(ref["forces"], (8, 1)), atol=1e-8, rtol=0)
        np.testing.assert_allclose(big["stress"], ref["stress"], atol=1e-9, rtol=0)
        # wrapping atoms into the cell changes nothing either
        shifted = atoms.copy()
        shifted.positions += shifted.cell.array[0] * 1.0 + shifted.cell.array[2] * -2.0
        np.testing.assert_allclose(evaluate(physics_model, shifted)["energy"], ref["energy"], atol=1e-9, rtol=0)

    # --- derivatives ------------------------------------------------------------------------------------
    @pytest.mark.parametrize("name", ["molecule", "bulk", "slab"])
    def test_forces_are_minus_gradient(self, physics_model, name):
        from ase.calculators.fd import calculate_numerical_forces

        atoms = structures(physics_model)[name].copy()
        atoms.calc = TriScaleCalculator(physics_model, dtype="float64")
        analytic = atoms.get_forces()
        indices = [0, 1, len(atoms) - 1]
        numeric = calculate_numerical_forces(atoms, 1e-5, indices)  # float64: truncation error ~h^2, well below atol
        assert np.abs(analytic).max() > 1e-4  # not vacuous
        np.testing.assert_allclose(numeric, analytic[indices], atol=1e-6, rtol=0)

    def test_stress_is_strain_derivative(self, physics_model):
        from ase.calculators.fd import calculate_numerical_stress

        atoms = structures(physics_model)["bulk"].copy()
        atoms.calc = TriScaleCalculator(physics_model, dtype="float64")
        analytic = atoms.get_stress()
        numeric = calculate_numerical_stress(atoms, 1e-5)
        assert np.abs(analytic).max() > 1e-6
        np.testing.assert_allclose(numeric, analytic, atol=1e-7, rtol=0)

    # --- batching, locality, limits -----------------------------------------------------------------------
    def test_batch_equals_unbatched(self, physics_model):
        structs = list(structures(physics_model).values())
        calc = TriScaleCalculator(physics_model, dtype="float64")
        batched = calc.predict(structs, batch_size=8)
        for atoms, res in zip(structs, batched):
            single = evaluate(physics_model, atoms)
            np.testing.assert_allclose(res["energy"], single["energy"], atol=1e-9, rtol=0)
            np.testing.assert_allclose(res["forces"], single["forces"], atol=1e-9, rtol=0)
            if "stress" in single:
                np.testing.assert_allclose(res["stress"], _voigt(single["stress"]), atol=1e-9, rtol=0)

    def test_edge_chunks_match_single_pass(self, physics_model):
        """The memory-bounded chunked path (large systems) gives the same energy, forces and stress."""
        atoms = structures(physics_model)["bulk"]
        ref = evaluate(physics_model, atoms)
        chunked = copy.deepcopy(physics_model)
        chunked.inference_edge_chunk = 7  # many chunks, one of them ragged
        new = evaluate(chunked, atoms)
        for key in ("energy", "forces", "stress"):
            np.testing.assert_allclose(new[key], ref[key], atol=1e-10, rtol=0)

    def test_smooth_at_cutoff(self, physics_model):
        cutoff = physics_model.config.cutoff
        z = physics_model.config.supported_elements[0]

        def energy(r):
            return evaluate(physics_model, Atoms([z, z], positions=[[0, 0, 0], [r, 0, 0]]))

        far = energy(cutoff + 1e-3)["energy"]
        isolated = 2 * evaluate(physics_model, Atoms([z]))["energy"]
        np.testing.assert_allclose(far, isolated, atol=1e-12, rtol=0)
        inside = energy(cutoff - 1e-3)
        # the envelope vanishes with two derivatives: energy and force go to their far values continuously
        assert abs(inside["energy"] - far) < 1e-6
        assert np.abs(inside["forces"]).max() < 1e-4
        assert abs(energy(cutoff - 0.5)["energy"] - far) > 1e-9  # and the pair does interact inside

    def test_isolated_atoms_give_reference_energies(self, physics_model):
        for d, domain in enumerate(physics_model.config.domains):
            for z in physics_model.config.supported_elements_of(domain)[:5]:
                out = evaluate(physics_model, Atoms([z]), domain=domain)
                graph = atoms_to_graph(Atoms([z]), physics_model.config.cutoff, d)
                s, _ = physics_model.encode(graph, graph[K.POSITIONS], graph[K.CELL])
                learned = physics_model.atomic_energies_of(s, graph)[0] - physics_model.atomic_energies[d, z]
                np.testing.assert_allclose(
                    out["energy"], float(physics_model.atomic_energies[d, z] + learned), atol=1e-12, rtol=0
                )
                np.testing.assert_allclose(out["forces"], 0.0, atol=1e-12)

    def test_nve_conserves_energy(self, physics_model):
        from ase import units
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
        from ase.md.verlet import VelocityVerlet

        atoms = structures(physics_model)["bulk"].copy() * (2, 1, 1)
        atoms.calc = TriScaleCalculator(physics_model, dtype="float64")
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
        totals = []
        dyn.attach(lambda: totals.append(atoms.get_total_energy()), interval=1)
        dyn.run(300)
        totals = np.array(totals)
        kinetic_scale = 1.5 * len(atoms) * units.kB * 300
        drift = np.abs(totals - totals[0]).max()
        assert drift < 0.01 * kinetic_scale, f"total-energy drift {drift:.2e} eV over 300 steps"

    # --- persistence and adapters -------------------------------------------------------------------------
    def test_save_load_bit_identical(self, model, tmp_path):
        from triscale.foundation.checkpoints import load_checkpoint

        model = copy.deepcopy(model).float().eval()
        model.save_pretrained(tmp_path)
        loaded = load_checkpoint(tmp_path)
        graph = collate([atoms_to_graph(a, model.config.cutoff) for a in structures(model).values()])
        a = model(graph, compute_forces=True)
        b = loaded(graph, compute_forces=True)
        for key in (K.ENERGY, K.FORCES):
            assert torch.equal(a[key], b[key]), key

    def test_lora_keeps_equivariance_and_merges(self, physics_model):
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(
            copy.deepcopy(physics_model),
            LoraConfig(r=4, lora_alpha=8, target_modules=physics_model.linear_module_names(), init_lora_weights=False),
        ).double()
        adapted = self._check_equivariance(lora)
        base = self._check_equivariance(physics_model)
        assert abs(adapted - base) > 1e-6  # the adapter really changes the model
        merged = lora.merge_and_unload()
        np.testing.assert_allclose(self._check_equivariance(merged), adapted, atol=1e-9, rtol=0)

    @staticmethod
    def _check_equivariance(model) -> float:
        atoms = structures(physics_model_config(model))["bulk"]
        ref = evaluate(model, atoms)
        rot = random_rotation(np.random.default_rng(11), reflect=True)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T
        moved.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        new = evaluate(model, moved)
        np.testing.assert_allclose(new["energy"], ref["energy"], atol=ATOL_ENERGY, rtol=0)
        np.testing.assert_allclose(new["forces"], ref["forces"] @ rot.T, atol=ATOL_FORCES, rtol=0)
        np.testing.assert_allclose(new["stress"], rot @ ref["stress"] @ rot.T, atol=ATOL_STRESS, rtol=0)
        return float(ref["energy"])


def physics_model_config(model):
    """The object with ``.config`` of the FoundationModel (through a PEFT wrapper if needed)."""
    from triscale.foundation.calculator import unwrap_model

    return unwrap_model(model)


def _voigt(stress: np.ndarray) -> np.ndarray:
    return np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]])
