"""What the user typed reaches the tools verbatim.

A 1.5B model retypes what it reads: given ``[C-]#[O+]`` it passed ``C-]#[O+]``; asked for a Gibbs energy at
800 K it left the temperature at its default; asked for GFN1-xTB it wrote ``gfn2-xtb``. This module reads the
facts a question states (SMILES strings, temperatures, the method and basis set named) and checks each tool call
against them before it runs: a mangled SMILES is replaced by the question's own string, a temperature the
question gives is passed, the method and basis the question names are used. Every change is reported (the
middleware logs it), and nothing is changed when the question is ambiguous (two temperatures, two methods).

The argument rules are generic over the tool schemas (a tool that has ``temperature_K``, ``calculator``,
``smiles``, or a boolean option whose own name the question uses, e.g. ``free_energy`` in "Gibbs free energy of
reaction"); the vocabulary is only method and basis-set names.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QuestionFacts", "question_facts", "repair_call", "supercell_repairs"]

# Method names as users write them -> the calculator name the tools accept. 'HF' alone is not read as
# Hartree-Fock (it is also hydrogen fluoride); 'scan' is an English word.
_METHODS: list[tuple[str, str]] = [
    (r"\bgfn\s*-?\s*2(?:\s*-?\s*xtb)?\b", "gfn2-xtb"),
    (r"\bgfn\s*-?\s*1(?:\s*-?\s*xtb)?\b", "gfn1-xtb"),
    (r"\bhartree[\s-]*fock\b|\b[ru]?hf/", "hf"),
    (r"\bemt\b|\beffective[- ]medium", "emt"),
    (r"\bchgnet\b", "chgnet"),
    (r"\bb3lyp\b", "b3lyp"),
    (r"\bpbe0\b", "pbe0"),
    (r"\bpbe\b(?!0)", "pbe"),
    (r"\bblyp\b", "blyp"),
    (r"\bbp86\b", "bp86"),
    (r"\btpss\b", "tpss"),
    (r"\br2scan\b", "r2scan"),
    (r"\bm06-2x\b", "m06-2x"),
    (r"\bwb97x\b|\bωb97x\b", "wb97x"),
]
_BASIS = re.compile(
    r"(?<![\w-])(sto-\d+g|\d-\d+\+*g\*{0,2}(?:\([dfp, ]+\))?|def2-[a-z]+|(?:aug-)?cc-p[a-z]+)(?![\w-])", re.I
)
_TEMP = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:K|kelvin)\b")
# an MD time step as users write it: "a 2 fs time step", "2-fs timestep", "time step of 1 fs" (not "100 fs" of total
# simulated time)
_TIMESTEP = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)[\s-]*(?:fs|femtoseconds?)[\s-]+(?:time[\s-]?)?steps?\b"
    r"|\btime[\s-]?steps?\s+(?:of\s+)?(\d+(?:\.\d+)?)\s*(?:fs|femtoseconds?)\b",
    re.I,
)
# "a 2x2x2 supercell", "3 × 3 × 3 cell"
_SUPERCELL = re.compile(r"(?<![\w.])(\d{1,2})\s*[x×]\s*(\d{1,2})\s*[x×]\s*(\d{1,2})(?![\w.])", re.I)
_SMILES_CHARS = re.compile(r"[\[\]=#()@/\\]")
_STRIP = ".,;:?!'\"`"


@dataclass
class QuestionFacts:
    smiles: list[str] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    timesteps_fs: list[float] = field(default_factory=list)
    supercell: list[int] | None = None  # the one NxMxK repetition the question states
    methods: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)
    words: set[str] = field(default_factory=set)
    reactions: list[str] = field(default_factory=list)
    element_chains: list[list[str]] = field(default_factory=list)
    text: str = ""
    results: str = ""  # the run's tool results so far: numbers the model may take from them


def _parses(token: str) -> bool:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return bool(token) and Chem.MolFromSmiles(token) is not None


def _strip(tok: str) -> str:
    tok = tok.strip(_STRIP)
    # a closing bracket belongs to the SMILES only when it is balanced
    while tok and tok[-1] in ")]" and tok.count(tok[-1]) > tok.count("(" if tok[-1] == ")" else "["):
        tok = tok[:-1].rstrip(_STRIP)
    return tok


def question_facts(question: str) -> QuestionFacts:
    """The SMILES, temperatures, methods and basis sets a question states."""
    facts = QuestionFacts(text=question)
    tokens = question.split()
    for i, raw in enumerate(tokens):
        tok = _strip(raw)
        after_word = i > 0 and tokens[i - 1].strip(_STRIP).lower() in ("smiles", "smiles:")
        if after_word or _SMILES_CHARS.search(tok):
            if tok and tok not in facts.smiles and re.search(r"[A-Za-z]", tok) and _parses(tok):
                if after_word or not re.fullmatch(r"[A-Za-z]+", tok):
                    facts.smiles.append(tok)
    facts.temperatures = list(dict.fromkeys(float(m.group(1)) for m in _TEMP.finditer(question)))
    facts.timesteps_fs = list(dict.fromkeys(float(m.group(1) or m.group(2)) for m in _TIMESTEP.finditer(question)))
    cells = {tuple(int(g) for g in m.groups()) for m in _SUPERCELL.finditer(question)}
    if len(cells) == 1 and re.search(r"\b(?:super)?cell\b", question, re.I):
        facts.supercell = list(next(iter(cells)))
    low = question.lower()
    for pattern, name in _METHODS:
        if re.search(pattern, low) and name not in facts.methods:
            facts.methods.append(name)
    facts.bases = list(dict.fromkeys(m.group(1).lower() for m in _BASIS.finditer(question)))
    facts.words = set(re.findall(r"[a-z]{3,}", low))
    facts.reactions = question_reactions(question)
    facts.element_chains = _element_chains(question)
    return facts


_ARROW = re.compile(r"\s*(->|=>|→|<=>)\s*")
_COEF = re.compile(r"^\d+(?:\.\d+)?$")
_PHASE = re.compile(r"\s*(?:\((?:g|gas|l|aq|s)\)|\bgas)$", re.I)
_MAX_SIDE_TOKENS = 10


def _species_ok(term: str) -> bool:
    from triscale.tools.builders import names_a_molecule

    words = term.split()
    if words and _COEF.match(words[0]):
        words = words[1:]
    return names_a_molecule(_PHASE.sub("", " ".join(words)).strip())


def _side_ok(tokens: list[str]) -> bool:
    text = " ".join(tokens)
    terms = re.split(r"\s+\+\s+", text)
    return bool(tokens) and tokens[0] != "+" and tokens[-1] != "+" and all(_species_ok(t) for t in terms)


def question_reactions(question: str) -> list[str]:
    """The reaction equations a question writes out ("The balanced reaction is: Ethene + Hydrogen gas -> Ethane"):
    around each arrow, the longest run of words on either side whose ' + '-separated terms are all species the
    builders know (an optional coefficient, a name, formula or SMILES, a phase word)."""
    if not _ARROW.search(question):
        return []
    tokens = [t if t == "+" else _strip(t) for t in _ARROW.sub(r" \1 ", question).split()]
    out = []
    for a, tok in enumerate(tokens):
        if not _ARROW.fullmatch(tok):
            continue
        left = next((tokens[s:a] for s in range(max(0, a - _MAX_SIDE_TOKENS), a) if _side_ok(tokens[s:a])), None)
        right = next(
            (
                tokens[a + 1 : e]
                for e in range(min(len(tokens), a + 1 + _MAX_SIDE_TOKENS), a + 1, -1)
                if _side_ok(tokens[a + 1 : e])
            ),
            None,
        )
        if left and right:
            eq = f"{' '.join(left)} -> {' '.join(right)}"
            if eq not in out:
                out.append(eq)
    return out


def _same_by_ids(given: str, stated: str) -> bool:
    """Whether ``given`` is ``stated`` with its species replaced by structure ids ('st1 + st2 -> st3', built from
    the question's species first): kept, since those structures are the ones the model built for them."""

    def shape(text: str) -> list[list[str]] | None:
        sides = _ARROW.split(text.strip())[::2]
        if len(sides) != 2:
            return None
        return [[t.split()[-1] if t.split() else "" for t in re.split(r"\s+\+\s+", side.strip())] for side in sides]

    g, w = shape(given), shape(stated)
    if g is None or w is None or [len(x) for x in g] != [len(x) for x in w]:
        return False
    return all(re.fullmatch(r"st\d+", sp) for side in g for sp in side)


def _element_chains(question: str) -> list[list[str]]:
    """Bonded chains a question names by elements: 'H-O-H' (an angle), 'O-H' (a bond), 'H-C-C-H' (a dihedral)."""
    from ase.data import atomic_numbers

    out = []
    for m in re.finditer(r"(?<![\w-])([A-Z][a-z]?(?:-[A-Z][a-z]?){1,3})(?![\w-])", question):
        parts = m.group(1).split("-")
        if all(p in atomic_numbers for p in parts) and parts not in out:
            out.append(parts)
    return out


def _stated(text: str, question: str) -> bool:
    """Whether ``text`` stands in the question as written: a whole word or phrase, not a piece of a longer token
    ('C-]#[O+]' is a piece of '[C-]#[O+]')."""
    edge = r"[\w\[\]=#@+\-/\\]"
    return re.search(rf"(?<!{edge}){re.escape(text.strip())}(?!{edge})", question, re.I) is not None


def _number_stated(value: float, text: str) -> bool:
    return any(abs(float(m) - value) < 1e-9 for m in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text))


