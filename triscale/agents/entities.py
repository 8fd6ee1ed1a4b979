"""Multi-entity questions: "which of A, B and C has the largest X" computes every entity.

A small model computes the first entity and answers. Here the entities a question lists are read (a
coordination list ``A, B and C`` / ``A or B`` / ``A vs B`` whose items the builders accept: molecule names, g2
formulas, SMILES, element names or symbols), the chain of calls the model made for one of them (its build and
every call that used the built structure) is found in the run's records, and the same chain is run for each
entity the model left out, with only the entity changed. The answer then holds the value for every entity and a
line that ranks them. Nothing is guessed: an entity whose chain fails is reported as failed.
"""

from __future__ import annotations

import re
from typing import Any

from triscale.tools.builders import element_symbol, names_a_molecule

__all__ = ["question_entities", "fan_out", "comparison_line"]

_SEP = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or|vs\.?|versus)\s+", re.I)
_BUILDERS = ("build_molecule", "build_bulk")


def _is_molecule(text: str) -> bool:
    return text.lower() not in ("i", "a", "the", "which", "of", "one") and names_a_molecule(text)


def _entity(words: list[str], side: str) -> str | None:
    """The longest run of up to three words at ``side`` ('end', 'start' or 'all') that names a buildable thing."""
    words = [w.strip("?.!;:'\"()") for w in words]
    words = [w for w in words if w]
    for n in (3, 2, 1):
        if len(words) < n:
            continue
        spans = {"end": [words[-n:]], "start": [words[:n]], "all": [words]}[side] if side != "all" else [words]
        for span in spans:
            text = " ".join(span)
            if element_symbol(text) or _is_molecule(text):
                return text
        if side == "all":
            break
    return None


def question_entities(question: str) -> list[str]:
    """The entities of the first coordination list in ``question`` that names two or more buildable things."""
    for clause in re.split(r"[?;:]|\.(?:\s|$)", question):
        parts = _SEP.split(clause.strip())
        if len(parts) < 2:
            continue
        found = []
        for i, part in enumerate(parts):
            words = part.split()
            side = "end" if i == 0 else "start" if i == len(parts) - 1 else "all"
            e = _entity(words, side) or (_entity(words, "start") if side == "all" else None)
            if e is None and i > 0 and len(found) >= 2:
                break  # the list ended ("A, B and C, which ..."): keep what it named
            if e is None and i == len(parts) - 1 and len(found) >= 1:
                e = None if side == "all" else _entity(words, "start")
            if e is None:
                found = [] if i == 0 or len(found) < 2 else found
                if i == 0:
                    continue
                break
            found.append(e)
        if len(found) >= 2 and len({f.lower() for f in found}) == len(found):
            return found
    return []


def _names(text: Any, entity: str) -> bool:
    """Whether ``text`` (a build argument, or a name written where a structure id goes) names ``entity``: the same
    words, or the same element ('Cu' and 'copper')."""
    if not isinstance(text, str) or not text.strip():
        return False
    if text.strip().lower() == entity.lower():
        return True
    sym = element_symbol(text)
    return sym is not None and sym == element_symbol(entity)


def _same(entity: str, build_args: dict[str, Any]) -> bool:
    return any(_names(build_args.get(key), entity) for key in ("name", "smiles"))


def _chain(records: list[Any], build: Any) -> list[Any]:
    """The build record and every later record that used (transitively) the structure it made."""
    ids = {build.result.get("structure_id")}
    out = [build]
    for rec in records[records.index(build) + 1 :]:
        if rec.name in _BUILDERS:
            continue
        if rec.args.get("structure_id") in ids:
            out.append(rec)
            sid = rec.result.get("structure_id")
            if sid:
                ids.add(sid)
    return out


