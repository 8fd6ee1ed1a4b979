"""Experiment planning: which candidates to simulate (or measure) next.

Every candidate is scored with the foundation model; a committee (several models, or two or more adapters)
gives a mean and a standard deviation per candidate. Acquisition functions (for ``goal="minimize"``; signs flip
for ``"maximize"``):

- ``ucb``  (lower/upper confidence bound): ``-(mu - kappa * sigma)``
- ``ei``   (expected improvement over the best mean): ``(best - mu) Phi(z) + sigma phi(z)``, ``z = (best - mu) / sigma``
- ``max_variance``: ``sigma`` (pure exploration: where the model is least sure)
- ``greedy``: ``-mu``

The top ``batch_size`` candidates by score form the proposed batch. Registered in the tool registry as
``plan_experiments``; an active-learning loop (label the batch with a reference method, fine-tune, re-rank) is
not part of this tool.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from ase import Atoms
from pydantic import BaseModel, Field

from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.calculators import CalculatorSpec, check_limits, resolve_method
from triscale.tools.errors import ToolInputError
from triscale.tools.validation import validate_atoms

__all__ = ["acquisition_scores", "PlanInput", "PlanResult"]

Objective = Literal["energy_per_atom_eV", "energy_eV", "max_force_eV_per_A"]
Acquisition = Literal["ucb", "ei", "max_variance", "greedy"]


def acquisition_scores(
    mean: np.ndarray, std: np.ndarray, kind: str, goal: str = "minimize", kappa: float = 2.0, xi: float = 0.0
) -> np.ndarray:
    """Higher is better. ``mean``/``std`` are per candidate; ``goal`` is ``minimize`` or ``maximize``."""
    mu = np.asarray(mean, dtype=float)
    sd = np.maximum(np.asarray(std, dtype=float), 0.0)
    if goal == "maximize":
        mu = -mu  # maximising f is minimising -f; sigma is unchanged
    if kind == "greedy":
        return -mu
    if kind == "ucb":
        return -(mu - kappa * sd)
    if kind == "max_variance":
        return sd
    if kind == "ei":
        best = float(mu.min())
        imp = best - mu - xi
        out = np.where(imp > 0, imp, 0.0)
        mask = sd > 1e-12
        z = np.where(mask, imp / np.where(mask, sd, 1.0), 0.0)
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
        return np.where(mask, imp * cdf + sd * pdf, out)
    raise ValueError(f"Unknown acquisition {kind!r}.")


def predict_many(atoms_list: list[Atoms], spec: CalculatorSpec, root: str | None) -> list[dict[str, float]]:
    """One calculator for all candidates (runs in the worker): energy, per-atom energy, max force and stds."""
    from triscale.tools.calculation import attach_calculator, calculation_results

    out = []
    calc_atoms = None
    for atoms in atoms_list:
        if calc_atoms is None:
            calc_atoms = attach_calculator(atoms, spec, root)
            calc = calc_atoms.calc
        a = atoms.copy()
        a.calc = calc
        r = calculation_results(a, spec, want_stress=False)
        n = len(a)
        fnorm = np.linalg.norm(r["forces"], axis=1)
        row = {
            "energy_eV": r["energy"],
            "energy_per_atom_eV": r["energy"] / n,
            "max_force_eV_per_A": float(fnorm.max()),
            "energy_std_eV": float(np.asarray(r.get("energy_std", 0.0)).reshape(-1)[0]),
        }
        row["energy_per_atom_std_eV"] = row["energy_std_eV"] / n
        fs = r.get("forces_std")
        row["max_force_std_eV_per_A"] = float(np.asarray(fs).max()) if fs is not None else 0.0
        out.append(row)
    return out


class PlanInput(ToolInput):
    candidates: list[str] = Field(
        min_length=2, max_length=500, description="Structure ids, molecule names or SMILES to rank."
    )
    objective: Objective = Field("energy_per_atom_eV", description="The predicted quantity to optimise.")
    goal: Literal["minimize", "maximize"] = "minimize"
    acquisition: Acquisition = Field("ucb", description="ucb | ei | max_variance | greedy.")
    batch_size: int = Field(3, ge=1, le=100, description="How many candidates to propose.")
    kappa: float = Field(2.0, ge=0, le=10, description="UCB exploration weight (multiples of sigma).")
    model: str | list[str] = Field(
        "triscale-base", description="Checkpoint name or model directory; several form a committee."
    )
    adapters: list[str] | None = Field(None, description="Adapter directories; 2 or more form a committee.")
    calculator: str | None = Field(
        None, description="Score with another method instead (e.g. 'gfn2-xtb'; no uncertainty then)."
    )


class Candidate(BaseModel):
    rank: int
    structure_id: str
    label: str
    formula: str
    mean: float
    std: float
    score: float


class PlanResult(ToolResult):
    objective: str
    unit: str
    goal: str
    acquisition: str
    method: str
    committee_size: int
    selected: list[str] = Field(description="Structure ids of the proposed batch, best first.")
    ranking: list[Candidate] = Field(description="All candidates, best score first (top 50 listed).")


@register(
    "plan_experiments",
    input=PlanInput,
    result=PlanResult,
    cost="light",
    timeout_s=900,
    category="prediction",
    compact=True,
    keywords=(r"\bplan\b|\brank|\bwhich .* next\b|\bcandidates?\b|\bactive learning",),
    needs_approval="expensive_method",  # calculator='dft' scores every candidate with DFT
    answer_fields=("selected",),
)
def plan_experiments(ctx: ToolContext, a: PlanInput) -> PlanResult:
    """Rank candidate structures for the next simulations by the foundation model's prediction and committee
    uncertainty (UCB, expected improvement or max variance) and propose a batch."""
    resolved = [ctx.structure(c) for c in a.candidates]
    ids = [sid for sid, _ in resolved]
    if len(set(ids)) < len(ids):
        raise ToolInputError("The candidate list names the same structure twice.", hint="Give each candidate once.")
    atoms_list = [atoms for _, atoms in resolved]
    for atoms in atoms_list:
        validate_atoms(atoms)
    if a.calculator:
        spec = CalculatorSpec(method=a.calculator)
    else:
        spec = CalculatorSpec(method="triscale", model=a.model, adapters=a.adapters)
    spec = resolve_method(spec, atoms_list[0])
    for atoms in atoms_list:
        check_limits(spec, atoms)
    members = len(a.model) if isinstance(a.model, list) else 1
    committee = max(members, len(a.adapters or [])) if spec.method == "triscale" else 1
    rows: list[dict[str, Any]] = ctx.compute(predict_many, atoms_list, spec, ctx.root, label="candidate ranking")
    std_key = {
        "energy_eV": "energy_std_eV",
        "energy_per_atom_eV": "energy_per_atom_std_eV",
        "max_force_eV_per_A": "max_force_std_eV_per_A",
    }[a.objective]
    mean = np.array([r[a.objective] for r in rows])
    std = np.array([r[std_key] for r in rows])
    if committee < 2 and a.acquisition != "greedy":
        ctx.notes.append(
            "No committee (one model, <2 adapters): the uncertainty is zero and the ranking is greedy. Pass "
            "several model directories or adapters for UCB/EI/max-variance."
        )
    scores = acquisition_scores(mean, std, a.acquisition, a.goal, a.kappa)
    order = np.argsort(-scores, kind="stable")
    ranking = []
    for rank, i in enumerate(order[:50], start=1):
        rec = ctx.workspace.record(ids[i])
        ranking.append(
            Candidate(
                rank=rank,
                structure_id=ids[i],
                label=rec["label"],
                formula=rec["formula"],
                mean=round(float(mean[i]), 6),
                std=round(float(std[i]), 6),
                score=round(float(scores[i]), 6),
            )
        )
    unit = {"energy_eV": "eV", "energy_per_atom_eV": "eV/atom", "max_force_eV_per_A": "eV/Å"}[a.objective]
    return PlanResult(
        objective=a.objective,
        unit=unit,
        goal=a.goal,
        acquisition=a.acquisition,
        method=spec.label(),
        committee_size=committee,
        selected=[ids[i] for i in order[: a.batch_size]],
        ranking=ranking,
    )
