"""Reaction energies (and Gibbs energies) from balanced reaction strings."""

from __future__ import annotations

import re
from typing import Any

from ase import Atoms, units
from pydantic import Field, field_validator

from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.calculation import (
    CalcInput,
    rounded,
)
from triscale.tools.calculators import CalculatorSpec, charge_spin, check_limits, resolve_method
from triscale.tools.errors import ToolInputError
from triscale.tools.optimization import optimize
from triscale.tools.validation import validate_atoms
from triscale.tools.vibrations import vibrations

__all__ = ["parse_reaction"]

# A bare "=" is an arrow only with spaces around it: "C=C" is a SMILES double bond, "A + B = C" a reaction.
_ARROW = re.compile(r"\s*(?:->|=>|→|<=>)\s*|\s+=\s+")

EV_TO_KJ_PER_MOL = units.mol / units.kJ


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
    free_energy: bool = Field(False, description="Also ideal-gas reaction enthalpy and Gibbs energy (vibrations).")
    temperature_K: float = Field(298.15, gt=0, le=5000)
    pressure_Pa: float = Field(101325.0, gt=0, le=1e10)
    fmax_eV_per_A: float = Field(0.01, gt=0, le=1.0)
    conformers: int = Field(
        4,
        ge=1,
        le=12,
        description="Starting geometries per species (3+ heavy atoms): the built one and RDKit conformers of its "
        "SMILES; each is relaxed and the lowest minimum is used (1: the built geometry only).",
    )

    @field_validator("calculator", mode="before")
    @classmethod
    def _coerce_calc(cls, v: Any) -> Any:
        return CalcInput._coerce_calc(v)


class ReactionResult(ToolResult):
    reaction: str
    method: str
    species: list[dict[str, Any]] = Field(description="name, coefficient, structure_id (relaxed), energy_eV, ...")
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
            resolved[name] = ctx.structure(name, crystals=False)  # ideal-gas species
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
        label = ctx.workspace.record(sid).get("label")
        starts = [atoms, *_conformers(atoms, label, a.conformers - 1, compute=ctx.compute)]
        r = ctx.compute(
            relax_and_energy,
            starts,
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
        new = ctx.store(r["atoms"], parent=sid, label=f"{name} opt", method=spec.label(), energy_eV=r["energy"])
        if r["best_start"] > 0:
            ctx.notes.append(
                f"{name}: an RDKit conformer relaxed {r['below_built_eV']:.4f} eV below the built geometry's "
                f"minimum and is used ({len(starts)} starting geometries)."
            )
        results[name] = r
        species.append(
            {
                "name": name,
                "structure_id": new,
                "energy_eV": rounded(r["energy"]),
                **(
                    {"gibbs_free_energy_eV": rounded(r["gibbs"]), "enthalpy_eV": rounded(r["enthalpy"])}
                    if a.free_energy
                    else {}
                ),
                "conformers_tried": len(starts),
                **({} if r["converged"] else {"converged": False}),
            }
        )

    def delta(key: str) -> float:
        return sum(c * results[n][key] for c, n in rhs) - sum(c * results[n][key] for c, n in lhs)

    for s in species:
        s["coefficient"] = -sum(c for c, n in lhs if n == s["name"]) + sum(c for c, n in rhs if n == s["name"])
    de = delta("energy")
    out: dict[str, Any] = {}
    if a.free_energy:
        dg = delta("gibbs")
        out.update(
            reaction_enthalpy_eV=rounded(delta("enthalpy")),
            reaction_gibbs_energy_eV=rounded(dg),
            reaction_gibbs_energy_kJ_per_mol=rounded(dg * EV_TO_KJ_PER_MOL, 3),
            temperature_K=a.temperature_K,
        )
    canon = " + ".join(f"{c:g} {n}" for c, n in lhs) + " -> " + " + ".join(f"{c:g} {n}" for c, n in rhs)
    return ReactionResult(
        reaction=canon,
        method=spec.label() if spec else "",
        species=species,
        reaction_energy_eV=rounded(de),
        reaction_energy_kJ_per_mol=rounded(de * EV_TO_KJ_PER_MOL, 3),
        **out,
    )


def _conformers(atoms: Atoms, label: str | None, n: int, *, compute: Any = None) -> list[Atoms]:
    """Up to ``n`` more starting geometries of a molecule: RDKit ETKDG conformers of its SMILES (other seeds than
    the builder's). Built geometries sit in one minimum, not always the lowest: g2's ethanol (anti) relaxes with
    GFN2-xTB 0.067 eV above the gauche form an embedding finds. ``compute``: embed large molecules in a worker
    under the tool's wall-time limit, as the builder does."""
    from triscale.tools.builders import molecule_from_smiles, molecule_smiles

    heavy = sum(1 for z in atoms.numbers if z > 1)
    if n < 1 or atoms.pbc.any() or heavy < 3:
        return []
    smiles = molecule_smiles(atoms, label, int(atoms.info.get("charge", 0) or 0))
    out = []
    for k in range(n):
        try:
            conf = molecule_from_smiles(smiles, seed=0xF00D + 1 + k, compute=compute) if smiles else None
        except ToolInputError:
            conf = None
        if conf is not None and sorted(conf.numbers) == sorted(atoms.numbers):
            conf.info.update({key: atoms.info[key] for key in ("charge", "spin") if key in atoms.info})
            out.append(conf)
    return out


# ------------------------------------------------------------- in the worker process


def relax_and_energy(
    starts: list[Atoms],
    spec: CalculatorSpec,
    root: str | None,
    fmax: float,
    steps: int,
    thermo: bool,
    temperature_K: float,
    pressure_Pa: float,
    vib_dir: str,
) -> dict[str, Any]:
    """For reaction energies: relax each starting geometry of one species, keep the lowest minimum (a converged one
    first) and (optionally) its ideal-gas Gibbs energy."""
    from ase.thermochemistry import IdealGasThermo

    relaxed = [optimize(atoms, spec, root, "bfgs", fmax, steps, False, 0.0, None, None) for atoms in starts]
    best = min(range(len(relaxed)), key=lambda i: (not relaxed[i]["converged"], relaxed[i]["energy"]))
    res = relaxed[best]
    out = {
        "atoms": res["atoms"],
        "energy": res["energy"],
        "converged": res["converged"],
        "best_start": best,
        "below_built_eV": relaxed[0]["energy"] - res["energy"],
    }
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
