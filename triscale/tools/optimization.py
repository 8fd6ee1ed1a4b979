"""Geometry (and cell) optimisation."""

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
    fnorm,
    prepare,
    rounded,
)
from triscale.tools.calculators import CalculatorSpec
from triscale.tools.errors import CalculationError, ToolInputError

__all__: list[str] = []


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
    sid, atoms, spec = prepare(ctx, a)
    if a.relax_cell and not atoms.pbc.all():
        raise ToolInputError("relax_cell needs a 3D periodic structure.", hint="Set relax_cell=false for molecules.")
    ws = ctx.workspace
    traj = ws.new_file("trajectories", f"opt_{sid}", ".traj")
    log = traj.with_suffix(".log")
    r = ctx.compute(
        optimize,
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
    fmax, _ = fnorm(r["forces"])
    notes = (
        []
        if r["converged"]
        else [f"Not converged in {a.steps} steps (max force {fmax:.3f} eV/Å); call optimize_geometry again on {new}."]
    )
    extra: dict[str, Any] = {}
    if atoms.pbc.all():
        fin = r["atoms"]
        extra["volume_A3"] = rounded(fin.get_volume(), 4)
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
        energy_initial_eV=rounded(r["energy_initial"]),
        energy_final_eV=rounded(r["energy"]),
        energy_change_eV=rounded(r["energy"] - r["energy_initial"]),
        max_force_eV_per_A=rounded(fmax),
        trajectory_file=ws.relpath(traj),
        notes=notes,
        **extra,
    )


# ------------------------------------------------------------- in the worker process


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

    atoms = attach_calculator(atoms, spec, root)
    first = calculation_results(atoms, spec, want_stress=relax_cell)
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
        raise calculation_failed(e, spec) from e
    final = calculation_results(atoms, spec, want_stress=True)
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
