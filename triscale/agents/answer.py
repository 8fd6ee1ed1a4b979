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
    "answer_fields",
    "format_value",
    "assemble_answer",
    "untraced_numbers",
    "untraced_strings",
    "trace_value",
    "asked_fields",
    "structure_smiles",
]


class ResultItem(BaseModel):
    property: str = Field(description="What was computed, e.g. 'energy', 'bulk_modulus'.")
    value: float | str | list[float] = Field(
        description="The value exactly as a tool returned it (a list for list results such as frequencies)."
    )
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
    ("_e_A", "e·Å"),
    ("_g_per_cm3", "g/cm³"),
    ("_GPa", "GPa"),
    ("_A3", "Å³"),
    ("_cm1", "cm-1"),
    ("_eV", "eV"),
    ("_ps", "ps"),
    ("_fs", "fs"),
    ("_deg", "°"),
    ("_Pa", "Pa"),
    ("_K", "K"),
    ("_A", "Å"),
]

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


def _plan_items(rec: ToolRecord) -> list[ResultItem]:
    """The planner's first pick ("which one should I simulate next?"), then the whole proposed batch, best first,
    when it asked for more than one."""
    by_id = {c["structure_id"]: c for c in rec.result.get("ranking", [])}
    sel = list(rec.result.get("selected", []))
    method = f"{rec.result.get('method', '')} ({rec.result.get('acquisition', '')})"
    calls = [rec.call_id] if rec.call_id else []
    labels = [str(by_id.get(s, {}).get("label", s)) for s in sel]
    items = [ResultItem(property="selected", value=labels[0], method=method, structure_ids=sel[:1], tool_calls=calls)]
    if len(sel) > 1:
        items.append(
            ResultItem(
                property="proposed_batch", value=", ".join(labels), method=method, structure_ids=sel, tool_calls=calls
            )
        )
    return items if sel else []


def _campaign_items(rec: ToolRecord, top: int = 5) -> list[ResultItem]:
    """An active-learning campaign's answer: the best candidates found, ranked, with their reference values, then
    the committee's proposal for the unlabelled ones (prediction ± calibrated spread)."""
    r = rec.result
    prop, unit = split_unit(str(r.get("objective", "value")))
    unit = unit or r.get("unit")
    calls = [rec.call_id] if rec.call_id else []
    best = list(r.get("best") or [])[:top]
    items = [
        ResultItem(
            property="best candidates",
            value=", ".join(str(b.get("name")) for b in best),
            method=f"{r.get('reference', '')} labels, {r.get('labels_spent', '?')} of {r.get('budget', '?')} spent",
            tool_calls=calls,
        )
    ]
    for b in best:
        items.append(
            ResultItem(
                property=f"{prop} of {b.get('name')}",
                value=float(b["value"]),
                unit=unit,
                method=str(r.get("reference", "")),
                tool_calls=calls,
            )
        )
    for p in list(r.get("proposal") or [])[:top]:
        items.append(
            ResultItem(
                property=f"predicted {prop} of {p.get('name')} (not computed)",
                value=float(p["predicted"]),
                unit=unit,
                method=f"committee ({r.get('acquisition', '')})",
                uncertainty=float(p["sigma"]) if p.get("sigma") is not None else None,
                tool_calls=calls,
            )
        )
    return items


def answer_fields(name: str) -> tuple[str, ...] | None:
    """The result fields that answer the usual question of a registered tool (``register(..., answer_fields=)``);
    None for a tool outside the registry or one that declares none."""
    from triscale.tools import list_tools

    tool = next((t for t in list_tools() if t.name == name), None)
    return (tool.answer_fields or None) if tool is not None else None


def _structures_only(name: str) -> bool:
    from triscale.agents.middleware import makes_structures_only

    return makes_structures_only(name)


def _rows(field: str, v: Any) -> list[tuple[str, float | str | list[float], str, str]]:
    """(property, value, unit, std field) rows of one answer field: a number or string is one row; a list of
    numbers one row holding the list; a list of strings one row joining them; a list of measurements (dicts
    such as ``{"atoms": [0, 1], "distance_A": 0.97}``) one row per measurement, from its unit-suffixed number."""
    prop, unit = split_unit(field)
    if v is None or isinstance(v, bool):
        return []
    if isinstance(v, int | float):
        return [(prop, float(v), unit, _STD_FIELDS.get(field, ""))] if math.isfinite(v) else []
    if isinstance(v, str):
        return [(prop, v, unit, "")]
    if not isinstance(v, list) or not v:
        return []
    if all(isinstance(x, str) for x in v):
        return [(prop, ", ".join(v), unit, "")]
    if all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        if not all(math.isfinite(x) for x in v):
            return []
        return [(prop, [float(x) for x in v], unit, "")]
    rows = []
    for x in v:
        if not isinstance(x, dict):
            return []
        key = next(
            (k for k, y in x.items() if isinstance(y, int | float) and not isinstance(y, bool) and split_unit(k)[1]),
            None,
        )
        if key is not None:
            rows.extend(_rows(key, x[key]))
    return rows


