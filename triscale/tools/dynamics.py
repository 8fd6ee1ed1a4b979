"""Molecular dynamics: NVE, Langevin NVT, and NPT for crystals."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from ase import Atoms, units
from pydantic import Field

from triscale.tools.base import ToolContext, ToolResult, register
from triscale.tools.calculation import (
    CalcInput,
    attach_calculator,
    calculation_failed,
    prepare,
    rounded,
)
from triscale.tools.calculators import CalculatorSpec
from triscale.tools.errors import CalculationError, ToolInputError

__all__: list[str] = []


class MDInput(CalcInput):
    ensemble: Literal["nve", "nvt", "npt"] = Field(
        "nvt", description="nve (velocity Verlet), nvt (Langevin), npt (MTK Nose-Hoover, crystals only)."
    )
    temperature_K: float = Field(300.0, ge=0, le=10000, description="Initial (nve) or target temperature.")
    timestep_fs: float = Field(0.5, gt=0.01, le=10.0, description="Time step in fs (≤1 fs with hydrogen).")
    steps: int = Field(200, ge=1, le=200000)
    interval: int = Field(10, ge=1, le=10000, description="Save a frame every this many steps.")
    friction_per_fs: float = Field(0.01, gt=0, le=1.0, description="Langevin friction (nvt).")
    pressure_GPa: float = Field(0.0, ge=-100, le=1000, description="Target pressure (npt).")
    seed: int = Field(0, description="Seed for the initial velocities and the Langevin noise.")


class MDResult(ToolResult):
    structure_id: str = Field(description="Id of the final frame.")
    parent_id: str
    formula: str
    n_atoms: int
    method: str
    ensemble: str
    steps: int
    timestep_fs: float
    simulated_time_ps: float
    n_frames: int
    temperature_mean_K: float
    temperature_std_K: float
    target_temperature_K: float
    potential_energy_final_eV: float
    total_energy_std_eV: float
    energy_drift_eV_per_atom_per_ps: float = Field(description="Slope of total energy per atom (meaningful in NVE).")
    volume_mean_A3: float | None = None
    trajectory_file: str


@register(
    "molecular_dynamics",
    input=MDInput,
    result=MDResult,
    cost="heavy",
    timeout_s=1800,
    compact=True,
    keywords=(r"\bmolecular dynamics\b|\bmd\b|\bnvt\b|\bnve\b|\bnpt\b|\btrajectory|\bsimulate .* at \d+ ?k\b",),
    needs_approval="expensive_method_or_long_md",
    answer_fields=("temperature_mean_K", "potential_energy_final_eV", "energy_drift_eV_per_atom_per_ps"),
)
def molecular_dynamics(ctx: ToolContext, a: MDInput) -> MDResult:
    """Run MD (NVE, Langevin NVT, or NPT for crystals), save the trajectory, and summarise temperature and
    energy drift. Stores the final frame."""
    sid, atoms, spec = prepare(ctx, a)
    if a.ensemble == "npt" and not atoms.pbc.all():
        raise ToolInputError("NPT needs a 3D periodic structure.", hint="Use ensemble 'nvt' for molecules.")
    if a.ensemble != "nve" and a.temperature_K <= 0:
        raise ToolInputError("NVT/NPT need temperature_K > 0.")
    ws = ctx.workspace
    traj = ws.new_file("trajectories", f"md_{sid}", ".traj")
    r = ctx.compute(
        run_md,
        atoms,
        spec,
        ctx.root,
        a.ensemble,
        a.temperature_K,
        a.timestep_fs,
        a.steps,
        a.interval,
        a.friction_per_fs,
        a.pressure_GPa,
        a.seed,
        str(traj),
        str(traj.with_suffix(".log")),
        label=f"{spec.label()} MD",
    )
    new = ctx.store(
        r["atoms"],
        parent=sid,
        label=f"{ws.record(sid)['label']} md",
        method=spec.label(),
        energy_eV=r["energy"],
    )
    temps = r["temperatures"][1:] if len(r["temperatures"]) > 1 else r["temperatures"]
    vols = r["volumes"]
    return MDResult(
        structure_id=new,
        parent_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        ensemble=a.ensemble,
        steps=a.steps,
        timestep_fs=a.timestep_fs,
        simulated_time_ps=rounded(a.steps * a.timestep_fs / 1000.0),
        n_frames=r["n_frames"],
        temperature_mean_K=rounded(np.mean(temps), 3),
        temperature_std_K=rounded(np.std(temps), 3),
        target_temperature_K=a.temperature_K,
        potential_energy_final_eV=rounded(r["energy"]),
        total_energy_std_eV=rounded(np.std(r["etot"])),
        energy_drift_eV_per_atom_per_ps=rounded(r["drift_eV_per_atom_per_ps"]),
        volume_mean_A3=None if vols is None else rounded(np.mean(vols), 4),
        trajectory_file=ws.relpath(traj),
    )


# ------------------------------------------------------------- in the worker process


def run_md(
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
    atoms = attach_calculator(atoms, spec, root)
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
        raise calculation_failed(e, spec) from e
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
