"""LangChain bindings for the TriScale tool registry.

Each registry tool becomes a ``StructuredTool`` with ``response_format="content_and_artifact"``: the content
is the result's compact JSON (ids and summaries, never coordinates) and the artifact is the full result dict.
The argument schema is the tool's pydantic JSON schema; validation happens in the registry so that a bad call
(unknown id, unknown argument, limit exceeded, failed SCF) comes back as a ``ToolException`` message the model
can read and recover from, instead of an exception that ends the run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from triscale.agents.context import CURRENT_CANCEL
from triscale.tools import ToolError, Workspace, call_tool, list_tools

if TYPE_CHECKING:  # pragma: no cover
    from langchain_core.tools import StructuredTool

__all__ = ["call_for_agent", "langchain_tools", "make_langchain_tool"]


def call_for_agent(name: str, kwargs: dict[str, Any], ws: Workspace, cancel: Any = None) -> Any:
    """``call_tool`` with one repair for language models: ``build_molecule`` given both a name and a SMILES
    builds from the name (models, small ones above all, often add a wrong SMILES from memory: 'caffeine' with
    'CCOOC'), and from the SMILES only if the name is unknown. ``cancel``: a ``CancelToken`` that stops every
    call this makes (a running calculation's worker is killed)."""
    if name == "build_molecule" and kwargs.get("name") and kwargs.get("smiles"):
        by_name = {k: v for k, v in kwargs.items() if k != "smiles"}
        try:
            result = call_tool(name, by_name, ws, cancel=cancel)
        except ToolError:
            pass
        else:
            result.notes.append(f"Built from the name {kwargs['name']!r}; the SMILES given with it was ignored.")
            return result
        kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    notes: list[str] = []
    kwargs = _drop_invalid_choices(name, kwargs, notes)
    if name == "reaction_energy" and isinstance(kwargs.get("reaction"), str):
        kwargs = {**kwargs, "reaction": _reaction_with_ids(kwargs["reaction"], ws, notes)}
    kwargs = _element_as_built_crystal(kwargs, ws, notes)
    try:
        result = call_tool(name, kwargs, ws, cancel=cancel)
        result.notes.extend(notes)
        return result
    except ToolError as e:
        sid = kwargs.get("structure_id")
        if not (isinstance(sid, str) and "Unknown structure" in str(e) and _CRYSTAL_NAME.fullmatch(sid.strip())):
            raise
        # a formula where a structure id is expected (no molecule has that name): the crystal ase.build.bulk knows
        built = _with_built_bulk(kwargs, sid.strip(), ws)
        if built is None:
            raise e from None
        result = call_tool(name, built[0], ws, cancel=cancel)
        result.notes.append(built[1])
        return result


def _with_built_bulk(kwargs: dict[str, Any], crystal: str, ws: Workspace) -> tuple[dict[str, Any], str] | None:
    """``kwargs`` with its ``structure_id`` replaced by the crystal ``crystal`` built as the agent's ``build_bulk``
    calls build it (:func:`~triscale.agents.local_llm.repair_args`), and the note saying so; None if refused."""
    from triscale.agents.local_llm import repair_args

    try:
        built = call_tool("build_bulk", repair_args("build_bulk", {"name": crystal}), ws)
    except ToolError:
        return None
    note = f"Built bulk {crystal} ({built.formula}) as {built.structure_id} from {kwargs['structure_id']!r}."
    return {**kwargs, "structure_id": built.structure_id}, note


def _element_as_built_crystal(kwargs: dict[str, Any], ws: Workspace, notes: list[str]) -> dict[str, Any]:
    """An element named where a structure id goes ('Cu', 'aluminium') is built as ``build_bulk`` builds it for the
    agent (the conventional cubic cell of a cubic lattice: the cell users mean by "fcc copper"), not as the tools'
    own resolver would (the primitive cell), so that the same words give the same cell whichever call they reach."""
    from triscale.tools.builders import element_crystal_symbol

    sid = kwargs.get("structure_id")
    if not isinstance(sid, str) or ws.has(sid.strip()) or ws.find_label(sid.strip()):
        return kwargs
    symbol = element_crystal_symbol(sid)
    built = _with_built_bulk(kwargs, symbol, ws) if symbol is not None else None
    if built is None:
        return kwargs
    notes.append(built[1])
    return built[0]


def _drop_invalid_choices(name: str, kwargs: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """An optional argument whose value is not one of its schema's choices (a small model wrote
    ``crystalstructure="cubic"``) is left out, so the tool's default applies, with a note; any other invalid
    argument is left for the tool to refuse."""
    from pydantic import ValidationError

    from triscale.tools import get_tool

    try:
        model = get_tool(name).input_model
        model.model_validate(kwargs)
        return kwargs
    except ValidationError as e:
        errors = e.errors()
    except Exception:
        return kwargs
    drop = set()
    for err in errors:
        key = err["loc"][0] if err.get("loc") else None
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None or field.is_required() or err.get("type") not in ("literal_error", "enum"):
            return kwargs
        drop.add(key)
    for key in sorted(drop):
        notes.append(f"{key}={kwargs[key]!r} is not one of its choices; left out (the default applies).")
    return {k: v for k, v in kwargs.items() if k not in drop}


_RXN_ARROW = re.compile(r"\s*(?:<=>|->|→|=>)\s*")
_RXN_COEF = re.compile(r"^(\d+(?:\.\d+)?)\s+(.+)$")
_RXN_PHASE = re.compile(r"\s*(?:\((?:g|gas)\)|\bgas)$", re.I)


def _reaction_with_ids(reaction: str, ws: Workspace, notes: list[str]) -> str:
    """A reaction whose SMILES species (``C=C``, ``OC(=O)O``: the tool reads a bare '=' as an arrow) are built
    first and written as their structure ids, and whose names drop a phase word ('Hydrogen gas', 'CO2(g)')."""
    sides = _RXN_ARROW.split(reaction.strip())
    if len(sides) != 2:
        return reaction
    out_sides = []
    changed = False
    for side in sides:
        terms = []
        for term in re.split(r"\s+\+\s+", side.strip()):
            m = _RXN_COEF.match(term.strip())
            coef, species = (m.group(1) + " ", m.group(2).strip()) if m else ("", term.strip())
            bare = _RXN_PHASE.sub("", species).strip() or species
            if re.search(r"[=#\[\]()]", bare) and " " not in bare:
                try:
                    built = call_tool("build_molecule", {"smiles": bare}, ws)
                except ToolError:
                    terms.append(coef + species)
                    continue
                notes.append(f"Species {bare!r} built from its SMILES as {built.structure_id}.")
                terms.append(coef + built.structure_id)
                changed = True
            else:
                changed = changed or bare != species
                terms.append(coef + bare)
        out_sides.append(" + ".join(terms))
    return " -> ".join(out_sides) if changed else reaction


_CRYSTAL_NAME = re.compile(r"(?:[A-Z][a-z]?\d*){1,3}")  # 'Cu', 'Si', 'NaCl', 'MgO', 'GaAs'


def make_langchain_tool(name: str, workspace: Workspace | str) -> StructuredTool:
    """One registry tool as a LangChain ``StructuredTool`` bound to ``workspace``."""
    from langchain_core.tools import StructuredTool, ToolException

    from triscale.tools import get_tool

    tool = get_tool(name)
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)

    def _run(**kwargs: Any) -> tuple[str, dict[str, Any]]:
        cancel = CURRENT_CANCEL.get()  # the run's token (ScienceAgent.ask(cancel=...)), set around each call
        if cancel is not None and cancel.cancelled:
            raise ToolException(f"{tool.name} was not run: the user cancelled this question.")
        try:
            result = call_for_agent(tool.name, kwargs, ws, cancel=cancel)
        except ToolError as e:
            if cancel is not None and cancel.cancelled:
                raise ToolException(f"{tool.name} was cancelled by the user.") from None
            raise ToolException(f"{tool.name} error: {e}") from None
        return result.content(), result.model_dump(mode="json")

    schema = tool.input_model.model_json_schema()
    schema["title"] = tool.name
    schema["description"] = tool.description
    return StructuredTool.from_function(
        func=_run,
        name=tool.name,
        description=tool.description,
        args_schema=schema,
        infer_schema=False,
        response_format="content_and_artifact",
        handle_tool_error=True,
        metadata={
            "cost": tool.cost,
            "timeout_s": tool.timeout_s,
            "category": tool.category,
            "compact": tool.compact,
            "makes_structures_only": tool.makes_structures_only,
            "needs_approval": tool.needs_approval is not None,
            "answer_fields": list(tool.answer_fields),
        },
    )


def langchain_tools(workspace: Workspace | str, names: list[str] | None = None) -> list[StructuredTool]:
    """LangChain tools for the whole registry (or the named subset), all bound to one workspace."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    available = [t.name for t in list_tools()]
    if names is not None:
        unknown = sorted(set(names) - set(available))
        if unknown:
            raise ValueError(f"Unknown tools {unknown}; available: {', '.join(available)}")
    return [make_langchain_tool(n, ws) for n in available if names is None or n in names]
