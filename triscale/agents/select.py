"""Per-question tool selection for small local models.

A 1.5B model reads every tool schema in its prompt on every turn: eleven compact schemas are ~2,800 tokens, i.e.
~35 s of prompt evaluation on two CPU cores before the first token, and more tools to confuse. This picks the few
tools a question needs from keywords (a transparent rule set, no second model); when nothing matches, the caller
offers the whole compact list. The tool node can still run every registered tool: only the schemas shown to the
model shrink.
"""

from __future__ import annotations

import re

__all__ = ["select_tools", "RULES"]

# (regex on the lower-cased question, tools it calls for)
RULES: list[tuple[str, tuple[str, ...]]] = [
    (r"\b(build|formula|how many atoms|number of atoms|structure of|smiles)\b", ("build_molecule",)),
    (r"\bsingle[- ]point\b|\bdipole|\bcharges?\b|\bforces?\b|\bstress\b", ("single_point",)),
    (r"\boptimi[sz]|\brelax|\bminimi[sz]|\bgeometry\b|\bequilibrium structure", ("optimize_geometry",)),
    (r"\bvibrat|\bfrequenc|\bzero[- ]point|\bzpe\b|\bir spectrum|\bnormal modes?\b", ("vibrational_analysis",)),
    (r"\bgibbs|\benthalpy|\bentropy|\bthermochem|\bfree energy|\bheat capacity", ("thermochemistry",)),
    (
        r"\blattice (constant|parameter)|\bequation of state|\beos\b|\bbulk modulus|\bequilibrium volume",
        ("equation_of_state", "build_bulk"),
    ),
    (r"\breaction\b|->|→|\bcombustion\b|\bformation energy|\batomi[sz]ation energy", ("reaction_energy",)),
    (
        r"\bmolecular dynamics\b|\bmd\b|\bnvt\b|\bnve\b|\bnpt\b|\btrajectory|\bsimulate .* at \d+ ?k\b",
        ("molecular_dynamics",),
    ),
    (r"\bhomo\b|\blumo\b|\bgap\b|\borbital", ("orbital_energies",)),
    (r"\bpredict|\bfoundation model|\buncertaint|\btriscale\b|\bcommittee", ("predict_properties",)),
    (r"\bplan\b|\brank|\bwhich .* next\b|\bcandidates?\b|\bactive learning", ("plan_experiments",)),
]

# Words that mean a crystal (then ``build_bulk`` is offered too).
_CRYSTAL = re.compile(
    r"\b(fcc|bcc|hcp|diamond|rocksalt|zincblende|wurtzite|crystal|bulk|lattice|supercell|unit cell|conventional "
    r"cell|primitive cell|solid|metal|copper|alumin(i)?um|silicon|iron|gold|silver|nickel|platinum|palladium|"
    r"tungsten|titanium|magnesium|sodium chloride|rock salt)\b"
)
_SYMBOL = re.compile(r"\b(Cu|Al|Si|Fe|Au|Ag|Ni|Pt|Pd|W|Ti|Mg|Na|Ge|Mo|Cr|Zn|Pb|NaCl|MgO|GaAs|LiF|KCl)\b")


def select_tools(question: str, available: list[str]) -> list[str]:
    """The tools (a subset of ``available``, in its order) that ``question`` calls for; ``[]`` when no rule
    matches (the caller then offers everything)."""
    q = question.lower()
    want: set[str] = set()
    for pattern, tools in RULES:
        if re.search(pattern, q):
            want.update(tools)
    if not want - {"build_molecule"} and re.search(r"\benerg(y|ies)\b|\bpressure\b", q):
        want.add("single_point")  # a plain "energy of X" (not zero-point, free, reaction ... energy)
    crystal = bool(_CRYSTAL.search(q) or _SYMBOL.search(question))
    if not want:
        return []
    if crystal:
        want.add("build_bulk")
    elif want - {"reaction_energy", "plan_experiments"}:
        want.add("build_molecule")
    return [name for name in available if name in want]
