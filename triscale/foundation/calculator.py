"""ASE calculator for TriScale models, single or as a committee, plus batched prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, InputError, all_changes
from ase.data import chemical_symbols

from triscale.foundation import keys as K
from triscale.foundation.graph import StructureError, atoms_to_graph, check_model_input, collate, graph_to

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class UnsupportedStructureError(InputError, StructureError):
    """Raised by the calculator for inputs the model cannot evaluate (an ASE ``InputError`` and a ``ValueError``)."""


def _full_3x3_to_voigt(stress: np.ndarray) -> np.ndarray:
    return np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]])


def unwrap_model(model) -> torch.nn.Module:
    """The FoundationModel inside a PEFT wrapper (for its config); the wrapper itself still runs forward."""
    base = model
    while not hasattr(base, "config") or not hasattr(base.config, "cutoff"):
        if hasattr(base, "get_base_model"):
            base = base.get_base_model()
        elif hasattr(base, "model"):
            base = base.model
        else:
            raise TypeError(f"{type(model).__name__} is not a TriScale model")
    return base


#: Below this many atoms one intra-op thread beats several: the kernels are tiny and waking threads dominates
#: (ethanol, float64, energy + forces with 2 threads vs 1: 32 vs 11 ms under OMP_WAIT_POLICY=PASSIVE, which the
#: tools' workers use; 10.6 vs 9.1 ms for aspirin with spinning threads). From ~32 atoms on, threads pay again.
SMALL_SYSTEM_ATOMS = 24


@contextlib.contextmanager
def _intra_op_threads(n: int | None):
    """torch's intra-op thread count set to ``n`` for the block and restored after it (``None``: unchanged)."""
    before = torch.get_num_threads()
    if n is None or n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TriScaleCalculator(Calculator):
    """An ASE calculator for a :class:`FoundationModel` (optionally PEFT-adapted) or a committee of them.

    Args:
        model: a model, or a sequence of models (a committee: results are the mean, and ``energy_std``,
            ``forces_std`` (and ``stress_std``) the standard deviation across members).
        domain: label domain (``"molecule"``, ``"material"``, ...). ``None``: ``"material"`` for structures
            periodic in any direction, else ``"molecule"``.
        dtype: ``"float32"`` (default, fast) or ``"float64"``; the model is copied into that dtype, torch's global
            default dtype is never touched.
        device: torch device.
        max_atoms: refuse structures larger than this.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "dipole", "charges"]

    def __init__(
        self,
        model,
        domain: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        max_atoms: int = 100_000,
        conformal: dict | None = None,
        **kwargs,
    ):
        """``conformal``: a committee's split-conformal calibration (``energy_per_atom``/``forces`` entries, as a
        fine-tuned committee stores in its metadata); then ``results`` also hold the calibrated half-widths
        ``energy_uncertainty`` (eV) and ``forces_uncertainty`` (eV/Å, per component) of the committee mean."""
        super().__init__(**kwargs)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        if not members:
            raise ValueError("a committee needs at least one model")
        self.dtype = _DTYPES[dtype]
        self.device = torch.device(device)
        self.models = [m.to(device=self.device, dtype=self.dtype).eval() for m in members]
        self.config = unwrap_model(self.models[0]).config
        for m in self.models[1:]:
            other = unwrap_model(m).config
            if other.cutoff != self.config.cutoff or other.domains != self.config.domains:
                raise ValueError("committee members must share cutoff and domains")
        if domain is not None:
            self.config.domain_index(domain)  # validates
        self.domain = domain
        self.max_atoms = max_atoms
        self.conformal = {}
        if conformal:
            from triscale.uncertainty import SplitConformal

            self.conformal = {k: SplitConformal.from_dict(v) for k, v in conformal.items()}

    @property
    def is_committee(self) -> bool:
        return len(self.models) > 1

    def domain_of(self, atoms: Atoms) -> str:
        if self.domain is not None:
            return self.domain
        return "material" if np.any(atoms.pbc) else "molecule"

    def _graph(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        try:
            check_model_input(atoms, self.config.supported_elements, self.max_atoms)
        except StructureError as err:
            raise UnsupportedStructureError(str(err)) from None
        name = self.domain_of(atoms)
        # An element the model knows from another domain has no fitted E0 in this one: refuse, don't guess.
        missing = sorted(set(atoms.numbers.tolist()) - set(self.config.supported_elements_of(name)))
        if missing:
            others = [
                d
                for d in self.config.domains
                if d != name and not set(missing) - set(self.config.supported_elements_of(d))
            ]
            hint = f"; domain(s) {others} cover them (pass domain=...)" if others else ""
            raise UnsupportedStructureError(
                f"element(s) {' '.join(chemical_symbols[z] for z in missing)} have no {name!r}-domain training data"
                f"{hint}"
            )
        return atoms_to_graph(atoms, self.config.cutoff, self.config.domain_index(name))

    def _evaluate(self, graph: dict[str, torch.Tensor], stress: bool) -> list[dict[str, np.ndarray]]:
        graph = graph_to(graph, self.dtype, self.device)
        outputs = []
        for model in self.models:
            out = model(graph, compute_forces=True, compute_stress=stress, create_graph=False)
            outputs.append({k: v.detach().cpu().numpy().astype(np.float64) for k, v in out.items()})
        return outputs

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        graph = self._graph(self.atoms)
        periodic = bool(np.all(self.atoms.pbc))
        with _intra_op_threads(1 if len(self.atoms) < SMALL_SYSTEM_ATOMS else None):
            members = self._evaluate(graph, stress=periodic)
        self.results = self._combine(members, 0, slice(None), periodic, molecular=not np.any(self.atoms.pbc))

    def _combine(self, members, index: int, atom_slice: slice, periodic: bool, molecular: bool) -> dict:
        """Results of structure ``index`` (its atoms at ``atom_slice``): committee mean, and std if a committee."""

        def stack(key, sl=None):
            return np.stack([m[key][sl] if sl is not None else m[key][index] for m in members])

        energies = stack(K.ENERGY)
        forces = stack(K.FORCES, atom_slice)
        results = {
            "energy": float(energies.mean()),
            "free_energy": float(energies.mean()),
            "energies": stack(K.ATOMIC_ENERGIES, atom_slice).mean(0),
            "forces": forces.mean(0),
        }
        if periodic:
            stresses = np.stack([_full_3x3_to_voigt(m[K.STRESS][index]) for m in members])
            results["stress"] = stresses.mean(0)
        if K.DIPOLE in members[0] and molecular:
            results["dipole"] = stack(K.DIPOLE).mean(0)
            results["charges"] = stack(K.CHARGES, atom_slice).mean(0)
        if self.is_committee:
            results["energy_std"] = float(energies.std())
            results["forces_std"] = forces.std(0)
            if periodic:
                results["stress_std"] = stresses.std(0)
            n = forces.shape[1]
            if "energy_per_atom" in self.conformal:  # calibrated on energies per atom: scale back to the structure
                results["energy_uncertainty"] = n * float(
                    self.conformal["energy_per_atom"].half_width(results["energy_std"] / n)
                )
            if "forces" in self.conformal:
                results["forces_uncertainty"] = self.conformal["forces"].half_width(results["forces_std"])
        return results

    def predict(self, structures: Sequence[Atoms], batch_size: int = 32) -> list[dict]:
        """Results dicts (same keys as ``calc.results``) for many structures, evaluated in batches."""
        results: list[dict] = []
        structures = list(structures)
        for start in range(0, len(structures), batch_size):
            chunk = structures[start : start + batch_size]
            graphs = [self._graph(a) for a in chunk]
            periodic = [bool(np.all(a.pbc)) for a in chunk]
            members = self._evaluate(collate(graphs), stress=any(periodic))
            offset = 0
            for i, atoms in enumerate(chunk):
                n = len(atoms)
                atom_slice = slice(offset, offset + n)
                results.append(self._combine(members, i, atom_slice, periodic[i], not np.any(atoms.pbc)))
                offset += n
        return results