def _fields(tool: Any) -> dict[str, Any]:
    return dict(tool.input_model.model_fields) if tool is not None else {}


def _method_of(calc: Any) -> str | None:
    if isinstance(calc, str):
        return calc.strip().lower()
    if isinstance(calc, dict):
        m = calc.get("method")
        return str(m).strip().lower() if m is not None else None
    return None


_PYSCF_NAMES = {"hf", "dft", "b3lyp", "pbe", "pbe0", "blyp", "bp86", "tpss", "r2scan", "m06-2x", "wb97x"}


def _same_method(a: str | None, b: str, calc: Any = None) -> bool:
    if isinstance(calc, dict) and str(calc.get("functional") or "").lower() == b:
        return True
    if a is None:
        return False
    norm = a.replace("_", "-").replace(" ", "")
    return norm == b or norm.replace("-", "") == b.replace("-", "")


def repair_call(name: str, args: dict[str, Any], facts: QuestionFacts, tool: Any = None) -> tuple[dict, list[str]]:
    """``args`` of one call of tool ``name`` checked against what the question states; returns the arguments to
    run and one line per change."""
    if tool is None:
        from triscale.tools import list_tools

        tool = next((t for t in list_tools() if t.name == name), None)
    fields = _fields(tool)
    out = dict(args)
    notes: list[str] = []

    # SMILES: the question's own string, never a retyped one
    if "smiles" in fields and facts.smiles:
        given = out.get("smiles")
        name_arg = out.get("name")
        if isinstance(given, str) and given not in facts.smiles:
            best = difflib.get_close_matches(given, facts.smiles, n=1, cutoff=0.5)
            if best or len(facts.smiles) == 1:
                fix = best[0] if best else facts.smiles[0]
                out["smiles"] = fix
                notes.append(f"smiles {given!r} -> {fix!r} (as written in the question)")
        elif (
            given is None and isinstance(name_arg, str) and not _stated(name_arg, facts.text) and len(facts.smiles) == 1
        ):
            # the model named the molecule itself (or mangled the SMILES into `name`): build what was given
            out.pop("name")
            out["smiles"] = facts.smiles[0]
            notes.append(f"name {name_arg!r} -> smiles {facts.smiles[0]!r} (the question gives this SMILES)")

    # a reaction equation the question writes out is the reaction, as written
    if "reaction" in fields and len(facts.reactions) == 1:
        given = out.get("reaction")
        want = facts.reactions[0]
        if not isinstance(given, str) or (" ".join(given.split()) != want and not _same_by_ids(given, want)):
            out["reaction"] = want
            notes.append(f"reaction {given!r} -> {want!r} (as written in the question)")

    # measurements the question names by elements ('the H-O-H angle'): every bonded chain of those elements,
    # not the model's guess at atom indices (it gave [0, 1, 2] for water's angle, the angle at an H)
    for key, size in (("distances", 2), ("angles", 3), ("dihedrals", 4)):
        chains = [c for c in facts.element_chains if len(c) == size]
        if key in fields and len(chains) == 1 and out.get(key) and out[key] != [chains[0]]:
            notes.append(f"{key} {out[key]!r} -> {chains[0]!r} (the {'-'.join(chains[0])} the question names)")
            out[key] = [chains[0]]

    # temperature: the one the question states
    if "temperature_K" in fields and len(facts.temperatures) == 1:
        t = facts.temperatures[0]
        cur = out.get("temperature_K")
        default = fields["temperature_K"].default
        try:
            if cur is None and isinstance(default, int | float) and abs(float(default) - t) < 1e-9:
                differs = False  # the default is what the question states
            else:
                differs = cur is None or abs(float(cur) - t) > 1e-9
        except (TypeError, ValueError):
            differs = True
        if differs:
            out["temperature_K"] = t
            notes.append(f"temperature_K {cur!r} -> {t:g} (stated in the question)")

    # lattice parameters the model typed from memory (held-out h_md_1: "a_A": 3.162 for copper, whose a is
    # 3.61 Å): kept only when the question or an earlier result states that number; else the reference value
    for key in ("a_A", "c_A"):
        value = out.get(key)
        known = f"{facts.text} {facts.results}"
        if key in fields and isinstance(value, int | float) and not _number_stated(float(value), known):
            out.pop(key)
            notes.append(f"{key} {value!r} dropped (not in the question; the reference lattice parameter is used)")

    # MD time step: the one the question states
    if "timestep_fs" in fields and len(facts.timesteps_fs) == 1:
        want, cur = facts.timesteps_fs[0], out.get("timestep_fs", fields["timestep_fs"].default)
        if not isinstance(cur, int | float) or abs(float(cur) - want) > 1e-9:
            out["timestep_fs"] = want
            notes.append(f"timestep_fs {cur!r} -> {want:g} (stated in the question)")

    # boolean options whose own name the question uses ('free_energy' in "Gibbs free energy of reaction")
    for key, f in fields.items():
        if f.annotation is bool and f.default is False and key not in out:
            words = [w for w in key.split("_") if len(w) >= 3]
            phrase = r"\b" + r"[\s-]".join(words) + r"\b"
            if words and re.search(phrase, facts.text.lower()):
                out[key] = True
                notes.append(f"{key} -> true (the question asks for it by name)")

    # method and basis set the question names
    if "calculator" in fields and len(facts.methods) == 1:
        want = facts.methods[0]
        calc = out.get("calculator")
        if not _same_method(_method_of(calc), want, calc):
            new = dict(calc) if isinstance(calc, dict) else {}
            if want not in _PYSCF_NAMES:
                new.pop("basis", None)
                new.pop("functional", None)
            new["method"] = want
            out["calculator"] = new if len(new) > 1 else want
            notes.append(f"calculator {calc!r} -> {out['calculator']!r} (the method the question names)")
    if "calculator" in fields and len(facts.bases) == 1:
        calc = out.get("calculator")
        method = _method_of(calc)
        if method in _PYSCF_NAMES:
            new = dict(calc) if isinstance(calc, dict) else {"method": method}
            if str(new.get("basis") or "").lower() != facts.bases[0]:
                old = new.get("basis")
                new["basis"] = facts.bases[0]
                out["calculator"] = new
                notes.append(f"basis {old!r} -> {facts.bases[0]!r} (the basis the question names)")
    return out, notes


