"""Quantum-scale tools in the registry: ``electronic_structure`` (tblite GFN2/GFN1-xTB or PySCF HF/DFT: orbitals,
gap, charges, dipole, AO matrices as npz, density cube + PNG slice) and ``predict_hamiltonian`` (the learned
GFN2-xTB Hamiltonian head on the foundation encoder). Thin wrappers over :mod:`triscale.quantum`; the heavy work
runs in a worker process. Results are cached per (structure, method) as one npz per pair in ``quantum/``.

:func:`electronic_result` builds the result for ``electronic_structure`` and for ``orbital_energies`` (which
returns a subset of its fields), so both tools compute and report orbitals the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from pydantic import AliasChoices, Field, field_validator

from triscale.quantum.methods import ELECTRONIC, QuantumInputError, canonical_method
from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.calculation import CalcInput
from triscale.tools.calculators import CalculatorSpec, charge_spin, check_limits, resolve_method
from triscale.tools.errors import CalculationError, ToolInputError
from triscale.tools.validation import validate_atoms

__all__ = ["electronic_result"]

MAX_LISTED = 60  # charges are listed for molecules up to this size; larger ones only in the npz


class ElectronicStructureInput(ToolInput):
    structure_id: str = Field(
        validation_alias=AliasChoices("structure_id", "structure"),
        description="Structure id such as 'st3'; a molecule name ('water') or SMILES also works.",
    )
    method: str = Field(
        "gfn2-xtb",
        description="gfn2-xtb (fast, ≤300 atoms; periodic: Gamma point), gfn1-xtb, hf or dft (PySCF, ≤30 atoms), "
        "or a DFT functional name (pbe, b3lyp, pbe0, ...: DFT with it).",
    )
    functional: str | None = Field(None, description="dft only: exchange-correlation functional (default b3lyp).")
    basis: str | None = Field(
        None, description="hf/dft only: Gaussian basis-set name (e.g. sto-3g, 6-31g, def2-svp; default def2-svp)."
    )
    charge: int | None = Field(None, ge=-10, le=10, description="Net charge (default: the structure's, 0).")
    spin: int | None = Field(None, ge=0, le=20, description="Unpaired electrons 2S (default: the structure's, 0).")
    density_cube: bool = Field(
        False,
        description="Write the electron density as a cube file and a PNG slice (dft/hf: total density; "
        "gfn2-xtb, H/C/N/O only: valence density).",
    )
    cube_resolution_A: float = Field(0.15, ge=0.05, le=0.5, description="Grid spacing of the cube file (Å).")
    n_window: int = Field(5, ge=1, le=50, description="Orbitals listed below the HOMO and above the LUMO.")
    max_scf_cycles: int = Field(200, ge=1, le=2000)


class OrbitalLevels(ToolResult):
    """The orbital fields both electronic_structure and its subset orbital_energies report."""

    structure_id: str
    formula: str
    method: str
    energy_eV: float
    homo_eV: float
    lumo_eV: float | None
    gap_eV: float | None
    homo_index: int = Field(description="0-based index of the HOMO.")
    orbital_energies_eV: list[float] = Field(description="Window from HOMO-n_window+1 to LUMO+n_window-1.")
    occupations: list[float]


class ElectronicStructureResult(OrbitalLevels):
    n_ao: int = Field(description="Number of atomic orbitals (basis functions).")
    charges_e: list[float] | None = Field(None, description="Partial charges per atom (Mulliken-type).")
    dipole_e_A: list[float]
    dipole_magnitude_debye: float
    npz_path: str = Field(description="Workspace file with fock_Eh, overlap, density_matrix, coefficients, ...")
    cube_path: str | None = None
    png_path: str | None = None
    cube_grid: list[int] | None = None
    cube_integrated_electrons: float | None = None
    n_scf_cycles: int | None = None
    cached: bool = Field(False, description="True when the result came from an earlier call's npz.")


def _guard(fn, *args: Any, **kwargs: Any) -> Any:
    """Run in the worker; quantum errors become tool errors the caller understands."""
    from triscale.quantum.electronic import QuantumComputationError

    try:
        return fn(*args, **kwargs)
    except QuantumInputError as e:
        raise ToolInputError(str(e), hint=e.hint) from None
    except QuantumComputationError as e:
        raise CalculationError(str(e), hint="Raise max_scf_cycles, check charge/spin, or use gfn2-xtb.") from None


def _run_electronic(
    atoms, method: str, kw: dict[str, Any], npz_path: str, cube_path: str | None, png_path: str | None, res_A: float
) -> dict[str, Any]:
    from triscale.quantum import electronic as el

    out: dict[str, Any] = {"cached": Path(npz_path).exists()}
    if out["cached"]:
        es = el.load_npz(npz_path)
    else:
        es = el.electronic_structure(atoms, method, **kw)
        el.save_npz(es, npz_path)
    if cube_path:
        _, shape, n_el = el.density_cube(es, cube_path, resolution_A=res_A)
        out.update(cube_grid=list(shape), cube_integrated_electrons=round(n_el, 4))
        el.density_slice_png(es, png_path)
    out["es"] = es
    return out


@register(
    "electronic_structure",
    input=ElectronicStructureInput,
    result=ElectronicStructureResult,
    cost="heavy",
    timeout_s=900,
    category="quantum",
    needs_approval="expensive_method",  # its own method argument: dft, hf, b3lyp, pyscf ...
    answer_fields=("energy_eV", "homo_eV", "lumo_eV", "gap_eV", "dipole_magnitude_debye"),
)
def electronic_structure_tool(ctx: ToolContext, a: ElectronicStructureInput) -> ElectronicStructureResult:
    """Orbital energies, HOMO-LUMO gap, partial charges and dipole of a molecule from GFN2/GFN1-xTB (tblite) or
    HF/DFT (PySCF), with the AO Fock/Hamiltonian, overlap and density matrices saved as npz in the workspace and,
    for dft/hf, the electron density as a cube file with a PNG slice. Cached per structure and method."""
    try:
        canonical_method(a.method, "method")  # named as this tool's argument in the refusal
    except QuantumInputError as e:
        raise ToolInputError(str(e), hint=e.hint) from None
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    spec = CalculatorSpec(
        method=a.method,
        functional=a.functional,
        basis=a.basis,
        charge=a.charge,
        spin=a.spin,
        max_scf_cycles=a.max_scf_cycles,
    )
    return electronic_result(
        ctx, sid, atoms, spec, n_window=a.n_window, density_cube=a.density_cube, cube_resolution_A=a.cube_resolution_A
    )


def electronic_result(
    ctx: ToolContext,
    sid: str,
    atoms: Atoms,
    spec: CalculatorSpec,
    *,
    n_window: int = 5,
    density_cube: bool = False,
    cube_resolution_A: float = 0.15,
) -> ElectronicStructureResult:
    """Resolve and check ``spec`` for ``atoms`` (method, functional, basis, limits, charge/spin: before a worker
    starts), run :func:`triscale.quantum.electronic.electronic_structure` in the worker (or reuse the workspace's
    npz) and build the result. Shared by the ``electronic_structure`` and ``orbital_energies`` tools."""
    from triscale.quantum.electronic import cache_key

    spec = resolve_method(spec, atoms)
    if spec.method not in ELECTRONIC:
        raise ToolInputError(
            f"Orbital energies need gfn2-xtb, gfn1-xtb, hf or dft, not {spec.method}.",
            hint="Use calculator 'gfn2-xtb' (fast), 'hf', or 'dft' / a functional name such as 'pbe'.",
        )
    check_limits(spec, atoms)
    charge, spin = charge_spin(spec, atoms)
    if density_cube and (
        atoms.pbc.any()
        or spec.method == "gfn1-xtb"
        or (spec.method == "gfn2-xtb" and not set(atoms.numbers.tolist()) <= {1, 6, 7, 8})
    ):
        raise ToolInputError(
            "density_cube with xTB is available for gfn2-xtb molecules of H, C, N, O only (tblite does not expose "
            "its basis functions; those are rebuilt here).",
            hint="Call again with method='dft' (≤30 atoms), or density_cube=false.",
        )
    key = cache_key(atoms, spec.method, charge, spin, spec.functional, spec.basis, spec.restricted)
    stem = f"{sid}-{spec.method}-{key}"
    npz = ctx.workspace.path(f"quantum/{stem}.npz")
    cube = ctx.workspace.path(f"quantum/{stem}-density.cube") if density_cube else None
    png = ctx.workspace.path(f"quantum/{stem}-density.png") if density_cube else None
    kw = {
        "charge": charge,
        "spin": spin,
        "functional": spec.functional,
        "basis": spec.basis,
        "restricted": spec.restricted,
        "max_scf_cycles": spec.max_scf_cycles,
    }
    r = ctx.compute(
        _guard,
        _run_electronic,
        atoms,
        spec.method,
        kw,
        str(npz),
        cube and str(cube),
        png and str(png),
        cube_resolution_A,
        label=f"{spec.label()} electronic structure",
    )
    es = r.pop("es")
    eps, occ, homo = es.orbital_energies_eV, es.occupations, es.homo_index
    lo, hi = max(0, homo - n_window + 1), min(len(eps), homo + 1 + n_window)
    notes = []
    if atoms.pbc.any():
        notes.append("periodic: orbital energies at the Gamma point only (no k-point sampling)")
    if len(atoms) > MAX_LISTED:
        notes.append(f"charges omitted for >{MAX_LISTED} atoms; they are in the npz (charges_e)")
    n_el = int(atoms.numbers.sum()) - charge
    if spec.method == "gfn2-xtb" and density_cube:
        n_el = int(round(float(es.occupations.sum())))
        notes.append(f"xTB density is the valence density ({n_el} electrons; cores are not in the model)")
    if r.get("cube_integrated_electrons") is not None and r["cube_integrated_electrons"] < n_el - 0.5:
        notes.append(
            f"the cube integrates to {r['cube_integrated_electrons']:.2f} of {n_el} electrons: the density peaks "
            "at the nuclei are too sharp for this grid spacing (bonding regions are resolved); lower "
            "cube_resolution_A if the integral matters"
        )
    if r["cached"]:
        notes.append("reused the saved result of an earlier call (same structure and method)")
    return ElectronicStructureResult(
        structure_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        method=es.method,
        energy_eV=round(es.energy_eV, 6),
        homo_eV=round(es.homo_eV, 5),
        lumo_eV=None if es.lumo_eV is None else round(es.lumo_eV, 5),
        gap_eV=None if es.gap_eV is None else round(es.gap_eV, 5),
        homo_index=homo,
        n_ao=es.n_ao,
        orbital_energies_eV=[round(float(x), 5) for x in eps[lo:hi]],
        occupations=[round(float(x), 4) for x in occ[lo:hi]],
        charges_e=[round(float(x), 5) for x in es.charges_e] if len(atoms) <= MAX_LISTED else None,
        dipole_e_A=[round(float(x), 6) for x in es.dipole_e_A],
        dipole_magnitude_debye=round(float(np.linalg.norm(es.dipole_e_A) / units.Debye), 5),
        npz_path=ctx.workspace.relpath(npz),
        cube_path=ctx.workspace.relpath(cube) if cube else None,
        png_path=ctx.workspace.relpath(png) if png else None,
        n_scf_cycles=es.n_scf_cycles,
        notes=notes,
        **r,
    )


# --------------------------------------------------------------------------------------------- predict_hamiltonian


class PredictHamiltonianInput(ToolInput):
    structure_id: str = Field(
        validation_alias=AliasChoices("structure_id", "structure"),
        description="Structure id; a molecule name or SMILES also works. Closed-shell, elements the model covers.",
    )
    model: str = Field(
        "gfn2-hcno",
        description="Shipped head: 'gfn2-hcno' (GFN2-xTB, H/C/N/O molecules) or 'b3lyp-water' (B3LYP/6-31G, "
        "water only); or a saved model directory in the workspace.",
    )
    compare_with_reference: bool = Field(
        False, description="Also run the reference method and report the prediction's errors."
    )
    n_window: int = Field(5, ge=1, le=50)


class PredictHamiltonianResult(ToolResult):
    structure_id: str
    formula: str
    model: str
    imitates: str = Field(description="The level of theory the head was trained on.")
    n_ao: int
    homo_eV: float
    lumo_eV: float | None
    gap_eV: float | None
    gap_interval_eV: list[float] | None = Field(
        None, description="90 % split-conformal interval of the gap (calibrated on held-out molecules of the head)."
    )
    orbital_energies_eV: list[float]
    npz_path: str = Field(description="fock_Eh (predicted), overlap, orbital_energies_eV, coefficients.")
    reference_gap_eV: float | None = None
    gap_error_eV: float | None = None
    h_mae_meV: float | None = None
    occupied_orbital_energy_mae_meV: float | None = None
    occupied_orbital_cosine: float | None = None


def _run_predict(atoms, model_ref: str, compare: bool, npz_path: str) -> dict[str, Any]:
    from triscale.quantum.electronic import electronic_structure
    from triscale.quantum.hamiltonian import gap_conformal, load_hamiltonian_model, n_occupied, predict_hamiltonian

    try:
        model = load_hamiltonian_model(model_ref)
    except FileNotFoundError as e:
        raise QuantumInputError(str(e)) from None
    pred = predict_hamiltonian(atoms, model)
    out: dict[str, Any] = {"imitates": model.config.method, "n_ao": int(pred.fock_Eh.shape[0])}
    conformal = gap_conformal(model_ref)
    if conformal is not None and pred.gap_eV is not None:
        lo, hi = conformal.interval(pred.gap_eV)
        out["gap_interval_eV"] = [round(float(lo), 5), round(float(hi), 5)]
    out.update(eps=pred.orbital_energies_eV, homo=pred.homo_index)
    np.savez_compressed(
        npz_path,
        fock_Eh=pred.fock_Eh,
        overlap=pred.overlap,
        orbital_energies_eV=pred.orbital_energies_eV,
        coefficients=pred.coefficients,
        numbers=atoms.numbers,
        positions=atoms.positions,
    )
    if compare:
        from triscale.quantum.metrics import qh9_metrics

        basis = model.config.basis
        if basis.startswith("pyscf:"):
            m = model.config.method.split("/")
            ref = electronic_structure(atoms, m[0], functional=m[1] if len(m) > 2 else "hf", basis=basis[6:])
        else:
            ref = electronic_structure(atoms, basis)
        n_occ = n_occupied(atoms, basis)
        met = qh9_metrics(pred.fock_Eh, ref.fock_Eh, ref.overlap, n_occ)
        out.update(
            reference_gap_eV=round(float(ref.gap_eV), 5),
            gap_error_eV=round(float(pred.gap_eV - ref.gap_eV), 5),
            h_mae_meV=round(met["h_mae"] * units.Hartree * 1000, 3),
            occupied_orbital_energy_mae_meV=round(met["eps_occ_mae"] * units.Hartree * 1000, 2),
            occupied_orbital_cosine=round(met["psi_cos"], 5),
        )
    return out


@register(
    "predict_hamiltonian",
    input=PredictHamiltonianInput,
    result=PredictHamiltonianResult,
    cost="light",
    timeout_s=300,
    category="quantum",
    answer_fields=("homo_eV", "lumo_eV", "gap_eV", "reference_gap_eV", "gap_error_eV"),
)
def predict_hamiltonian_tool(ctx: ToolContext, a: PredictHamiltonianInput) -> PredictHamiltonianResult:
    """Predict a molecule's AO Hamiltonian (Fock matrix) with a learned equivariant head on the foundation encoder
    and the orbital energies / HOMO-LUMO gap that follow from it (GFN2-xTB-quality for H/C/N/O molecules).
    compare_with_reference=true also runs the reference method and reports the errors. Saves the matrix as npz."""
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    if atoms.pbc.any():
        raise ToolInputError("predict_hamiltonian handles molecules only.")
    model_ref = a.model
    local = ctx.workspace.root / a.model
    if (local / "config.json").is_file():
        model_ref = str(local)
    npz = ctx.workspace.new_file("quantum", f"{sid}-predicted-{Path(a.model).name}", ".npz")
    r = ctx.compute(
        _guard, _run_predict, atoms, model_ref, a.compare_with_reference, str(npz), label="Hamiltonian prediction"
    )
    eps, homo = r.pop("eps"), r.pop("homo")
    lo, hi = max(0, homo - a.n_window + 1), min(len(eps), homo + 1 + a.n_window)
    lumo = float(eps[homo + 1]) if homo + 1 < len(eps) else None
    return PredictHamiltonianResult(
        structure_id=sid,
        formula=atoms.get_chemical_formula(mode="hill"),
        model=a.model,
        homo_eV=round(float(eps[homo]), 5),
        lumo_eV=None if lumo is None else round(lumo, 5),
        gap_eV=None if lumo is None else round(lumo - float(eps[homo]), 5),
        orbital_energies_eV=[round(float(x), 5) for x in eps[lo:hi]],
        npz_path=ctx.workspace.relpath(npz),
        **r,
    )


# --------------------------------------------------------------------------- orbital energies (a subset)


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


class OrbitalResult(OrbitalLevels):
    """The orbital fields of ``electronic_structure``'s result (same computation, same numbers)."""

    n_orbitals: int


_ORBITAL_FIELDS = set(OrbitalLevels.model_fields)


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
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms)
    full = electronic_result(ctx, sid, atoms, a.calculator, n_window=a.n_window)
    return OrbitalResult(**full.model_dump(include=_ORBITAL_FIELDS), n_orbitals=full.n_ao)
