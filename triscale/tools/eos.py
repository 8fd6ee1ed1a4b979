"""Equation of state: energy against volume, Birch-Murnaghan (or other) fit, bulk modulus, lattice constant."""

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

    sid, atoms, spec = prepare(ctx, a)
    if not atoms.pbc.all():
        raise ToolInputError("The equation of state needs a 3D periodic crystal.", hint="Build one with build_bulk.")
    r = ctx.compute(
        eos,
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
        raise CalculationError(f"The EOS fit failed: {e}", hint="Widen volume_range or relax the structure.") from e
    if not (r["volumes"].min() <= v0 <= r["volumes"].max()):
        ctx.notes.append("The minimum lies outside the scanned volumes; relax the cell or widen volume_range.")
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
        equilibrium_volume_A3=rounded(v0),
        volume_per_atom_A3=rounded(v0 / len(atoms)),
        minimum_energy_eV=rounded(e0),
        bulk_modulus_GPa=rounded(b / units.GPa, 4),
        lattice_constant_A=rounded(lattice["a"]) if "a" in lattice else None,
        lattice_c_A=rounded(lattice["c"]) if "c" in lattice else None,
        bravais_lattice=lattice.get("name"),
        cell_lengths_A=[round(float(x), 6) for x in lengths],
        volumes_A3=[round(float(x), 5) for x in r["volumes"]],
        energies_eV=[round(float(x), 6) for x in r["energies"]],
    )


# ------------------------------------------------------------- in the worker process


def eos(atoms: Atoms, spec: CalculatorSpec, root: str | None, volume_range: float, n_points: int) -> dict[str, Any]:
    atoms = attach_calculator(atoms, spec, root)
    cell0 = atoms.get_cell().copy()
    scales = np.linspace(1.0 - volume_range, 1.0 + volume_range, n_points) ** (1.0 / 3.0)
    vols, ens = [], []
    try:
        for s in scales:
            atoms.set_cell(cell0 * s, scale_atoms=True)
            ens.append(float(atoms.get_potential_energy()))
            vols.append(float(atoms.get_volume()))
    except Exception as e:  # noqa: BLE001
        raise calculation_failed(e, spec) from e
    return {"volumes": np.asarray(vols), "energies": np.asarray(ens), "cell0": np.asarray(cell0)}