# Words of result-field names that say nothing about which quantity was asked.
_GENERIC_WORDS = {
    "energy",
    "final",
    "total",
    "mean",
    "structure",
    "label",
    "method",
    "file",
    "call",
    "max",
    "min",
    "per",
    "atom",
    "atoms",
    "tool",
    "notes",
    "parent",
    "cell",
    "true",
    "of",
    "and",
}


def asked_fields(question: str, result: dict[str, Any], declared: tuple[str, ...]) -> tuple[str, ...]:
    """The declared answer fields plus every other field of ``result`` whose own name the question uses (a
    distinctive word of the field name, compared on its first five letters): 'dipole' adds the dipole vector,
    'frequencies' all modes, 'volume' a supercell's volume. Generated from the result's field names, no
    phrase list."""
    q = question.lower()
    words_in_q = set(re.findall(r"[a-z]{4,}", q))
    extra = []
    for key in result:
        if key in declared or key.endswith("_std_eV") or key in ("call_id", "tool", "structure_id", "notes"):
            continue
        prop, _ = split_unit(key)
        for w in prop.split("_"):
            if len(w) >= 4 and w not in _GENERIC_WORDS and any(x.startswith(w[:5]) for x in words_in_q):
                extra.append(key)
                break
    return tuple(declared) + tuple(extra)


def structure_smiles(atoms: Any, label: str | None = None, charge: int = 0) -> str | None:
    """Canonical SMILES of a stored molecule (:func:`triscale.tools.builders.molecule_smiles`)."""
    from triscale.tools.builders import molecule_smiles

    return molecule_smiles(atoms, label, charge)


def _smiles_items(records: list[ToolRecord], workspace: Any) -> list[ResultItem]:
    items = []
    for rec in records:
        sid = rec.result.get("structure_id")
        if not (_structures_only(rec.name) and isinstance(sid, str) and rec.result.get("n_atoms")):
            continue
        try:
            atoms = workspace.get(sid)
        except Exception:
            continue
        smi = rec.result.get("smiles") or structure_smiles(
            atoms, rec.result.get("label"), rec.result.get("charge_e") or 0
        )
        if smi:
            items.append(
                ResultItem(
                    property="smiles",
                    value=smi,
                    method="RDKit canonical SMILES of the built structure",
                    structure_ids=[sid],
                    tool_calls=[rec.call_id] if rec.call_id else [],
                )
            )
    return items


