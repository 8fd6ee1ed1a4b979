"""Vibrational analysis (frequencies, IR intensities) and ideal-gas/harmonic thermochemistry."""

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
    calculation_results,
    prepare,
    rounded,
)
from triscale.tools.calculators import CalculatorSpec, charge_spin
from triscale.tools.errors import CalculationError, ToolInputError
from triscale.tools.optimization import optimize

__all__: list[str] = []

EV_TO_KJ_PER_MOL = units.mol / units.kJ


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
    frequencies_cm1: list[float] = Field(description="All 3N modes, ascending; imaginary modes as negative numbers.")
    vibrational_frequencies_cm1: list[float] = Field(description="The 3N-6 (3N-5 linear) true vibrations.")
    n_imaginary: int = Field(description="Imaginary modes among the true vibrations (|ν| > 50 cm-1).")
    zero_point_energy_eV: float
    ir_intensities_D2_per_A2_amu: list[float] | None = Field(None, description="For the true vibrations.")
    geometry: str


def _n_true(geometry: str, n: int, periodic: bool) -> int:
    if periodic:
        return 3 * n - 3
    return {"monatomic": 0, "linear": 3 * n - 5, "nonlinear": 3 * n - 6}[geometry]


def _vib_common(ctx: ToolContext, a: VibInput) -> tuple[str, str | None, Atoms, CalculatorSpec, dict[str, Any]]:
    sid, atoms, spec = prepare(ctx, a)
    parent = None
    ws = ctx.workspace
    if a.optimize_first:
        r = ctx.compute(
            optimize,
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
            ctx.notes.append(f"Pre-optimisation did not reach {a.fmax_eV_per_A} eV/Å; frequencies may be off.")
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
        vibrations,
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
        ctx.notes.append(f"{n_imag} imaginary mode(s): not a minimum; optimise more tightly or check the structure.")
    return VibResult(
        structure_id=sid,
        parent_id=parent,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        potential_energy_eV=rounded(v["energy"]),
        frequencies_cm1=[round(float(x), 2) for x in freqs],
        vibrational_frequencies_cm1=[round(float(x), 2) for x in true_f],
        n_imaginary=n_imag,
        zero_point_energy_eV=rounded(zpe),
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
    enthalpy_eV: float = Field(description="E_pot + ZPE + thermal corrections (ideal gas, rigid rotor, harmonic).")
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
    # The spin the calculation used (the method's spin if given, else the structure's), not the structure's alone.
    spin_s = charge_spin(spec, atoms)[1] / 2.0
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
        potential_energy_eV=rounded(v["energy"]),
        zero_point_energy_eV=rounded(thermo.get_ZPE_correction()),
        enthalpy_eV=rounded(h),
        entropy_eV_per_K=rounded(s, 9),
        gibbs_free_energy_eV=rounded(g),
        thermal_correction_gibbs_eV=rounded(g - v["energy"]),
        geometry=v["geometry"],
        symmetry_number=sigma,
        spin_S=spin_s,
        vibrational_frequencies_cm1=[round(float(x), 2) for x in np.sort(_to_cm1(sel))],
    )


# ------------------------------------------------------------- in the worker process


def molecular_geometry(atoms: Atoms) -> str:
    if len(atoms) == 1:
        return "monatomic"
    moments = np.sort(atoms.get_moments_of_inertia())
    return "linear" if moments[0] < 1e-3 * max(moments[-1], 1e-12) else "nonlinear"


def symmetry_number(atoms: Atoms) -> int:
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

    atoms = attach_calculator(atoms, spec, root)
    base = calculation_results(atoms, spec, want_stress=False)
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
        raise calculation_failed(e, spec) from e
    return {
        "energy": base["energy"],
        "vib_energies": energies,
        "ir_intensities": intens,
        "geometry": molecular_geometry(atoms),
        "symmetry_number": symmetry_number(atoms) if not atoms.pbc.any() else 1,
    }
