"""Simulation and prediction tools: single point, optimisation, MD, vibrations/IR, thermochemistry,
equation of state, reaction energies, orbital energies and foundation-model predictions.

Each tool validates its inputs, checks the calculator's limits before running, does the heavy work through
``ctx.compute`` (a worker process with a wall-time limit) and stores new structures with their lineage.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from ase import Atoms, units
from pydantic import AliasChoices, Field, field_validator

from triscale.tools import compute
from triscale.tools.calculators import CalculatorSpec, check_limits, resolve_method
from triscale.tools.errors import CalculationError, ToolInputError
from triscale.tools.registry import ToolContext, ToolInput, ToolResult, register
from triscale.tools.validation import validate_atoms

__all__ = ["parse_reaction"]

EV_TO_KJ_PER_MOL = units.mol / units.kJ
MAX_LISTED_CHARGES = 100


class CalcInput(ToolInput):
    structure_id: str = Field(
        validation_alias=AliasChoices("structure_id", "structure"),
        description="Structure id such as 'st3'. A molecule name ('water') or SMILES also works "
        "(it is built first).",
    )
    calculator: CalculatorSpec = Field(
        default_factory=CalculatorSpec,
        description="Method name ('gfn2-xtb', 'gfn1-xtb', 'hf', 'dft', 'emt', 'chgnet', 'triscale', 'auto', or a "
        "DFT functional such as 'pbe', 'b3lyp', 'pbe0': DFT with it) or an object with method and options "
        "(charge, spin, functional, basis, ...).",
    )

    @field_validator("calculator", mode="before")
    @classmethod
    def _coerce_calc(cls, v: Any) -> Any:
        if v is None:
            return CalculatorSpec()
        if isinstance(v, str):
            return {"method": v}
        return v


def _prepare(ctx: ToolContext, a: CalcInput) -> tuple[str, Atoms, CalculatorSpec]:
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    spec = resolve_method(a.calculator, atoms)
    check_limits(spec, atoms)
    return sid, atoms, spec


def _fnorm(f: np.ndarray) -> tuple[float, float]:
    norms = np.sqrt((np.asarray(f) ** 2).sum(axis=1))
    return float(norms.max()), float(np.sqrt((norms**2).mean()))


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


# --------------------------------------------------------------------------- single point


class SinglePointResult(ToolResult):
    structure_id: str
    formula: str
    n_atoms: int
    method: str
    energy_eV: float
    energy_per_atom_eV: float
    max_force_eV_per_A: float
    rms_force_eV_per_A: float
    stress_eV_per_A3: list[float] | None = Field(None, description="Voigt xx yy zz yz xz xy (periodic only).")
    pressure_GPa: float | None = None
    dipole_e_A: list[float] | None = None
    dipole_magnitude_debye: float | None = None
    charges_e: list[float] | None = Field(None, description="Atomic partial charges (≤100 atoms).")
    energy_std_eV: float | None = Field(None, description="Committee standard deviation of the energy.")
    max_force_std_eV_per_A: float | None = None
    energy_uncertainty_eV: float | None = Field(
        None, description="Calibrated 90 % half-width of the committee energy (conformal, from its validation set)."
    )


@register(
    "single_point",
    input=CalcInput,
    result=SinglePointResult,
    cost="heavy",
    timeout_s=600,
    compact=True,
    keywords=(r"\bsingle[- ]point\b|\bdipole|\bcharges?\b|\bforces?\b|\bstress\b",),
    needs_approval="expensive_method",
    answer_fields=("energy_eV", "dipole_magnitude_debye", "pressure_GPa"),
)
def single_point(ctx: ToolContext, a: CalcInput) -> SinglePointResult:
    """Energy, forces (max/RMS), stress and pressure (crystals), dipole and charges (xTB, DFT)."""
    sid, atoms, spec = _prepare(ctx, a)
    r = ctx.compute(compute.singlepoint, atoms, spec, ctx.root, label=f"{spec.label()} single point")
    return _sp_result(sid, atoms, spec, r)


def _sp_result(
    sid: str, atoms: Atoms, spec: CalculatorSpec, r: dict[str, Any], **extra: Any
) -> SinglePointResult:
    fmax, frms = _fnorm(r["forces"])
    out: dict[str, Any] = {}
    if "stress" in r:
        s = r["stress"]
        out["stress_eV_per_A3"] = [round(float(x), 8) for x in s]
        out["pressure_GPa"] = round(float(-s[:3].mean() / units.GPa), 5)
    if "dipole" in r:
        d = r["dipole"]
        out["dipole_e_A"] = [round(float(x), 6) for x in d]
        out["dipole_magnitude_debye"] = round(float(np.linalg.norm(d) / units.Debye), 5)
    notes = []
    if "charges" in r:
        if len(atoms) <= MAX_LISTED_CHARGES:
            out["charges_e"] = [round(float(x), 5) for x in r["charges"]]
        else:
            notes.append(f"charges omitted for >{MAX_LISTED_CHARGES} atoms")
    if "energy_std" in r:
        out["energy_std_eV"] = _r(np.asarray(r["energy_std"]).reshape(-1)[0])
    if "forces_std" in r:
        out["max_force_std_eV_per_A"] = _r(np.asarray(r["forces_std"]).max())
    if "energy_uncertainty" in r:
        out["energy_uncertainty_eV"] = _r(r["energy_uncertainty"])
    return SinglePointResult(
        structure_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        energy_eV=_r(r["energy"]),
        energy_per_atom_eV=_r(r["energy"] / len(atoms)),
        max_force_eV_per_A=_r(fmax),
        rms_force_eV_per_A=_r(frms),
        notes=notes,
        **out,
        **extra,
    )


# --------------------------------------------------------------------------- optimisation


class OptimizeInput(CalcInput):
    fmax_eV_per_A: float = Field(0.02, gt=0, le=10, description="Convergence: maximum force in eV/Å.")
    steps: int = Field(300, ge=1, le=5000, description="Maximum optimiser steps.")
    optimizer: Literal["bfgs", "fire", "lbfgs"] = "bfgs"
    relax_cell: bool = Field(False, description="Also relax the cell (FrechetCellFilter; crystals only).")
    pressure_GPa: float = Field(0.0, ge=-100, le=1000, description="External pressure for cell relaxation.")


class OptimizeResult(ToolResult):
    structure_id: str = Field(description="Id of the optimised structure.")
    parent_id: str
    formula: str
    n_atoms: int
    method: str
    converged: bool
    n_steps: int
    energy_initial_eV: float
    energy_final_eV: float
    energy_change_eV: float
    max_force_eV_per_A: float
    volume_A3: float | None = None
    cell_lengths_A: list[float] | None = None
    pressure_GPa: float | None = None
    trajectory_file: str


@register(
    "optimize_geometry",
    input=OptimizeInput,
    result=OptimizeResult,
    cost="heavy",
    timeout_s=1200,
    compact=True,
    keywords=(r"\boptimi[sz]|\brelax|\bminimi[sz]|\bgeometry\b|\bequilibrium structure",),
    needs_approval="expensive_method",
    answer_fields=("energy_final_eV", "max_force_eV_per_A"),
)
def optimize_geometry(ctx: ToolContext, a: OptimizeInput) -> OptimizeResult:
    """Relax atomic positions (BFGS/FIRE/LBFGS to fmax), optionally with the cell (FrechetCellFilter).
    Stores the optimised structure and its trajectory."""
    sid, atoms, spec = _prepare(ctx, a)
    if a.relax_cell and not atoms.pbc.all():
        raise ToolInputError(
            "relax_cell needs a 3D periodic structure.", hint="Set relax_cell=false for molecules."
        )
    ws = ctx.workspace
    traj = ws.new_file("trajectories", f"opt_{sid}", ".traj")
    log = traj.with_suffix(".log")
    r = ctx.compute(
        compute.optimize,
        atoms,
        spec,
        ctx.root,
        a.optimizer,
        a.fmax_eV_per_A,
        a.steps,
        a.relax_cell,
        a.pressure_GPa,
        str(traj),
        str(log),
        label=f"{spec.label()} optimisation",
    )
    new = ctx.store(
        r["atoms"],
        parent=sid,
        label=f"{ws.record(sid)['label']} opt",
        method=spec.label(),
        energy_eV=r["energy"],
        forces=r["forces"],
        stress=r.get("stress"),
    )
    fmax, _ = _fnorm(r["forces"])
    notes = (
        []
        if r["converged"]
        else [
            f"Not converged in {a.steps} steps (max force {fmax:.3f} eV/Å); "
            f"call optimize_geometry again on {new}."
        ]
    )
    extra: dict[str, Any] = {}
    if atoms.pbc.all():
        fin = r["atoms"]
        extra["volume_A3"] = _r(fin.get_volume(), 4)
        extra["cell_lengths_A"] = [round(float(x), 5) for x in fin.cell.lengths()]
        if "stress" in r:
            extra["pressure_GPa"] = round(float(-r["stress"][:3].mean() / units.GPa), 5)
    return OptimizeResult(
        structure_id=new,
        parent_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        converged=r["converged"],
        n_steps=r["n_steps"],
        energy_initial_eV=_r(r["energy_initial"]),
        energy_final_eV=_r(r["energy"]),
        energy_change_eV=_r(r["energy"] - r["energy_initial"]),
        max_force_eV_per_A=_r(fmax),
        trajectory_file=ws.relpath(traj),
        notes=notes,
        **extra,
    )


# --------------------------------------------------------------------------- molecular dynamics


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
    energy_drift_eV_per_atom_per_ps: float = Field(
        description="Slope of total energy per atom (meaningful in NVE)."
    )
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
    sid, atoms, spec = _prepare(ctx, a)
    if a.ensemble == "npt" and not atoms.pbc.all():
        raise ToolInputError("NPT needs a 3D periodic structure.", hint="Use ensemble 'nvt' for molecules.")
    if a.ensemble != "nve" and a.temperature_K <= 0:
        raise ToolInputError("NVT/NPT need temperature_K > 0.")
    ws = ctx.workspace
    traj = ws.new_file("trajectories", f"md_{sid}", ".traj")
    r = ctx.compute(
        compute.molecular_dynamics,
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
        simulated_time_ps=_r(a.steps * a.timestep_fs / 1000.0),
        n_frames=r["n_frames"],
        temperature_mean_K=_r(np.mean(temps), 3),
        temperature_std_K=_r(np.std(temps), 3),
        target_temperature_K=a.temperature_K,
        potential_energy_final_eV=_r(r["energy"]),
        total_energy_std_eV=_r(np.std(r["etot"])),
        energy_drift_eV_per_atom_per_ps=_r(r["drift_eV_per_atom_per_ps"]),
        volume_mean_A3=None if vols is None else _r(np.mean(vols), 4),
        trajectory_file=ws.relpath(traj),
    )


# --------------------------------------------------------------------------- vibrations / thermochemistry


class VibInput(CalcInput):
    optimize_first: bool = Field(True, description="Relax the geometry (fmax_eV_per_A) before the analysis.")
    fmax_eV_per_A: float = Field(0.005, gt=0, le=1.0, description="Force threshold for optimize_first.")
    delta_A: float = Field(0.01, gt=1e-4, le=0.1, description="Finite-difference displacement.")
    nfree: Literal[2, 4] = Field(2, description="2- or 4-point central differences.")
    ir: bool = Field(True, description="IR intensities when the calculator gives dipoles (xTB, DFT).")


class VibResult(ToolResult):
    structure_id: str = Field(description="Geometry the analysis used (optimised if optimize_first).")
    parent_id: str | None = None
    formula: str
    n_atoms: int
    method: str
    potential_energy_eV: float
    frequencies_cm1: list[float] = Field(
        description="All 3N modes, ascending; imaginary modes as negative numbers."
    )
    vibrational_frequencies_cm1: list[float] = Field(description="The 3N-6 (3N-5 linear) true vibrations.")
    n_imaginary: int = Field(description="Imaginary modes among the true vibrations (|ν| > 50 cm-1).")
    zero_point_energy_eV: float
    ir_intensities_D2_per_A2_amu: list[float] | None = Field(None, description="For the true vibrations.")
    geometry: str


def _n_true(geometry: str, n: int, periodic: bool) -> int:
    if periodic:
        return 3 * n - 3
    return {"monatomic": 0, "linear": 3 * n - 5, "nonlinear": 3 * n - 6}[geometry]


def _vib_common(
    ctx: ToolContext, a: VibInput
) -> tuple[str, str | None, Atoms, CalculatorSpec, dict[str, Any]]:
    sid, atoms, spec = _prepare(ctx, a)
    parent = None
    ws = ctx.workspace
    if a.optimize_first:
        r = ctx.compute(
            compute.optimize,
            atoms,
            spec,
            ctx.root,
            "bfgs",
            a.fmax_eV_per_A,
            500,
            False,
            0.0,
            None,
            None,
            label=f"{spec.label()} pre-optimisation",
        )
        if not r["converged"]:
            ctx.notes.append(
                f"Pre-optimisation did not reach {a.fmax_eV_per_A} eV/Å; frequencies may be off."
            )
        if r["n_steps"] > 0:  # already at a minimum: analyse the structure as it is
            parent = sid
            sid = ctx.store(
                r["atoms"],
                parent=sid,
                label=f"{ws.record(sid)['label']} opt",
                method=spec.label(),
                energy_eV=r["energy"],
                forces=r["forces"],
            )
            atoms = ws.get(sid)
    vib_dir = ws.new_file("vib", f"vib_{sid}", "")
    v = ctx.compute(
        compute.vibrations,
        atoms,
        spec,
        ctx.root,
        str(vib_dir),
        a.delta_A,
        a.nfree,
        a.ir,
        label=f"{spec.label()} vibrational analysis",
    )
    return sid, parent, atoms, spec, v


def _to_cm1(energies: np.ndarray) -> np.ndarray:
    e = np.asarray(energies, dtype=complex)
    return np.where(np.abs(e.imag) > np.abs(e.real), -np.abs(e.imag), e.real) / units.invcm


@register(
    "vibrational_analysis",
    input=VibInput,
    result=VibResult,
    cost="heavy",
    timeout_s=1200,
    compact=True,
    keywords=(r"\bvibrat|\bfrequenc|\bzero[- ]point|\bzpe\b|\bir spectrum|\bnormal modes?\b",),
    needs_approval="expensive_method",
    answer_fields=("zero_point_energy_eV", "vibrational_frequencies_cm1", "n_imaginary"),
)
def vibrational_analysis(ctx: ToolContext, a: VibInput) -> VibResult:
    """Harmonic vibrational frequencies (finite differences, ASE Vibrations), IR intensities where the
    calculator gives dipoles, and the zero-point energy. Optimises the geometry first by default."""
    sid, parent, atoms, spec, v = _vib_common(ctx, a)
    freqs = _to_cm1(v["vib_energies"])
    order = np.argsort(freqs)
    freqs = freqs[order]
    n_true = _n_true(v["geometry"], len(atoms), bool(atoms.pbc.any()))
    # the true vibrations: the n_true modes of largest |squared frequency| (as ASE's IdealGasThermo selects)
    e2 = np.asarray(v["vib_energies"], dtype=complex) ** 2
    sel = np.argsort(e2.real)[len(e2) - n_true :] if n_true else np.array([], dtype=int)
    true_f = np.sort(_to_cm1(np.asarray(v["vib_energies"])[sel]))
    zpe = 0.5 * float(np.sum(np.asarray(v["vib_energies"])[sel].real.clip(min=0)))
    out: dict[str, Any] = {}
    if v["ir_intensities"] is not None:
        ints = np.asarray(v["ir_intensities"])
        by_f = np.argsort(_to_cm1(np.asarray(v["vib_energies"])[sel]))
        out["ir_intensities_D2_per_A2_amu"] = [round(float(x), 5) for x in ints[sel][by_f]]
    elif a.ir:
        ctx.notes.append(f"No IR intensities: {spec.label()} gives no dipole moments here.")
    n_imag = int(np.sum(true_f < -50.0))
    if n_imag:
        ctx.notes.append(
            f"{n_imag} imaginary mode(s): not a minimum; optimise more tightly or check the structure."
        )
    return VibResult(
        structure_id=sid,
        parent_id=parent,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        potential_energy_eV=_r(v["energy"]),
        frequencies_cm1=[round(float(x), 2) for x in freqs],
        vibrational_frequencies_cm1=[round(float(x), 2) for x in true_f],
        n_imaginary=n_imag,
        zero_point_energy_eV=_r(zpe),
        geometry=v["geometry"],
        **out,
    )


class ThermoInput(VibInput):
    temperature_K: float = Field(298.15, gt=0, le=5000)
    pressure_Pa: float = Field(101325.0, gt=0, le=1e10)
    symmetry_number: int | None = Field(
        None, ge=1, le=60, description="Rotational symmetry number; default: detected from the point group."
    )
    ir: bool = Field(False, description="Also compute IR intensities.")


class ThermoResult(ToolResult):
    structure_id: str
    parent_id: str | None = None
    formula: str
    method: str
    temperature_K: float
    pressure_Pa: float
    potential_energy_eV: float
    zero_point_energy_eV: float
    enthalpy_eV: float = Field(
        description="E_pot + ZPE + thermal corrections (ideal gas, rigid rotor, harmonic)."
    )
    entropy_eV_per_K: float
    gibbs_free_energy_eV: float
    thermal_correction_gibbs_eV: float = Field(description="G - E_pot.")
    geometry: str
    symmetry_number: int
    spin_S: float
    vibrational_frequencies_cm1: list[float]


@register(
    "thermochemistry",
    input=ThermoInput,
    result=ThermoResult,
    cost="heavy",
    timeout_s=1200,
    compact=True,
    keywords=(r"\bgibbs|\benthalpy|\bentropy|\bthermochem|\bfree energy|\bheat capacity",),
    needs_approval="expensive_method",
    answer_fields=("gibbs_free_energy_eV", "enthalpy_eV", "entropy_eV_per_K", "zero_point_energy_eV"),
)
def thermochemistry(ctx: ToolContext, a: ThermoInput) -> ThermoResult:
    """Ideal-gas thermochemistry of a molecule (ASE IdealGasThermo): enthalpy, entropy and Gibbs energy at
    temperature_K and pressure_Pa from a harmonic vibrational analysis."""
    from ase.thermochemistry import IdealGasThermo

    sid0, atoms0 = ctx.structure(a.structure_id)
    if atoms0.pbc.any():
        raise ToolInputError(
            "Ideal-gas thermochemistry is for isolated molecules; this structure is periodic.",
            hint="Use vibrational_analysis for crystal Γ-point modes.",
        )
    a = a.model_copy(update={"structure_id": sid0})
    sid, parent, atoms, spec, v = _vib_common(ctx, a)
    sigma = a.symmetry_number or v["symmetry_number"]
    spin_s = int(atoms.info.get("spin", 0)) / 2.0
    n_true = _n_true(v["geometry"], len(atoms), False)
    e = np.asarray(v["vib_energies"], dtype=complex)
    sel = e[np.argsort((e**2).real)[len(e) - n_true :]] if n_true else e[:0]
    n_imag = int(np.sum(np.abs(sel.imag) > 50 * units.invcm))
    if n_imag:
        ctx.notes.append(f"{n_imag} imaginary mode(s) ignored in the thermochemistry.")
    thermo = IdealGasThermo(
        v["vib_energies"],
        v["geometry"],
        potentialenergy=v["energy"],
        atoms=atoms,
        symmetrynumber=sigma,
        spin=spin_s,
        ignore_imag_modes=True,
    )
    h = thermo.get_enthalpy(a.temperature_K, verbose=False)
    s = thermo.get_entropy(a.temperature_K, a.pressure_Pa, verbose=False)
    g = thermo.get_gibbs_energy(a.temperature_K, a.pressure_Pa, verbose=False)
    return ThermoResult(
        structure_id=sid,
        parent_id=parent,
        formula=atoms.get_chemical_formula(mode="hill"),
        method=spec.label(),
        temperature_K=a.temperature_K,
        pressure_Pa=a.pressure_Pa,
        potential_energy_eV=_r(v["energy"]),
        zero_point_energy_eV=_r(thermo.get_ZPE_correction()),
        enthalpy_eV=_r(h),
        entropy_eV_per_K=_r(s, 9),
        gibbs_free_energy_eV=_r(g),
        thermal_correction_gibbs_eV=_r(g - v["energy"]),
        geometry=v["geometry"],
        symmetry_number=sigma,
        spin_S=spin_s,
        vibrational_frequencies_cm1=[round(float(x), 2) for x in np.sort(_to_cm1(sel))],
    )


# --------------------------------------------------------------------------- equation of state


class EOSInput(CalcInput):
    volume_range: float = Field(0.06, gt=0.005, le=0.3, description="Volumes from (1-x)V to (1+x)V.")
    n_points: int = Field(9, ge=5, le=31)
    eos: Literal["birchmurnaghan", "murnaghan", "vinet", "sj"] = "birchmurnaghan"


class EOSResult(ToolResult):
    structure_id: str = Field(description="Id of the structure scaled to the equilibrium volume.")
    parent_id: str
    formula: str
    n_atoms: int
    method: str
    eos: str
    equilibrium_volume_A3: float
    volume_per_atom_A3: float
    minimum_energy_eV: float
    bulk_modulus_GPa: float
    lattice_constant_A: float | None = Field(
        None,
        description="Conventional lattice constant a of a cubic (sc/fcc/bcc) or hexagonal lattice, also from a "
        "primitive cell (the lattice of the cell as given: a supercell reports its own a).",
    )
    lattice_c_A: float | None = Field(None, description="Hexagonal/tetragonal lattices: conventional c.")
    bravais_lattice: str | None = Field(None, description="ASE Bravais lattice of the cell, e.g. FCC, BCC, HEX.")
    cell_lengths_A: list[float]
    volumes_A3: list[float]
    energies_eV: list[float]


def _conventional_lattice(atoms: Atoms) -> dict[str, Any]:
    """Conventional a (and c) of the cell's Bravais lattice via ASE: a primitive fcc cell gives the cubic a, not its
    cell length a/sqrt(2). Lattices with more parameters give only their name."""
    try:
        lat = atoms.cell.get_bravais_lattice(eps=2e-4)
    except (ValueError, RuntimeError):  # not recognised within the tolerance
        return {}
    params = lat.vars()
    if lat.name in ("CUB", "FCC", "BCC"):
        return {"name": lat.name, "a": params["a"]}
    if lat.name in ("HEX", "TET", "BCT"):
        return {"name": lat.name, "a": params["a"], "c": params["c"]}
    return {"name": lat.name}


@register(
    "equation_of_state",
    input=EOSInput,
    result=EOSResult,
    cost="heavy",
    timeout_s=900,
    compact=True,
    keywords=(r"\blattice (constant|parameter)|\bequation of state|\beos\b|\bbulk modulus|\bequilibrium volume",),
    needs_approval="expensive_method",
    answer_fields=("lattice_constant_A", "bulk_modulus_GPa", "equilibrium_volume_A3"),
)
def equation_of_state(ctx: ToolContext, a: EOSInput) -> EOSResult:
    """Energy-volume scan of a crystal (uniform scaling, fixed fractional coordinates) fitted with ase.eos:
    equilibrium volume, bulk modulus and the lattice constant. Stores the equilibrium structure."""
    from ase.eos import EquationOfState

    sid, atoms, spec = _prepare(ctx, a)
    if not atoms.pbc.all():
        raise ToolInputError(
            "The equation of state needs a 3D periodic crystal.", hint="Build one with build_bulk."
        )
    r = ctx.compute(
        compute.eos,
        atoms,
        spec,
        ctx.root,
        a.volume_range,
        a.n_points,
        label=f"{spec.label()} equation of state",
    )
    try:
        fit = EquationOfState(r["volumes"], r["energies"], eos=a.eos)
        v0, e0, b = fit.fit()
    except Exception as e:  # noqa: BLE001
        raise CalculationError(
            f"The EOS fit failed: {e}", hint="Widen volume_range or relax the structure."
        ) from e
    if not (r["volumes"].min() <= v0 <= r["volumes"].max()):
        ctx.notes.append(
            "The minimum lies outside the scanned volumes; relax the cell or widen volume_range."
        )
    scale = (v0 / atoms.get_volume()) ** (1.0 / 3.0)
    eq = atoms.copy()
    eq.set_cell(atoms.cell * scale, scale_atoms=True)
    lengths = eq.cell.lengths()
    lattice = _conventional_lattice(eq)
    new = ctx.store(eq, parent=sid, label=f"{ctx.workspace.record(sid)['label']} eos-v0", method=spec.label())
    return EOSResult(
        structure_id=new,
        parent_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        eos=a.eos,
        equilibrium_volume_A3=_r(v0),
        volume_per_atom_A3=_r(v0 / len(atoms)),
        minimum_energy_eV=_r(e0),
        bulk_modulus_GPa=_r(b / units.GPa, 4),
        lattice_constant_A=_r(lattice["a"]) if "a" in lattice else None,
        lattice_c_A=_r(lattice["c"]) if "c" in lattice else None,
        bravais_lattice=lattice.get("name"),
        cell_lengths_A=[round(float(x), 6) for x in lengths],
        volumes_A3=[round(float(x), 5) for x in r["volumes"]],
        energies_eV=[round(float(x), 6) for x in r["energies"]],
    )


# --------------------------------------------------------------------------- reactions

_ARROW = re.compile(r"\s*(?:->|=>|→|<=>|=)\s*")
_PLUS = re.compile(r"\s+\+\s+")
_COEF = re.compile(r"^(\d+(?:\.\d+)?)(?:\s+|\s*\*\s*|(?=[A-Z]))(.+)$")


def parse_reaction(text: str) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """'2 H2 + O2 -> 2 H2O' → ([(2, 'H2'), (1, 'O2')], [(2, 'H2O')]). Species are separated by ' + '."""
    sides = _ARROW.split(text.strip())
    if len(sides) != 2 or not sides[0].strip() or not sides[1].strip():
        raise ToolInputError(
            f"Cannot parse reaction {text!r}.",
            hint="Write it like '2 H2 + O2 -> 2 H2O' (species separated by ' + ').",
        )

    def side(s: str) -> list[tuple[float, str]]:
        parts = _PLUS.split(s.strip()) if _PLUS.search(s) else ([s] if "[" in s else s.split("+"))
        out = []
        for p in parts:
            p = p.strip()
            if not p:
                raise ToolInputError(f"Empty species in reaction {text!r}.")
            m = _COEF.match(p)
            coef, name = (float(m.group(1)), m.group(2).strip()) if m else (1.0, p)
            if coef <= 0:
                raise ToolInputError(f"Stoichiometric coefficients must be positive in {text!r}.")
            out.append((coef, name))
        return out

    return side(sides[0]), side(sides[1])


class ReactionInput(ToolInput):
    reaction: str = Field(
        description="Balanced reaction of species names, SMILES or structure ids, e.g. "
        "'2 H2 + O2 -> 2 H2O' or 'CH4 + 2 O2 -> CO2 + 2 H2O'."
    )
    calculator: CalculatorSpec = Field(
        default_factory=lambda: CalculatorSpec(method="gfn2-xtb"),
        description="Method for every species (default gfn2-xtb).",
    )
    free_energy: bool = Field(
        False, description="Also ideal-gas reaction enthalpy and Gibbs energy (vibrations)."
    )
    temperature_K: float = Field(298.15, gt=0, le=5000)
    pressure_Pa: float = Field(101325.0, gt=0, le=1e10)
    fmax_eV_per_A: float = Field(0.01, gt=0, le=1.0)

    @field_validator("calculator", mode="before")
    @classmethod
    def _coerce_calc(cls, v: Any) -> Any:
        return CalcInput._coerce_calc(v)


class ReactionResult(ToolResult):
    reaction: str
    method: str
    species: list[dict[str, Any]] = Field(
        description="name, coefficient, structure_id (relaxed), energy_eV, ..."
    )
    reaction_energy_eV: float
    reaction_energy_kJ_per_mol: float
    reaction_enthalpy_eV: float | None = None
    reaction_gibbs_energy_eV: float | None = None
    reaction_gibbs_energy_kJ_per_mol: float | None = None
    temperature_K: float | None = None


@register(
    "reaction_energy",
    input=ReactionInput,
    result=ReactionResult,
    cost="heavy",
    timeout_s=1800,
    compact=True,
    keywords=(r"\breaction\b|->|→|\bcombustion\b|\bformation energy|\batomi[sz]ation energy",),
    needs_approval="expensive_method",
    answer_fields=("reaction_energy_eV", "reaction_energy_kJ_per_mol", "reaction_gibbs_energy_eV"),
)
def reaction_energy(ctx: ToolContext, a: ReactionInput) -> ReactionResult:
    """Reaction energy (and optionally enthalpy and Gibbs energy) of a balanced reaction of named species:
    each species is built, relaxed and computed with the same method."""
    lhs, rhs = parse_reaction(a.reaction)
    resolved: dict[str, tuple[str, Atoms]] = {}
    for _, name in lhs + rhs:
        if name not in resolved:
            resolved[name] = ctx.structure(name)
    balance: dict[str, float] = {}
    for sign, terms in ((-1.0, lhs), (1.0, rhs)):
        for coef, name in terms:
            for s in resolved[name][1].get_chemical_symbols():
                balance[s] = balance.get(s, 0.0) + sign * coef
    off = {k: v for k, v in balance.items() if abs(v) > 1e-9}
    if off:
        desc = ", ".join(f"{k}: {'+' if v > 0 else ''}{v:g}" for k, v in sorted(off.items()))
        raise ToolInputError(
            f"The reaction is not balanced (products minus reactants: {desc}).",
            hint="Fix the coefficients, e.g. '2 H2 + O2 -> 2 H2O'.",
        )
    species: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    spec = None
    for name, (sid, atoms) in resolved.items():
        validate_atoms(atoms)
        spec = resolve_method(a.calculator, atoms)
        check_limits(spec, atoms)
        vib_dir = ctx.workspace.new_file("vib", f"rxn_{sid}", "")
        r = ctx.compute(
            compute.relax_and_energy,
            atoms,
            spec,
            ctx.root,
            a.fmax_eV_per_A,
            500,
            a.free_energy,
            a.temperature_K,
            a.pressure_Pa,
            str(vib_dir),
            label=f"{spec.label()} {name}",
        )
        new = ctx.store(
            r["atoms"], parent=sid, label=f"{name} opt", method=spec.label(), energy_eV=r["energy"]
        )
        results[name] = r
        species.append(
            {
                "name": name,
                "structure_id": new,
                "energy_eV": _r(r["energy"]),
                **(
                    {"gibbs_free_energy_eV": _r(r["gibbs"]), "enthalpy_eV": _r(r["enthalpy"])}
                    if a.free_energy
                    else {}
                ),
                **({} if r["converged"] else {"converged": False}),
            }
        )

    def delta(key: str) -> float:
        return sum(c * results[n][key] for c, n in rhs) - sum(c * results[n][key] for c, n in lhs)

    for s in species:
        s["coefficient"] = -sum(c for c, n in lhs if n == s["name"]) + sum(
            c for c, n in rhs if n == s["name"]
        )
    de = delta("energy")
    out: dict[str, Any] = {}
    if a.free_energy:
        dg = delta("gibbs")
        out.update(
            reaction_enthalpy_eV=_r(delta("enthalpy")),
            reaction_gibbs_energy_eV=_r(dg),
            reaction_gibbs_energy_kJ_per_mol=_r(dg * EV_TO_KJ_PER_MOL, 3),
            temperature_K=a.temperature_K,
        )
    canon = " + ".join(f"{c:g} {n}" for c, n in lhs) + " -> " + " + ".join(f"{c:g} {n}" for c, n in rhs)
    return ReactionResult(
        reaction=canon,
        method=spec.label() if spec else "",
        species=species,
        reaction_energy_eV=_r(de),
        reaction_energy_kJ_per_mol=_r(de * EV_TO_KJ_PER_MOL, 3),
        **out,
    )


# --------------------------------------------------------------------------- orbitals


class OrbitalInput(CalcInput):
    calculator: CalculatorSpec = Field(
        # 'auto' would become the foundation model once a checkpoint ships, which has no orbitals
        default_factory=lambda: CalculatorSpec(method="gfn2-xtb"),
        description="'gfn2-xtb' (default), 'gfn1-xtb', 'hf', 'dft' or a functional name such as 'pbe' (or an "
        "object with method, functional, basis, charge, spin, ...).",
    )
    n_window: int = Field(5, ge=1, le=50, description="Orbitals listed below HOMO and above LUMO.")

    @field_validator("calculator", mode="before")
    @classmethod
    def _default_xtb(cls, v: Any) -> Any:
        if v is None or v == "auto" or (isinstance(v, dict) and v.get("method", "auto") == "auto"):
            return {"method": "gfn2-xtb"} if not isinstance(v, dict) else {**v, "method": "gfn2-xtb"}
        return {"method": v} if isinstance(v, str) else v


class OrbitalResult(ToolResult):
    """The orbital fields of ``electronic_structure``'s result (same computation, same numbers)."""

    structure_id: str
    formula: str
    method: str
    energy_eV: float
    homo_eV: float
    lumo_eV: float | None
    gap_eV: float | None
    homo_index: int = Field(description="0-based index of the HOMO.")
    n_orbitals: int
    orbital_energies_eV: list[float] = Field(description="Window from HOMO-n_window+1 to LUMO+n_window-1.")
    occupations: list[float]


