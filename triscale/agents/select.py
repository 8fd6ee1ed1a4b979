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

__all__ = ["select_tools", "rules", "tool_menu", "route_schema", "model_route", "with_builders"]

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


# --------------------------------------------------------------------------- routing by the model

ROUTE_TOOL = "choose_tools"


def _first_sentence(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    cut = re.split(r"(?<=[.;])\s", one, maxsplit=1)[0]
    cut = cut.rstrip(";")
    return cut if len(cut) <= limit else cut[: limit - 1].rstrip() + "…"


def tool_menu(available: list[str]) -> str:
    """One line per tool, generated from the registry: ``name: first sentence of its description``."""
    tools = {t.name: t for t in list_tools()}
    return "\n".join(f"- {n}: {_first_sentence(tools[n].description)}" for n in available if n in tools)


def route_schema(available: list[str]) -> dict:
    """The routing step as a tool whose only argument is a list of tool names (an enum): under a grammar the
    model can write nothing else."""
    return {
        "type": "function",
        "function": {
            "name": ROUTE_TOOL,
            "description": "Choose the tools needed to answer the question (computations, not only builders).",
            "parameters": {
                "type": "object",
                "properties": {
                    "tools": {
                        "type": "array",
                        "items": {"type": "string", "enum": list(available)},
                        "minItems": 1,
                        "maxItems": 3,
                    }
                },
                "required": ["tools"],
            },
        },
    }


def with_builders(question: str, chosen: set[str], available: list[str]) -> list[str]:
    """``chosen`` plus the builder its tools need (the crystal builder for crystal words, else the molecule
    builder), in ``available``'s order."""
    tools = {t.name: t for t in list_tools()}
    builders = {n for n, t in tools.items() if t.makes_structures_only}
    want = set(chosen)
    needs_structure = any(
        n in tools and n not in builders and "structure_id" in tools[n].input_model.model_fields for n in want
    )
    if needs_structure and not want & builders:
        want.add(
            CRYSTAL_BUILDER if (_CRYSTAL.search(question.lower()) or _SYMBOL.search(question)) else MOLECULE_BUILDER
        )
    return [name for name in available if name in want]


def model_route(model, question: str, available: list[str]) -> list[str]:
    """The tools the model picks for ``question`` from the one-line registry menu, in one forced (grammar-
    constrained for local GGUF models) call of :data:`ROUTE_TOOL`; ``[]`` when it picks nothing usable."""
    from langchain_core.messages import HumanMessage, SystemMessage

    bound = model.bind_tools([route_schema(available)], tool_choice=ROUTE_TOOL)
    msg = bound.invoke(
        [
            SystemMessage(
                "You route a chemistry question to the tools that compute what it asks for. Tools:\n"
                + tool_menu(available)
                + f"\nCall {ROUTE_TOOL} with the one to three tools the question needs."
            ),
            HumanMessage(question),
        ]
    )
    calls = [tc for tc in getattr(msg, "tool_calls", []) if tc.get("name") == ROUTE_TOOL]
    picked = calls[0].get("args", {}).get("tools", []) if calls else []
    picked = {p for p in picked if isinstance(p, str) and p in available}
    return with_builders(question, picked, available) if picked else []
