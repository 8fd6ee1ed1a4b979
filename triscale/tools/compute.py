"""The heavy parts of the tools. Every function here runs inside a worker process (see ``worker.py``): it gets
plain picklable inputs (ASE ``Atoms`` without calculator, a :class:`CalculatorSpec`, paths) and returns plain
data. Nothing here touches the structure store. Orbitals and AO matrices come from
:func:`triscale.quantum.electronic.electronic_structure` (see ``tools/quantum.py``), not from here."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from ase import Atoms, units

from triscale.tools.calculators import CalculatorSpec, charge_spin, make_calculator
from triscale.tools.errors import CalculationError, ToolInputError

__all__: list[str] = []


def _attach(atoms: Atoms, spec: CalculatorSpec, root: str | None) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = make_calculator(spec, atoms, root)
    return atoms


def _calc_failed(e: Exception, spec: CalculatorSpec) -> CalculationError:
    text = str(e)
    if "converge" in text.lower():
        return CalculationError(
            f"The SCF of {spec.label()} did not converge: {text}",
            hint="Raise max_scf_cycles, check charge/spin, or use gfn2-xtb or a smaller basis.",
        )
    return CalculationError(f"{spec.label()} failed: {type(e).__name__}: {text}")


def _results(atoms: Atoms, spec: CalculatorSpec, want_stress: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["energy"] = float(atoms.get_potential_energy())
        out["forces"] = np.asarray(atoms.get_forces(), dtype=float)
        if want_stress and atoms.pbc.all() and "stress" in atoms.calc.implemented_properties:
            out["stress"] = np.asarray(atoms.get_stress(voigt=True), dtype=float)
    except (ToolInputError, CalculationError):
        raise
    except Exception as e:  # noqa: BLE001 - library errors become readable tool errors
        raise _calc_failed(e, spec) from e
    res = atoms.calc.results
    if "dipole" in res:
        out["dipole"] = np.asarray(res["dipole"], dtype=float)
    elif "dipole" in atoms.calc.implemented_properties and not atoms.pbc.any():
        try:
            out["dipole"] = np.asarray(atoms.get_dipole_moment(), dtype=float)
        except Exception:  # noqa: BLE001 - optional property
            pass
    if "charges" in res:
        out["charges"] = np.asarray(res["charges"], dtype=float)
    for key in ("energy_std", "forces_std", "stress_std", "energy_uncertainty"):
        if key in res:
            out[key] = np.asarray(res[key], dtype=float)
    if not np.isfinite(out["energy"]) or not np.all(np.isfinite(out["forces"])):
        raise CalculationError(f"{spec.label()} returned NaN or infinite energy/forces.")
    return out


def singlepoint(atoms: Atoms, spec: CalculatorSpec, root: str | None) -> dict[str, Any]:
    atoms = _attach(atoms, spec, root)
    return _results(atoms, spec, want_stress=True)


def optimize(
    atoms: Atoms,
    spec: CalculatorSpec,
    root: str | None,
    optimizer: str,
    fmax: float,
    steps: int,
    relax_cell: bool,
    pressure_GPa: float,
    traj_path: str | None,
    log_path: str | None,
) -> dict[str, Any]:
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS

    atoms = _attach(atoms, spec, root)
    first = _results(atoms, spec, want_stress=relax_cell)
    target: Any = atoms
    if relax_cell:
        if "stress" not in atoms.calc.implemented_properties:
            raise ToolInputError(
                f"{spec.label()} gives no stress, so the cell cannot be relaxed.",
                hint="Use emt, chgnet, gfn1-xtb or triscale, or relax_cell=false.",
            )
        target = FrechetCellFilter(atoms, scalar_pressure=pressure_GPa * units.GPa)
    opt_cls = {"bfgs": BFGS, "fire": FIRE, "lbfgs": LBFGS}[optimizer]
    opt = opt_cls(target, logfile=log_path or None, trajectory=traj_path)
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    except (ToolInputError, CalculationError):
        raise
    except Exception as e:  # noqa: BLE001
        raise _calc_failed(e, spec) from e
    final = _results(atoms, spec, want_stress=True)
    f = final["forces"]
    out_atoms = atoms.copy()
    out_atoms.calc = None
    return {
        "atoms": out_atoms,
        "converged": converged,
        "n_steps": int(opt.nsteps),
        "energy_initial": first["energy"],
        **final,
        "fmax_final": float(np.sqrt((f**2).sum(axis=1)).max()),
    }


def molecular_dynamics(
    atoms: Atoms,
    spec: CalculatorSpec,
    root: str | None,
    ensemble: str,
    temperature_K: float,
    timestep_fs: float,
    steps: int,
    interval: int,
    friction_per_fs: float,
    pressure_GPa: float,
    seed: int,
    traj_path: str,
    log_path: str | None,
) -> dict[str, Any]:
    from ase.io.trajectory import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet

    if len(atoms) < 2:
        # One atom has no internal degrees of freedom (3N - 3 = 0): temperatures would be 0/0 = NaN.
        raise ToolInputError(
            f"Molecular dynamics needs at least 2 atoms; this structure has {len(atoms)}.",
            hint="For a crystal, make a supercell first (make_supercell, e.g. repeat [2, 2, 2]).",
        )
    atoms = _attach(atoms, spec, root)
    rng = np.random.default_rng(seed)
    if temperature_K > 0:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt, logfile=log_path)
    elif ensemble == "nvt":
        dyn = Langevin(
            atoms,
            timestep=dt,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
            logfile=log_path,
        )
    elif ensemble == "npt":
        from ase.md.nose_hoover_chain import IsotropicMTKNPT

        if not atoms.pbc.all() or "stress" not in atoms.calc.implemented_properties:
            raise ToolInputError(
                "NPT needs a 3D periodic structure and a calculator with stress.",
                hint="Use ensemble 'nvt', or emt/chgnet/gfn1-xtb/triscale on a crystal.",
            )
        dyn = IsotropicMTKNPT(
            atoms,
            timestep=dt,
            temperature_K=temperature_K,
            pressure_au=pressure_GPa * units.GPa,
            tdamp=100 * dt,
            pdamp=1000 * dt,
            logfile=log_path,
        )
    else:  # pragma: no cover - validated by the schema
        raise ToolInputError(f"Unknown ensemble {ensemble!r}.")

    n = len(atoms)
    temps, etot, epot, vols = [], [], [], []

    def record():
        ep = atoms.get_potential_energy()
        ek = atoms.get_kinetic_energy()
        temps.append(ek / (1.5 * units.kB * n))
        epot.append(ep)
        etot.append(ep + ek)
        if atoms.pbc.all():
            vols.append(atoms.get_volume())

    traj = Trajectory(traj_path, "w", atoms)
    try:  # ASE calls the observers at step 0 too, so the first frame is the starting structure
        dyn.attach(record, interval=interval)
        dyn.attach(traj.write, interval=interval)
        dyn.run(steps)
    except (ToolInputError, CalculationError):
        raise
    except Exception as e:  # noqa: BLE001
        raise _calc_failed(e, spec) from e
    finally:
        traj.close()
    etot_a = np.asarray(etot)
    t_ps = np.arange(len(etot_a)) * interval * timestep_fs / 1000.0
    drift = float(np.polyfit(t_ps, etot_a / n, 1)[0]) if len(etot_a) > 2 else 0.0
    if not np.all(np.isfinite(etot_a)) or np.abs(etot_a - etot_a[0]).max() / n > 10.0:
        raise CalculationError(
            "The MD run exploded (energy change > 10 eV/atom).",
            hint="Use a smaller timestep, relax the structure first, or a lower temperature.",
        )
    out_atoms = atoms.copy()
    out_atoms.calc = None
    return {
        "atoms": out_atoms,
        "energy": float(epot[-1]),
        "temperatures": np.asarray(temps),
        "etot": etot_a,
        "epot": np.asarray(epot),
        "volumes": np.asarray(vols) if vols else None,
        "drift_eV_per_atom_per_ps": drift,
        "n_frames": len(etot_a),
    }


def _geometry(atoms: Atoms) -> str:
    if len(atoms) == 1:
        return "monatomic"
    moments = np.sort(atoms.get_moments_of_inertia())
    return "linear" if moments[0] < 1e-3 * max(moments[-1], 1e-12) else "nonlinear"


def _symmetry_number(atoms: Atoms) -> int:
    try:
        from pymatgen.core import Molecule
        from pymatgen.symmetry.analyzer import PointGroupAnalyzer

        mol = Molecule(atoms.get_chemical_symbols(), atoms.positions)
        return int(PointGroupAnalyzer(mol, tolerance=0.1).get_rotational_symmetry_number())
    except Exception:  # noqa: BLE001 - pymatgen missing or symmetry detection failed: no symmetry
        return 1


def vibrations(
    atoms: Atoms,
    spec: CalculatorSpec,
    root: str | None,
    vib_dir: str,
    delta: float,
    nfree: int,
    want_ir: bool,
) -> dict[str, Any]:
    from ase.vibrations import Infrared, Vibrations

    atoms = _attach(atoms, spec, root)
    base = _results(atoms, spec, want_stress=False)
    ir = want_ir and "dipole" in base and not atoms.pbc.any()
    try:
        if ir:
            vib = Infrared(atoms, name=vib_dir, delta=delta, nfree=nfree)
        else:
            vib = Vibrations(atoms, name=vib_dir, delta=delta, nfree=nfree)
        vib.clean()
        vib.run()
        energies = np.asarray(vib.get_energies())
        intens = np.asarray(vib.intensities, dtype=float) if ir else None
    except (ToolInputError, CalculationError):
        raise
    except Exception as e:  # noqa: BLE001
        raise _calc_failed(e, spec) from e
    return {
        "energy": base["energy"],
        "vib_energies": energies,
        "ir_intensities": intens,
        "geometry": _geometry(atoms),
        "symmetry_number": _symmetry_number(atoms) if not atoms.pbc.any() else 1,
    }


def eos(atoms: Atoms, spec: CalculatorSpec, root: str | None, volume_range: float, n_points: int) -> dict[str, Any]:
    atoms = _attach(atoms, spec, root)
    cell0 = atoms.get_cell().copy()
    scales = np.linspace(1.0 - volume_range, 1.0 + volume_range, n_points) ** (1.0 / 3.0)
    vols, ens = [], []
    try:
        for s in scales:
            atoms.set_cell(cell0 * s, scale_atoms=True)
            ens.append(float(atoms.get_potential_energy()))
            vols.append(float(atoms.get_volume()))
    except Exception as e:  # noqa: BLE001
        raise _calc_failed(e, spec) from e
    return {"volumes": np.asarray(vols), "energies": np.asarray(ens), "cell0": np.asarray(cell0)}


def relax_and_energy(
    atoms: Atoms,
    spec: CalculatorSpec,
    root: str | None,
    fmax: float,
    steps: int,
    thermo: bool,
    temperature_K: float,
    pressure_Pa: float,
    vib_dir: str,
) -> dict[str, Any]:
    """For reaction energies: relax one species and (optionally) its ideal-gas Gibbs energy."""
    from ase.thermochemistry import IdealGasThermo

    res = optimize(atoms, spec, root, "bfgs", fmax, steps, False, 0.0, None, None)
    out = {"atoms": res["atoms"], "energy": res["energy"], "converged": res["converged"]}
    if thermo:
        v = vibrations(res["atoms"], spec, root, vib_dir, 0.01, 2, False)
        thermo_obj = IdealGasThermo(
            v["vib_energies"],
            v["geometry"],
            potentialenergy=res["energy"],
            atoms=res["atoms"],
            symmetrynumber=v["symmetry_number"],
            spin=charge_spin(spec, res["atoms"])[1] / 2.0,
            ignore_imag_modes=True,
        )
        out["gibbs"] = float(thermo_obj.get_gibbs_energy(temperature_K, pressure_Pa, verbose=False))
        out["enthalpy"] = float(thermo_obj.get_enthalpy(temperature_K, verbose=False))
    return out


def predict(atoms: Atoms, spec: CalculatorSpec, root: str | None, gap: bool = False) -> dict[str, Any]:
    out = _results(_attach(atoms, spec, root), spec, want_stress=True)
    if gap:
        try:
            out.update(predicted_gap(atoms))
        except (FileNotFoundError, ValueError) as e:  # the energy prediction stands without the gap
            out["gap_note"] = f"no gap prediction: {e}"
    return out


GAP_MODEL = "gfn2-gap"  # the shipped HOMO-LUMO gap committee (triscale/finetune/checkpoints/gfn2-gap)


@functools.lru_cache(maxsize=2)
def _property_committee(name: str):
    from triscale.finetune.property import load_property_model

    return load_property_model(name)


def predicted_gap(atoms: Atoms) -> dict[str, Any]:
    """The GFN2-xTB HOMO-LUMO gap predicted by the shipped property-head committee, with its standard deviation and
    90 % conformal interval; a note instead when the structure is outside what the heads were trained on."""
    committee = _property_committee(GAP_MODEL)
    reason = committee.unsupported(atoms)
    if reason:
        return {"gap_note": f"no gap prediction: {reason}"}
    mean, std = committee.predict([atoms], return_std=True)
    out: dict[str, Any] = {"gap": float(mean[0]), "gap_std": float(std[0]), "gap_model": GAP_MODEL}
    interval = committee.interval(mean, std)
    if interval is not None:
        out["gap_interval"] = [float(interval[0][0]), float(interval[1][0])]
    return out


def sleep_forever(seconds: float = math.inf) -> None:  # pragma: no cover - used to test timeouts
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.05)


def crash_hard() -> None:  # pragma: no cover - used to test crash handling
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
