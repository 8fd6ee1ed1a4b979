"""Experiment planning: which candidates to simulate (or measure) next.

Two tools: ``plan_experiments`` ranks a candidate set once; ``run_campaign`` closes the loop (label a batch with a
reference method, fine-tune the committee, re-rank, repeat; the engine is :mod:`triscale.tools.active_learning`).
A campaign lives in ``<workspace>/planning/<name>``: calling the tool again with the same name and settings resumes
it (labels already computed are never recomputed; a larger budget extends a finished campaign). Long campaigns run
as a job: ``submit_job(tool="run_campaign", arguments={...})``, then ``job_status``/``job_result``.

Every candidate is scored with the foundation model; a committee (several models, or two or more adapters)
gives a mean and a standard deviation per candidate. Acquisition functions (for ``goal="minimize"``; signs flip
for ``"maximize"``):

- ``ucb``  (lower/upper confidence bound): ``-(mu - kappa * sigma)``
- ``ei``   (expected improvement over the best mean): ``(best - mu) Phi(z) + sigma phi(z)``, ``z = (best - mu) / sigma``
- ``max_variance``: ``sigma`` (pure exploration: where the model is least sure)
- ``greedy``: ``-mu``

The top ``batch_size`` candidates by score form the proposed batch. Registered in the tool registry as
``plan_experiments``; the loop (label the batch with a reference method, fine-tune, re-rank) is its sibling
``run_campaign`` below.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from ase import Atoms
from pydantic import BaseModel, Field

from triscale.tools.active_learning import OBJECTIVES, CampaignRecipe, acquisition_scores, settings_conflict
from triscale.tools.active_learning import Acquisition as CampaignAcquisition
from triscale.tools.active_learning import Objective as CampaignObjective
from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.calculators import CalculatorSpec, check_limits, resolve_method
from triscale.tools.errors import ToolError, ToolInputError
from triscale.tools.validation import validate_atoms

__all__ = ["CampaignInput", "CampaignResult", "PlanInput", "PlanResult", "acquisition_scores"]

Objective = Literal["energy_per_atom_eV", "energy_eV", "max_force_eV_per_A"]
Acquisition = Literal["ucb", "ei", "max_variance", "greedy"]


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


# --------------------------------------------------------------------------- the closed loop: run_campaign


class CampaignInput(ToolInput):
    name: str = Field("campaign", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Campaign name (folder).")
    candidates: list[str] | None = Field(
        None, min_length=2, max_length=2000, description="Structure ids, molecule names or SMILES forming the pool."
    )
    smiles_file: str | None = Field(None, description="Workspace file with one SMILES (and optional name) a line.")
    structure_files: list[str] | None = Field(None, description="Workspace structure files; every frame a candidate.")
    objective: CampaignObjective = Field("gap_eV", description="gap_eV | energy_per_atom_eV | dipole_e_A.")
    goal: Literal["minimize", "maximize"] = "maximize"
    reference: str = Field("gfn2-xtb", description="Method that labels: gfn2-xtb, gfn1-xtb, hf, dft, b3lyp, emt, ...")
    budget: int = Field(20, ge=1, le=500, description="Reference calculations to spend in all.")
    batch_size: int = Field(5, ge=1, le=100, description="Candidates labelled per round.")
    acquisition: CampaignAcquisition = Field("ucb", description="ucb | ei | max_variance | greedy | random.")
    kappa: float = Field(2.0, ge=0, le=10)
    committee: int = Field(4, ge=2, le=16, description="Property heads in the committee.")
    warm_start: str | None = Field(
        None, description="Shipped property committee to start from (gfn2-gap for gaps); default: gfn2-gap for gap_eV."
    )
    steps: int = Field(150, ge=1, le=2000, description="Fine-tuning steps per head per round.")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class CampaignResult(ToolResult):
    campaign_dir: str = Field(description="Workspace folder with labels.jsonl, rounds.jsonl, report.md, progress.png.")
    objective: str
    unit: str
    goal: str
    reference: str
    acquisition: str
    pool_size: int
    budget: int
    labels_spent: int
    complete: bool
    best: list[dict[str, Any]] = Field(description="Best labelled candidates with their reference values.")
    proposal: list[dict[str, Any]] = Field(description="Unlabelled candidates the final committee ranks best.")
    rounds: list[dict[str, Any]] = Field(description="Per round: labels, best so far, error before training.")
    calibration_scale: float
    report_file: str
    plot_file: str | None = None


def _campaign_worker(recipe: dict, structures: list | None, names: list[str] | None, base_dir: str) -> dict:
    from triscale.tools.active_learning import Campaign

    campaign = Campaign(CampaignRecipe.model_validate(recipe), structures, names, base_dir=base_dir)
    return campaign.run()


def _needs_approval(a: BaseModel) -> bool:
    from triscale.tools.calculators import is_dft

    try:
        return is_dft(getattr(a, "reference", None))
    except ToolInputError:
        return False


@register(
    "run_campaign",
    input=CampaignInput,
    result=CampaignResult,
    cost="heavy",
    timeout_s=3600,
    category="prediction",
    compact=True,
    keywords=(r"active learning|\bcampaign\b|\blabel budget\b|using at most \d+ .*(calculations|labels)|closed?.loop",),
    needs_approval=_needs_approval,
    answer_fields=("best", "proposal"),
)
def run_campaign(ctx: ToolContext, a: CampaignInput) -> CampaignResult:
    """Find the best candidates with few expensive calculations: an active-learning campaign that scores a pool
    with a committee of property heads on the foundation model, labels the most promising batch with a reference
    method (GFN2-xTB, DFT, ...), fine-tunes, and repeats until the label budget is spent. Resumable by name; run
    it as a job for large budgets. Returns the best labelled candidates and a ranked proposal."""
    from triscale.quantum.methods import ELECTRONIC
    from triscale.tools.calculators import canonical_method

    sources = [k for k in ("candidates", "smiles_file", "structure_files") if getattr(a, k)]
    if len(sources) != 1:
        raise ToolInputError(
            f"Give the pool in exactly one way (got {', '.join(sources) or 'none'}).",
            hint="candidates=[ids or SMILES], or smiles_file='pool.smi', or structure_files=['pool.xyz'].",
        )
    method = canonical_method(a.reference)  # unknown names refused with the accepted list
    if a.objective in ("gap_eV", "dipole_e_A") and method not in ELECTRONIC:
        raise ToolInputError(
            f"{a.objective} needs an electronic-structure reference, not {a.reference!r}.",
            hint=f"Use one of: {', '.join(sorted(ELECTRONIC))}.",
        )
    if a.batch_size > a.budget:
        raise ToolInputError(f"batch_size {a.batch_size} exceeds the budget {a.budget}.", hint="Lower batch_size.")
    warm = a.warm_start if a.warm_start is not None else ("gfn2-gap" if a.objective == "gap_eV" else None)
    if warm is not None:
        from triscale.finetune.property import shipped_properties

        if warm not in shipped_properties():
            warm = str(ctx.workspace.path(warm, must_exist=True))
    structures = names = None
    pool: dict[str, Any] | None = None
    if a.candidates:
        resolved = [ctx.structure(c) for c in a.candidates]
        ids = [sid for sid, _ in resolved]
        if len(set(ids)) < len(ids):
            raise ToolInputError("The candidate list names the same structure twice.", hint="Give each once.")
        structures = [atoms for _, atoms in resolved]
        names = [f"{sid}:{ctx.workspace.record(sid)['label']}" for sid in ids]
    elif a.smiles_file:
        pool = {"smiles_file": str(ctx.workspace.path(a.smiles_file, must_exist=True))}
    else:
        pool = {"structure_files": [str(ctx.workspace.path(f, must_exist=True)) for f in a.structure_files or []]}
    out = ctx.workspace.root / "planning" / a.name
    recipe = CampaignRecipe(
        name=a.name,
        out=str(out),
        pool=pool,
        objective=a.objective,
        goal=a.goal,
        reference=a.reference,
        budget=a.budget,
        batch_size=a.batch_size,
        acquisition=a.acquisition,
        kappa=a.kappa,
        committee=a.committee,
        warm_start=warm,
        steps=a.steps,
        seed=a.seed,
    )
    conflict = settings_conflict(out, recipe)
    if conflict:
        raise ToolInputError(
            f"Campaign {a.name!r} exists with other settings ({', '.join(conflict)}).",
            hint="Use the same settings to resume or extend it (a larger budget), or give a new name.",
        )
    try:
        rep = ctx.compute(_campaign_worker, recipe.model_dump(), structures, names, ctx.root, label="campaign")
    except ToolError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise ToolInputError(str(e), hint="Check the pool, the settings, or use a new campaign name.") from None
    rounds = [
        {k: h.get(k) for k in ("round", "labels_spent", "best_value", "mae_before", "coverage90_before")}
        for h in rep["rounds"]
    ]
    if not rep["complete"]:
        ctx.notes.append("The campaign stopped before its budget was spent; call again with the same name to resume.")
    return CampaignResult(
        campaign_dir=ctx.workspace.relpath(out),
        objective=a.objective,
        unit=OBJECTIVES[a.objective][0],
        goal=a.goal,
        reference=a.reference,
        acquisition=a.acquisition,
        pool_size=rep["pool_size"],
        budget=a.budget,
        labels_spent=rep["labels_spent"],
        complete=rep["complete"],
        best=rep["best"],
        proposal=rep["proposal"],
        rounds=rounds,
        calibration_scale=round(rep["calibration_scale"], 4),
        report_file=ctx.workspace.relpath(out / "report.md"),
        plot_file=ctx.workspace.relpath(out / "progress.png") if rep.get("plot") else None,
    )