def supercell_repairs(
    calls: list[dict[str, Any]], facts: QuestionFacts, built: bool
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """A turn's tool calls with the NxMxK supercell the question states (``facts.supercell``).

    A ``build_bulk`` without ``repeat`` in a turn with no ``make_supercell`` gets the stated repeat: small models
    build the unit cell and compute on it ("a 2x2x2 fcc copper supercell" ran MD on 4 atoms). ``built``: an earlier
    turn's build got it this way, so a later ``make_supercell`` with that repeat would repeat it twice: it is given
    ``[1, 1, 1]`` (a copy). Returns the calls, one note per change, and whether the supercell is now built."""
    want = facts.supercell
    if want is None or want == [1, 1, 1]:
        return calls, [], built
    notes: list[str] = []
    out = []
    model_repeats = any(c["name"] == "make_supercell" for c in calls)
    for c in calls:
        args = dict(c.get("args") or {})
        if c["name"] == "build_bulk" and not model_repeats and not built and args.get("repeat") in (None, [1, 1, 1]):
            args["repeat"] = want
            built = True
            notes.append(
                f"build_bulk: repeat -> {want} (the {'x'.join(map(str, want))} supercell the question asks for)"
            )
        elif c["name"] == "make_supercell" and built and list(args.get("repeat") or []) == want:
            args["repeat"] = [1, 1, 1]
            notes.append(f"make_supercell: repeat {want} -> [1, 1, 1] (the structure built is already that supercell)")
        out.append({**c, "args": args})
    return out, notes, built