_ORBITAL_FIELDS = set(OrbitalResult.model_fields) - {"n_orbitals"}


@register(
    "orbital_energies",
    input=OrbitalInput,
    result=OrbitalResult,
    cost="heavy",
    timeout_s=600,
    compact=True,
    keywords=(r"\bhomo\b|\blumo\b|\bgap\b|\borbital",),
    needs_approval="expensive_method",
    answer_fields=("homo_eV", "lumo_eV", "gap_eV"),
)
def orbital_energies(ctx: ToolContext, a: OrbitalInput) -> OrbitalResult:
    """HOMO, LUMO, HOMO-LUMO gap and orbital energies around the gap from GFN2/GFN1-xTB (tblite) or HF/DFT
    (PySCF). A subset of electronic_structure (same calculation), which also gives charges, dipole and AO
    matrices."""
    from triscale.tools.quantum import electronic_result

    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    full = electronic_result(ctx, sid, atoms, a.calculator, n_window=a.n_window)
    return OrbitalResult(**full.model_dump(include=_ORBITAL_FIELDS), n_orbitals=full.n_ao)


# --------------------------------------------------------------------------- foundation model


class PredictInput(ToolInput):
    structure_id: str = Field(
        validation_alias=AliasChoices("structure_id", "structure"),
        description="Structure id (a molecule name or SMILES also works).",
    )
    model: str | list[str] = Field(
        "triscale-base",
        description="Shipped checkpoint name or a saved model directory; several form a committee.",
    )
    adapters: list[str] | None = Field(
        None, description="Adapter directories; 2 or more form a committee that gives uncertainties."
    )
    domain: str | None = Field(None, description="molecule | material; default by periodicity.")
    dtype: Literal["float32", "float64"] = "float64"
    gap: bool = Field(
        True, description="Molecules: also predict the GFN2-xTB HOMO-LUMO gap with committee uncertainty."
    )


