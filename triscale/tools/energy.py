"""The single-point tool: energy, forces, stress, dipole and charges of one structure."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms, units
from pydantic import Field

from triscale.tools.base import ToolContext, ToolResult, register
from triscale.tools.calculation import (
    CalcInput,
    attach_calculator,
    calculation_results,
    fnorm,
    prepare,
    rounded,
)
from triscale.tools.calculators import CalculatorSpec

__all__ = ["SinglePointResult", "single_point_result"]

MAX_LISTED_CHARGES = 100


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
    sid, atoms, spec = prepare(ctx, a)
    r = ctx.compute(singlepoint, atoms, spec, ctx.root, label=f"{spec.label()} single point")
    return single_point_result(sid, atoms, spec, r)


def single_point_result(
    sid: str, atoms: Atoms, spec: CalculatorSpec, r: dict[str, Any], **extra: Any
) -> SinglePointResult:
    fmax, frms = fnorm(r["forces"])
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
        out["energy_std_eV"] = rounded(np.asarray(r["energy_std"]).reshape(-1)[0])
    if "forces_std" in r:
        out["max_force_std_eV_per_A"] = rounded(np.asarray(r["forces_std"]).max())
    if "energy_uncertainty" in r:
        out["energy_uncertainty_eV"] = rounded(r["energy_uncertainty"])
    return SinglePointResult(
        structure_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        n_atoms=len(atoms),
        method=spec.label(),
        energy_eV=rounded(r["energy"]),
        energy_per_atom_eV=rounded(r["energy"] / len(atoms)),
        max_force_eV_per_A=rounded(fmax),
        rms_force_eV_per_A=rounded(frms),
        notes=notes,
        **out,
        **extra,
    )


# ------------------------------------------------------------- in the worker process


def singlepoint(atoms: Atoms, spec: CalculatorSpec, root: str | None) -> dict[str, Any]:
    atoms = attach_calculator(atoms, spec, root)
    return calculation_results(atoms, spec, want_stress=True)
