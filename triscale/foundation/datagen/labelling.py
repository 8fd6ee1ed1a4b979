"""Labelling: one fresh single point per stored frame (GFN2-xTB or CHGNet), per-process calculators, threads."""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from typing import Any

import numpy as np

from triscale.common import VERSION
from triscale.foundation.datagen.config import UNITS, MaterialConfig, MoleculeConfig

__all__ = [
    "FrameSkipped",
    "check_energy",
    "chgnet_calculator",
    "code_versions",
    "common_info",
    "init_labelling_worker",
    "label_material",
    "label_molecule",
    "quiet",
    "single_thread",
    "xtb_calculator",
]

# extxyz stores positions and per-atom arrays with 8 decimals ("%16.8f"); labels use rounded positions.
_DECIMALS = 8


# ------------------------------------------------------------------------------------------- labelling
def code_versions(domain: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    extra = {"molecule": ["rdkit", "tblite"], "molecule-dft": ["rdkit", "pandas", "qm9pack"]}
    names = ["ase", "numpy"] + extra.get(domain, ["chgnet", "torch", "pymatgen"])
    versions = {"triscale": VERSION}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover
            versions[name] = "unknown"
    return json.dumps(versions, sort_keys=True, separators=(",", ":"))


class FrameSkipped(Exception):
    """A frame that is not stored; the message says why."""


def _rounded(atoms):
    """A clean copy (no calculator, info, tags, velocities) with positions rounded as extxyz stores them."""
    from ase import Atoms

    frame = Atoms(
        numbers=atoms.numbers,
        positions=np.round(atoms.positions, _DECIMALS),
        cell=atoms.cell.array,
        pbc=atoms.pbc,
    )
    magmoms = atoms.get_initial_magnetic_moments()
    if np.abs(magmoms).sum() > 0:
        frame.set_initial_magnetic_moments(magmoms)
    return frame


def _check_labels(energy: float, forces: np.ndarray, max_force: float, extra: np.ndarray | None = None) -> None:
    values = [np.asarray(energy, dtype=float).ravel(), forces.ravel()]
    if extra is not None:
        values.append(np.asarray(extra, dtype=float).ravel())
    if not all(np.isfinite(v).all() for v in values):
        raise FrameSkipped("non-finite label")
    largest = float(np.abs(forces).max()) if forces.size else 0.0
    if largest > max_force:
        raise FrameSkipped(f"max force > {max_force:g} eV/A ({largest:.1f})")


def check_energy(energy: float) -> None:
    """``FrameSkipped`` for a non-finite energy (energy-only frames)."""
    if not np.isfinite(float(energy)):
        raise FrameSkipped("non-finite label")


def label_molecule(atoms, calc, max_force: float = 20.0):
    """A copy of ``atoms`` (positions rounded to 1e-8 Å) with GFN2-xTB labels under REF_ keys, no calculator.

    Raises ``FrameSkipped`` (with the reason) when the SCF fails or the forces are absurd.
    """
    from ase.calculators.calculator import CalculationFailed, InputError

    frame = _rounded(atoms)
    work = frame.copy()
    work.calc = calc
    try:
        calc.reset()
        calc.calculate(work, ["energy", "forces"], ["positions", "numbers", "cell", "pbc"])
    except (CalculationFailed, InputError, RuntimeError) as exc:
        raise FrameSkipped(
            f"xtb failed: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
        ) from None
    results = calc.results
    energy = float(results["energy"])
    forces = np.asarray(results["forces"], dtype=np.float64).reshape(len(frame), 3)
    dipole = np.asarray(results["dipole"], dtype=np.float64).reshape(3)  # e·Å (tblite: atomic units * Bohr)
    charges = np.asarray(results["charges"], dtype=np.float64).reshape(len(frame))
    _check_labels(energy, forces, max_force, np.concatenate([dipole, charges]))
    frame.info["REF_energy"] = energy
    frame.info["REF_dipole"] = dipole
    frame.arrays["REF_forces"] = forces
    frame.arrays["REF_charges"] = charges
    return frame


def label_material(atoms, calc, max_force: float = 20.0):
    """A copy of ``atoms`` (positions rounded) with CHGNet labels under REF_ keys (stress eV/Å³, Voigt)."""
    frame = _rounded(atoms)
    work = frame.copy()
    work.calc = calc
    try:
        energy = float(work.get_potential_energy())
        forces = np.asarray(work.get_forces(), dtype=np.float64)
        stress = np.asarray(work.get_stress(voigt=True), dtype=np.float64)  # the calculator's GPa -> eV/Å³
    except Exception as exc:  # CHGNet raises plain exceptions (e.g. isolated atoms)
        raise FrameSkipped(f"chgnet failed: {type(exc).__name__}: {str(exc)[:100]}") from None
    _check_labels(energy, forces, max_force, stress)
    frame.info["REF_energy"] = energy
    frame.info["REF_stress"] = stress
    frame.arrays["REF_forces"] = forces
    return frame


# ---------------------------------------------------------------------------------------- worker state
_STATE: dict[str, Any] = {}


def xtb_calculator(cfg: MoleculeConfig):
    if "xtb" not in _STATE:
        from tblite.ase import TBLite

        _STATE["xtb"] = TBLite(method="GFN2-xTB", verbosity=0, accuracy=cfg.accuracy)
    return _STATE["xtb"]


def chgnet_calculator(cfg: MaterialConfig):
    if "chgnet" not in _STATE:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            model = CHGNet.load(model_name=cfg.model, use_device="cpu", verbose=False)
            _STATE["chgnet"] = CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="error")
    return _STATE["chgnet"]


@contextlib.contextmanager
def quiet():
    """CHGNet/pymatgen/torch chatter off while labelling."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------------------- molecules
def common_info(frame, entry: dict, domain: str, seed: int, config_type: str, method: str, versions: str) -> None:
    frame.info.update(
        domain=domain,
        group=entry["group"],
        split=entry["split"],
        source=entry["source"],
        config_type=config_type,
        method=method,
        code_versions=versions,
        units=UNITS,
        seed=seed,
    )


def init_labelling_worker() -> None:
    """One quiet OpenMP thread per labelling process (two spinning runtimes on two cores are 2-1000x slower)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)


@contextlib.contextmanager
def single_thread():
    """One torch thread while generating in this process; restored afterwards."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
