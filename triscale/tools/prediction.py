"""Foundation-model predictions: energy, forces, stress with committee uncertainty, and the HOMO-LUMO gap from
the shipped property-head committee."""

from __future__ import annotations

import functools
from typing import Any, Literal

from ase import Atoms
from pydantic import AliasChoices, Field

from triscale.tools.base import ToolContext, ToolInput, register
from triscale.tools.calculation import (
    attach_calculator,
    calculation_results,
    rounded,
)
from triscale.tools.calculators import CalculatorSpec, check_limits, resolve_method
from triscale.tools.energy import SinglePointResult, single_point_result
from triscale.tools.validation import validate_atoms

__all__ = ["GAP_MODEL", "predicted_gap"]


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
    spec = CalculatorSpec(method="triscale", model=a.model, adapters=a.adapters, domain=a.domain, dtype=a.dtype)
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    spec = resolve_method(spec, atoms)
    check_limits(spec, atoms)
    r = ctx.compute(predict, atoms, spec, ctx.root, a.gap, label="foundation-model prediction")
    sp = single_point_result(sid, atoms, spec, r)
    if "gap_note" in r:
        sp.notes.append(r["gap_note"])
    extra = {}
    if "gap" in r:
        extra = {
            "gap_eV": rounded(r["gap"], 4),
            "gap_std_eV": rounded(r["gap_std"], 4),
            "gap_interval_eV": [rounded(x, 4) for x in r.get("gap_interval", [])] or None,
        }
        sp.notes.append(f"gap from the {r['gap_model']} committee (GFN2-xTB level; electronic_structure checks it)")
    return PredictResult(**sp.model_dump(), **extra)


# ------------------------------------------------------------- in the worker process


def predict(atoms: Atoms, spec: CalculatorSpec, root: str | None, gap: bool = False) -> dict[str, Any]:
    out = calculation_results(attach_calculator(atoms, spec, root), spec, want_stress=True)
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
