"""Structured final answers, assembled from the tool results themselves.

The agent's answer is ``{"answer": str, "results": [ResultItem, ...]}``. Every ``value`` in ``results`` is
copied from a tool result (never from model text), so it traces to a registry call id (``tool_calls``) in
the workspace's ``calls.jsonl`` and the run's provenance log. When a backend gives a structured answer of its
own (``response_format``), each of its numbers is checked against the tool results and dropped if it does not
trace; numbers in the prose that trace to no tool result are flagged in the answer.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "ResultItem",
    "FinalAnswer",
    "ModelAnswer",
    "ToolRecord",
    "results_from_records",
    "assemble_answer",
    "untraced_numbers",
    "trace_value",
]


class ResultItem(BaseModel):
    property: str = Field(description="What was computed, e.g. 'energy', 'bulk_modulus'.")
    value: float | str = Field(description="The value exactly as a tool returned it.")
    unit: str = Field("", description="Unit of value (eV, Å, GPa, K, cm-1, debye, ...).")
    method: str = Field("", description="Method / level of theory, e.g. 'gfn2-xtb', 'dft/b3lyp/def2-svp'.")
    uncertainty: float | None = Field(None, description="Committee standard deviation, same unit, if any.")
    structure_ids: list[str] = Field(default_factory=list)
    tool_calls: list[str] = Field(default_factory=list, description="Registry call ids (calls.jsonl).")


class FinalAnswer(BaseModel):
    answer: str
    results: list[ResultItem] = Field(default_factory=list)


class _ModelResult(BaseModel):
    property: str
    value: float
    unit: str = ""
    method: str = ""
    uncertainty: float | None = None
    structure_ids: list[str] = Field(default_factory=list)


class ModelAnswer(BaseModel):
    """Final answer: a short prose answer and each computed value copied exactly from a tool result."""

    answer: str = Field(description="Short answer in prose with values, units and method.")
    results: list[_ModelResult] = Field(default_factory=list, description="Values copied from tool results.")


class ToolRecord(BaseModel):
    """One successful tool call of a run: what the answer is assembled from."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    lc_id: str = ""

    @property
    def call_id(self) -> str:
        return str(self.result.get("call_id", ""))


# Field-name suffix -> unit. Longest suffixes first.
_UNIT_SUFFIXES: list[tuple[str, str]] = [
    ("_kJ_per_mol", "kJ/mol"),
    ("_eV_per_atom_per_ps", "eV/atom/ps"),
    ("_eV_per_A3", "eV/Å³"),
    ("_eV_per_A", "eV/Å"),
    ("_eV_per_K", "eV/K"),
    ("_per_atom_eV", "eV/atom"),
    ("_debye", "debye"),
    ("_GPa", "GPa"),
    ("_A3", "Å³"),
    ("_cm1", "cm-1"),
    ("_eV", "eV"),
    ("_ps", "ps"),
    ("_fs", "fs"),
    ("_Pa", "Pa"),
    ("_K", "K"),
    ("_A", "Å"),
]

# The results that answer the usual question of each tool (others stay in the provenance log).
PRIMARY_FIELDS: dict[str, list[str]] = {
    "single_point": ["energy_eV", "dipole_magnitude_debye", "pressure_GPa"],
    "predict_properties": ["energy_eV", "energy_per_atom_eV", "max_force_eV_per_A", "gap_eV"],
    "optimize_geometry": ["energy_final_eV", "max_force_eV_per_A"],
    "molecular_dynamics": ["temperature_mean_K", "potential_energy_final_eV", "energy_drift_eV_per_atom_per_ps"],
    "vibrational_analysis": ["zero_point_energy_eV", "n_imaginary"],
    "thermochemistry": ["gibbs_free_energy_eV", "enthalpy_eV", "entropy_eV_per_K", "zero_point_energy_eV"],
    "equation_of_state": ["lattice_constant_A", "bulk_modulus_GPa", "equilibrium_volume_A3"],
    "reaction_energy": ["reaction_energy_eV", "reaction_energy_kJ_per_mol", "reaction_gibbs_energy_eV"],
    "orbital_energies": ["homo_eV", "lumo_eV", "gap_eV"],
    "build_molecule": ["formula", "n_atoms"],
    "build_bulk": ["formula", "n_atoms"],
}
_STD_FIELDS = {"energy_eV": "energy_std_eV", "max_force_eV_per_A": "max_force_std_eV_per_A", "gap_eV": "gap_std_eV"}


