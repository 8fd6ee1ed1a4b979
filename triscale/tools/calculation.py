"""What every calculation tool shares: the structure + calculator input, the checks before work, and (in the
worker process) attaching the calculator and reading its results as plain data."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from pydantic import AliasChoices, Field, field_validator

from triscale.tools.base import ToolContext, ToolInput
from triscale.tools.calculators import CalculatorSpec, check_limits, make_calculator, resolve_method
from triscale.tools.errors import CalculationError, ToolInputError
from triscale.tools.validation import validate_atoms

__all__ = ["CalcInput", "attach_calculator", "calculation_failed", "calculation_results", "fnorm", "prepare", "rounded"]


class CalcInput(ToolInput):
    structure_id: str = Field(
        validation_alias=AliasChoices("structure_id", "structure"),
        description="Structure id such as 'st3'. A molecule name ('water') or SMILES also works (it is built first).",
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


def prepare(ctx: ToolContext, a: CalcInput) -> tuple[str, Atoms, CalculatorSpec]:
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    spec = resolve_method(a.calculator, atoms)
    check_limits(spec, atoms)
    return sid, atoms, spec


def fnorm(f: np.ndarray) -> tuple[float, float]:
    norms = np.sqrt((np.asarray(f) ** 2).sum(axis=1))
    return float(norms.max()), float(np.sqrt((norms**2).mean()))


def rounded(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(float(x), nd)


# ------------------------------------------------------------- in the worker process


def attach_calculator(atoms: Atoms, spec: CalculatorSpec, root: str | None) -> Atoms:
    atoms = atoms.copy()
    atoms.calc = make_calculator(spec, atoms, root)
    return atoms


def calculation_failed(e: Exception, spec: CalculatorSpec) -> CalculationError:
    text = str(e)
    if "converge" in text.lower():
        return CalculationError(
            f"The SCF of {spec.label()} did not converge: {text}",
            hint="Raise max_scf_cycles, check charge/spin, or use gfn2-xtb or a smaller basis.",
        )
    return CalculationError(f"{spec.label()} failed: {type(e).__name__}: {text}")


def calculation_results(atoms: Atoms, spec: CalculatorSpec, want_stress: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["energy"] = float(atoms.get_potential_energy())
        out["forces"] = np.asarray(atoms.get_forces(), dtype=float)
        if want_stress and atoms.pbc.all() and "stress" in atoms.calc.implemented_properties:
            out["stress"] = np.asarray(atoms.get_stress(voigt=True), dtype=float)
    except (ToolInputError, CalculationError):
        raise
    except Exception as e:  # noqa: BLE001 - library errors become readable tool errors
        raise calculation_failed(e, spec) from e
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