class PredictResult(SinglePointResult):
    gap_eV: float | None = Field(
        None, description="HOMO-LUMO gap (GFN2-xTB level) from the shipped committee of property heads."
    )
    gap_std_eV: float | None = Field(None, description="Committee standard deviation of the gap.")
    gap_interval_eV: list[float] | None = Field(
        None, description="90 % split-conformal interval of the gap (calibrated on held-out molecules)."
    )


@register(
    "predict_properties",
    input=PredictInput,
    result=PredictResult,
    cost="light",
    timeout_s=300,
    category="prediction",
    compact=True,
    keywords=(r"\bpredict|\bfoundation model|\buncertaint|\btriscale\b|\bcommittee",),
    answer_fields=("energy_eV", "energy_per_atom_eV", "max_force_eV_per_A", "gap_eV"),
)
def predict_properties(ctx: ToolContext, a: PredictInput) -> PredictResult:
    """Energy, forces and stress from the TriScale foundation model (optionally with fine-tuned adapters); a
    committee of adapters also gives energy and force standard deviations. For molecules also the HOMO-LUMO gap
    (GFN2-xTB level) from a committee of property heads, with its spread and a calibrated 90 % interval."""
    spec = CalculatorSpec(
        method="triscale", model=a.model, adapters=a.adapters, domain=a.domain, dtype=a.dtype
    )
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    spec = resolve_method(spec, atoms)
    check_limits(spec, atoms)
    r = ctx.compute(compute.predict, atoms, spec, ctx.root, a.gap, label="foundation-model prediction")
    sp = _sp_result(sid, atoms, spec, r)
    if "gap_note" in r:
        sp.notes.append(r["gap_note"])
    extra = {}
    if "gap" in r:
        extra = {
            "gap_eV": _r(r["gap"], 4),
            "gap_std_eV": _r(r["gap_std"], 4),
            "gap_interval_eV": [_r(x, 4) for x in r.get("gap_interval", [])] or None,
        }
        sp.notes.append(f"gap from the {r['gap_model']} committee (GFN2-xTB level; electronic_structure checks it)")
    return PredictResult(**sp.model_dump(), **extra)