def split_unit(field: str) -> tuple[str, str]:
    """``'bulk_modulus_GPa'`` -> ``('bulk_modulus', 'GPa')``; fields without a unit suffix keep their name."""
    for suffix, unit in _UNIT_SUFFIXES:
        if field.endswith(suffix) and len(field) > len(suffix):
            return field[: -len(suffix)], unit
    return field, ""


def _structure_ids(rec: ToolRecord) -> list[str]:
    ids = []
    for key in ("structure_id", "parent_id"):
        v = rec.result.get(key) or (rec.args.get(key) if key == "structure_id" else None)
        if isinstance(v, str) and v and v not in ids:
            ids.append(v)
    return ids


def _plan_item(rec: ToolRecord) -> ResultItem:
    by_id = {c["structure_id"]: c for c in rec.result.get("ranking", [])}
    sel = rec.result.get("selected", [])
    return ResultItem(
        property="selected",
        value=", ".join(str(by_id.get(s, {}).get("label", s)) for s in sel),
        method=f"{rec.result.get('method', '')} ({rec.result.get('acquisition', '')})",
        structure_ids=list(sel),
        tool_calls=[rec.call_id] if rec.call_id else [],
    )


def results_from_records(records: list[ToolRecord]) -> list[ResultItem]:
    """The primary values of each successful tool call, with unit, method, uncertainty and provenance ids."""
    items: list[ResultItem] = []
    computed = [r for r in records if r.name not in ("build_molecule", "build_bulk")]
    use = computed or records  # a pure name->structure question answers with the built structure
    for rec in use:
        if rec.name == "plan_experiments":
            items.append(_plan_item(rec))
            continue
        fields = PRIMARY_FIELDS.get(rec.name)
        if fields is None:  # unknown tool: every scalar with a unit suffix
            fields = [k for k, v in rec.result.items() if isinstance(v, int | float) and split_unit(k)[1]]
        method = str(rec.result.get("method") or "")
        for f in fields:
            v = rec.result.get(f)
            if v is None or isinstance(v, bool):
                continue
            if isinstance(v, list):
                if not v or not all(isinstance(x, str) for x in v):
                    continue
                v = ", ".join(v)
            if isinstance(v, float) and not math.isfinite(v):
                continue
            prop, unit = split_unit(f)
            std = rec.result.get(_STD_FIELDS.get(f, ""))
            items.append(
                ResultItem(
                    property=prop,
                    value=v if isinstance(v, str) else float(v),
                    unit=unit,
                    method=method,
                    uncertainty=None if std is None else float(std),
                    structure_ids=_structure_ids(rec),
                    tool_calls=[rec.call_id] if rec.call_id else [],
                )
            )
    return items


