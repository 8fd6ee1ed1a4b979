"""Per-question tool selection for small local models.

A 1.5B model reads every tool schema in its prompt on every turn: eleven compact schemas are ~2,800 tokens, i.e.
~35 s of prompt evaluation on two CPU cores before the first token, and more tools to confuse. This picks the few
tools a question needs from keywords (a transparent rule set, no second model); when nothing matches, the caller
offers the whole compact list. The tool node can still run every registered tool: only the schemas shown to the
model shrink.

The keywords are each tool's own (``register(..., keywords=...)`` in its module); this module adds only what is
about questions rather than tools: crystal words offer the crystal builder, a tool that takes a structure is
offered with the molecule builder, and a plain "energy of X" calls for a single point.
"""

from __future__ import annotations

import re

from triscale.tools import list_tools

__all__ = ["select_tools", "rules"]

CRYSTAL_BUILDER = "build_bulk"
MOLECULE_BUILDER = "build_molecule"
PLAIN_ENERGY = "single_point"  # a plain "energy of X" (not zero-point, free, reaction ... energy)

# Words that mean a crystal (then the crystal builder is offered too).
_CRYSTAL = re.compile(
    r"\b(fcc|bcc|hcp|diamond|rocksalt|zincblende|wurtzite|crystal|bulk|lattice|supercell|unit cell|conventional "
    r"cell|primitive cell|solid|metal|copper|alumin(i)?um|silicon|iron|gold|silver|nickel|platinum|palladium|"
    r"tungsten|titanium|magnesium|sodium chloride|rock salt)\b"
)
_SYMBOL = re.compile(r"\b(Cu|Al|Si|Fe|Au|Ag|Ni|Pt|Pd|W|Ti|Mg|Na|Ge|Mo|Cr|Zn|Pb|NaCl|MgO|GaAs|LiF|KCl)\b")
_ENERGY = re.compile(r"\benerg(y|ies)\b|\bpressure\b")


def rules() -> list[tuple[str, tuple[str, ...]]]:
    """(regex on the lower-cased question, the tool it calls for), from every registered tool's keywords."""
    return [(pattern, (t.name,)) for t in list_tools() for pattern in t.keywords]


def select_tools(question: str, available: list[str]) -> list[str]:
    """The tools (a subset of ``available``, in its order) that ``question`` calls for; ``[]`` when no rule
    matches (the caller then offers everything)."""
    q = question.lower()
    tools = {t.name: t for t in list_tools()}
    want: set[str] = set()
    for pattern, names in rules():
        if re.search(pattern, q):
            want.update(names)
    builders = {n for n, t in tools.items() if t.makes_structures_only}
    if not want - builders and _ENERGY.search(q):
        want.add(PLAIN_ENERGY)
    crystal = bool(_CRYSTAL.search(q) or _SYMBOL.search(question))
    if not want:
        return []
    needs_structure = any(
        n in tools and n not in builders and "structure_id" in tools[n].input_model.model_fields for n in want
    )
    if crystal:
        want.add(CRYSTAL_BUILDER)
    elif needs_structure:
        want.add(MOLECULE_BUILDER)
    return [name for name in available if name in want]