def results_from_records(records: list[ToolRecord], question: str = "", workspace: Any = None) -> list[ResultItem]:
    """The values that answer each successful tool call (the tool's declared ``answer_fields``, plus the
    fields the question names, see :func:`asked_fields`), with unit, method, uncertainty and provenance ids.
    A question that asks for a SMILES gets the canonical SMILES of each built molecule (needs ``workspace``)."""
    items: list[ResultItem] = []
    computed = [r for r in records if not _structures_only(r.name)]
    use = computed or records  # a pure name->structure question answers with the built structure
    if workspace is not None and re.search(r"\bsmiles\b", question, re.I):
        items.extend(_smiles_items(records, workspace))
    for rec in use:
        if rec.name == "plan_experiments":
            items.extend(_plan_items(rec))
            continue
        if rec.name == "run_campaign":
            items.extend(_campaign_items(rec))
            continue
        fields = answer_fields(rec.name)
        if fields is None:  # unknown tool: every scalar with a unit suffix
            fields = tuple(k for k, v in rec.result.items() if isinstance(v, int | float) and split_unit(k)[1])
        if question:  # a built molecule's SMILES is one item of its own (_smiles_items)
            fields = tuple(f for f in asked_fields(question, rec.result, fields) if f != "smiles")
        method = str(rec.result.get("method") or "")
        for f in fields:
            for prop, value, unit, std_field in _rows(f, rec.result.get(f)):
                std = rec.result.get(std_field) if std_field else None
                items.append(
                    ResultItem(
                        property=prop,
                        value=value,
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


_FORMULA_RE = re.compile(r"(?<![\w\[])((?:[A-Z][a-z]?\d*){2,})(?![\w\]])")
_AFTER_SMILES_RE = re.compile(
    r"\bSMILES\b(?:\s+(?:string|notation|code))?(?:\s+(?:is|are|of\s+\w+\s+is))?\s*[:=]?\s*`?([^\s`]+)", re.I
)
_SMILES_TOKEN_RE = re.compile(r"(?<!\S)([A-Za-z0-9@+\-\[\]()=#$/\\%.]*[\[\]()=#][A-Za-z0-9@+\-\[\]()=#$/\\%.]*)")


_ELEMENTS = set(__import__("ase.data", fromlist=["chemical_symbols"]).chemical_symbols[1:])


def _strings_in(obj: Any, out: list[str]) -> list[str]:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _strings_in(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _strings_in(v, out)
    return out


def _composition(formula: str) -> dict[str, int] | None:
    parts = re.findall(r"([A-Z][a-z]?)(\d*)", formula)
    if "".join(e + n for e, n in parts) != formula:
        return None
    comp: dict[str, int] = {}
    for e, n in parts:
        comp[e] = comp.get(e, 0) + (int(n) if n else 1)
    return comp


def _canon(smiles: str) -> str | None:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles.rstrip(".,;:)"))
    return Chem.MolToSmiles(mol) if mol is not None else None


def untraced_strings(
    text: str, records: list[ToolRecord], allowed_text: str = "", extra: list[str] | None = None
) -> list[str]:
    """Formulas and SMILES written in ``text`` that no tool result, no derived result (``extra``, e.g. the
    SMILES of a built structure) and not ``allowed_text`` (the question) contains. Formulas compare by
    composition (H2O = OH2), SMILES after RDKit canonicalisation."""
    known = _strings_in([r.result for r in records], []) + list(extra or []) + allowed_text.split()
    comps = [c for k in known for f in _FORMULA_RE.findall(k) if (c := _composition(f))]
    canon = {c for k in known if (c := _canon(k.strip(".,;:?!'\"`"))) is not None}
    bad = []
    tokens = [m.group(1) for m in _SMILES_TOKEN_RE.finditer(text)]
    tokens += [m.group(1) for m in _AFTER_SMILES_RE.finditer(text)]  # 'its SMILES is CCO': plain ones too
    for tok in tokens:
        tok = tok.strip(".,;:`'\"")
        if len(tok) < 2 or not re.search(r"[A-Za-z]", tok):
            continue
        c = _canon(tok)
        if c is not None and c not in canon and tok not in bad:
            bad.append(tok)
    for m in _FORMULA_RE.finditer(re.sub(r"\bst\d+\b|\bc\d{6,}\w*", " ", text)):
        f = m.group(1)
        comp = _composition(f)
        if comp is None or not any(ch.isdigit() for ch in f) or not set(comp) <= _ELEMENTS:
            continue  # only element formulas with counts (H2O, C8H10N4O2): not GFN2, OK or HOMO
        if comp not in comps and f not in bad:
            bad.append(f)
    return bad


def format_value(v: float | str | list[float], max_listed: int = 12) -> str:
    """A result value as text: numbers to 6 significant figures, long lists shortened."""
    if isinstance(v, list):
        shown = ", ".join(f"{x:.6g}" for x in v[:max_listed])
        return f"[{shown}{f', ... ({len(v)} values)' if len(v) > max_listed else ''}]"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _fmt(item: ResultItem) -> str:
    text = format_value(item.value)
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
    workspace: Any = None,
) -> FinalAnswer:
    """The final answer of a run.

    ``results`` come from the tool results; a backend's structured answer contributes only values that trace to
    a tool result (the traced value is used, with its call id). The prose is the model's if it wrote one (numbers
    that trace to nothing are flagged), else a summary written from the results.
    """
    notes = list(notes or [])
    items = results_from_records(records, question, workspace)
    derived = [it for it in items if it.property == "smiles"]
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
            items = derived + model_items
        model_text = model_text or sa.answer
    text = (model_text or "").strip()
    if text:
        bad = untraced_numbers(text, records, allowed_text=question)
        if bad:
            notes.append(
                "These numbers in the text come from no tool result and must not be trusted: " + ", ".join(bad)
            )
            text += "\n\n" + summary_text(items, records)
        bad_s = untraced_strings(
            text, records, allowed_text=question, extra=[str(it.value) for it in items if isinstance(it.value, str)]
        )
        if bad_s:
            notes.append(
                "These formulas/SMILES in the text come from no tool result and must not be trusted: "
                + ", ".join(bad_s)
            )
            if summary_text(items, records) not in text:
                text += "\n\n" + summary_text(items, records)
    else:
        text = summary_text(items, records)
    if notes:
        text += "\n\nNote: " + " ".join(notes)
    return FinalAnswer(answer=text, results=items)