def fan_out(question: str, records: list[Any], call: Any) -> tuple[list[Any], list[str]]:
    """Run, for every entity of ``question`` that no build record covers, the chain the model ran for a covered
    one. ``call(name, args) -> (result dict | None, error | None)``. Returns the new records and notes."""
    from triscale.agents.answer import ToolRecord

    entities = question_entities(question)
    builds = [r for r in records if r.name in _BUILDERS]
    if len(entities) < 2:
        return [], []
    if not builds:  # the model named the entity where a structure id goes (the tools build it): same calls
        return _fan_out_by_name(entities, records, call)
    covered = {e: next((b for b in builds if _same(e, b.args)), None) for e in entities}
    template = next((b for b in covered.values() if b is not None), None)
    missing = [e for e, b in covered.items() if b is None]
    if template is None or not missing:
        return [], []
    chain = _chain(records, template)
    if len(chain) < 2 and not any(r.name not in _BUILDERS for r in records):
        chain = [template]
    new: list[ToolRecord] = []
    notes = []
    for e in missing:
        args = {k: v for k, v in template.args.items() if k not in ("name", "smiles", "label")}
        if template.name == "build_bulk":
            args["name"] = element_symbol(e) or e
        elif _is_smiles_only(e):
            args["smiles"] = e
        else:
            args["name"] = e
        result, err = call(template.name, args)
        if result is None:
            notes.append(f"{e}: {template.name} failed ({err}).")
            continue
        new.append(ToolRecord(name=template.name, args=args, result=result))
        id_map = {template.result.get("structure_id"): result.get("structure_id")}
        for rec in chain[1:]:
            a = dict(rec.args)
            a["structure_id"] = id_map.get(a.get("structure_id"), a.get("structure_id"))
            res, err = call(rec.name, a)
            if res is None:
                notes.append(f"{e}: {rec.name} failed ({err}).")
                break
            new.append(ToolRecord(name=rec.name, args=a, result=res))
            if res.get("structure_id"):
                id_map[rec.result.get("structure_id")] = res["structure_id"]
    if new:
        notes.insert(0, f"The question names {', '.join(entities)}; the same calls were run for {', '.join(missing)}.")
    return new, notes


def _is_smiles_only(text: str) -> bool:
    return bool(re.search(r"[\[\]=#()]", text))


def comparison_line(question: str, items: list[Any], records: list[Any]) -> str | None:
    """ "Ranked by X: A (v) > B (v) > C (v)" for a question over several entities, from the result items: the
    property that has one value per entity (the first such of the answer's properties)."""
    entities = question_entities(question)
    if len(entities) < 2:
        return None
    label_of: dict[str, str] = {}
    for rec in records:
        if rec.name in _BUILDERS:
            e = next((x for x in entities if _same(x, rec.args)), None)
            if e and rec.result.get("structure_id"):
                label_of[rec.result["structure_id"]] = e
    for rec in records:  # an entity named where a structure id goes
        e = next((x for x in entities if _names(rec.args.get("structure_id"), x)), None)
        if e and rec.result.get("structure_id"):
            label_of.setdefault(rec.result["structure_id"], e)
    # structures made from a built one (optimised, relaxed) keep the entity of their parent
    for rec in records:
        sid, parent = rec.result.get("structure_id"), rec.args.get("structure_id")
        if sid and parent in label_of and sid not in label_of:
            label_of[sid] = label_of[parent]
    q_words = set(re.findall(r"[a-z]{3,}", question.lower()))

    def asked(prop: str) -> int:  # how many of the property's own words the question uses
        return sum(any(w.startswith(p[:5]) for w in q_words) for p in prop.split("_") if len(p) >= 3)

    props = list(dict.fromkeys(it.property for it in items))
    for prop in sorted(props, key=lambda p: -asked(p)):
        vals = {}
        for it in items:
            if it.property != prop or not isinstance(it.value, float):
                continue
            ent = next((label_of[s] for s in it.structure_ids if s in label_of), None)
            if ent and ent not in vals:
                vals[ent] = (it.value, it.unit)
        if len(vals) == len(entities):
            ranked = sorted(vals.items(), key=lambda kv: kv[1][0], reverse=True)
            body = " > ".join(f"{e} ({v:.6g}{(' ' + u) if u else ''})" for e, (v, u) in ranked)
            return f"{prop.replace('_', ' ')}, largest to smallest: {body}."
    return None


def _fan_out_by_name(entities: list[str], records: list[Any], call: Any) -> tuple[list[Any], list[str]]:
    from triscale.agents.answer import ToolRecord

    named = {e: [r for r in records if _names(r.args.get("structure_id"), e)] for e in entities}
    template_entity = next((e for e, recs in named.items() if recs), None)
    missing = [e for e, recs in named.items() if not recs]
    if template_entity is None or not missing:
        return [], []
    new, notes = [], []
    for e in missing:
        for rec in named[template_entity]:
            # written as the model wrote the one it did: a symbol for a symbol ('Cu' -> 'Al', not 'aluminium')
            as_symbol = element_symbol(str(rec.args.get("structure_id"))) == rec.args.get("structure_id")
            args = {**rec.args, "structure_id": (element_symbol(e) or e) if as_symbol else e}
            res, err = call(rec.name, args)
            if res is None:
                notes.append(f"{e}: {rec.name} failed ({err}).")
                break
            new.append(ToolRecord(name=rec.name, args=args, result=res))
    if new:
        notes.insert(0, f"The question names {', '.join(entities)}; the same calls were run for {', '.join(missing)}.")
    return new, notes