def _numbers_in(obj: Any, out: list[float]) -> list[float]:
    if isinstance(obj, bool):
        return out
    if isinstance(obj, int | float):
        if math.isfinite(obj):
            out.append(float(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _numbers_in(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _numbers_in(v, out)
    return out


def _matches(value: float, x: float, digits: int | None) -> bool:
    if value == x:
        return True
    tol = max(abs(x) * 1e-3, 1e-9)  # rounding to 3 significant figures and better
    if digits is not None:
        tol = max(tol, 0.5 * 10.0 ** (-digits) + 1e-12)  # the number as written, rounded
    return abs(value - x) <= tol


def trace_value(value: float, records: list[ToolRecord], digits: int | None = None) -> list[str]:
    """Call ids of the tool results that contain ``value`` (to the precision it was written with)."""
    hits = []
    for rec in records:
        if any(_matches(value, x, digits) for x in _numbers_in(rec.result, [])):
            hits.append(rec.call_id or rec.name)
    return hits


_NUM_RE = re.compile(r"(?<![\w.])[-+−]?\d+(?:\.(\d+))?(?:[eE][-+]?\d+)?")


def untraced_numbers(text: str, records: list[ToolRecord], allowed_text: str = "") -> list[str]:
    """Numbers written in ``text`` that no tool result (nor ``allowed_text``, e.g. the question) contains.

    Small integers (counts, list markers) and structure ids are not checked."""
    allowed = [float(m.group(0).replace("−", "-")) for m in _NUM_RE.finditer(allowed_text)]
    bad = []
    cleaned = re.sub(r"\bst\d+\b|\bc\d{6,}\w*|\b[A-Z][a-z]?\d+\b", " ", text)  # ids and formulas like H2O
    for m in _NUM_RE.finditer(cleaned):
        s = m.group(0).replace("−", "-")
        v = float(s)
        if m.group(1) is None and abs(v) < 100:
            continue  # small integers: counts, steps, list markers
        digits = len(m.group(1)) if m.group(1) else 0
        if any(_matches(v, a, digits) for a in allowed):
            continue
        if not trace_value(v, records, digits):
            bad.append(s)
    return bad


def _fmt(item: ResultItem) -> str:
    v = item.value
    text = f"{v:.6g}" if isinstance(v, float) else str(v)
    if item.uncertainty is not None:
        text += f" ± {item.uncertainty:.2g}"
    return f"{item.property.replace('_', ' ')} = {text}{(' ' + item.unit) if item.unit else ''}"


def summary_text(items: list[ResultItem], records: list[ToolRecord]) -> str:
    """A plain answer written from the results when the model gave none."""
    if not items:
        if not records:
            return "No tool produced a result, so there is no computed answer."
        return "The tools ran but returned no numeric result: " + ", ".join(r.name for r in records) + "."
    lines = []
    for it in items:
        where = f" for {', '.join(it.structure_ids)}" if it.structure_ids else ""
        how = f" ({it.method})" if it.method else ""
        lines.append(f"- {_fmt(it)}{where}{how}")
    return "Computed results:\n" + "\n".join(lines)


def assemble_answer(
    records: list[ToolRecord],
    model_text: str = "",
    structured: ModelAnswer | dict[str, Any] | None = None,
    question: str = "",
    notes: list[str] | None = None,
) -> FinalAnswer:
    """The final answer of a run.

    ``results`` come from the tool results; a backend's structured answer contributes only values that trace to
    a tool result (the traced value is used, with its call id). The prose is the model's if it wrote one (numbers
    that trace to nothing are flagged), else a summary written from the results.
    """
    notes = list(notes or [])
    items = results_from_records(records)
    if structured is not None:
        sa = structured if isinstance(structured, ModelAnswer) else ModelAnswer.model_validate(structured)
        model_items = []
        for r in sa.results:
            ids = trace_value(r.value, records)
            if not ids:
                notes.append(f"Dropped {r.property} = {r.value}: no tool result contains this value.")
                continue
            model_items.append(
                ResultItem(
                    property=r.property,
                    value=float(r.value),
                    unit=r.unit,
                    method=r.method,
                    uncertainty=r.uncertainty if r.uncertainty is None or trace_value(r.uncertainty, records) else None,
                    structure_ids=r.structure_ids,
                    tool_calls=ids,
                )
            )
        if model_items:
            items = model_items
        model_text = model_text or sa.answer
    text = (model_text or "").strip()
    if text:
        bad = untraced_numbers(text, records, allowed_text=question)
        if bad:
            notes.append(
                "These numbers in the text come from no tool result and must not be trusted: " + ", ".join(bad)
            )
            text += "\n\n" + summary_text(items, records)
    else:
        text = summary_text(items, records)
    if notes:
        text += "\n\nNote: " + " ".join(notes)
    return FinalAnswer(answer=text, results=items)
