"""YAML workflows: a list of tool calls that can refer to earlier results.

```yaml
name: cu-eos
workspace: runs/workflows/cu-eos      # optional; the CLI's --workspace wins
steps:
  - id: cu
    tool: build_bulk
    args: {name: Cu, cubic: true}
  - id: eos
    tool: equation_of_state
    args: {structure_id: "${cu.structure_id}", calculator: emt}
```

``${step.field}`` (or ``${step.field.0}`` into lists/dicts) is replaced by that value; a string that is
exactly one reference keeps the value's type. Steps run in order through :func:`triscale.tools.call_tool`;
the first failure stops the run unless the step says ``continue_on_error: true``.

Confinement. A workflow file is data, not a grant of access:

* ``workspace:`` in the file must be a *relative* path without ``..`` (nor ``~``); it is resolved under the
  directory the run was started in (the current directory) and must stay inside it after symlinks are
  resolved. An absolute path or an escape makes the whole file invalid (refused when it is loaded, before any
  step runs, even if a workspace is also passed). To use any other directory, leave the key out and pass
  ``--workspace`` to the CLI (or a workspace to :func:`run_workflow`); that choice wins over a valid key.
* Files are read only up to ``MAX_WORKFLOW_BYTES`` and must be UTF-8 text. The YAML is composed (no Python
  objects built) and refused if it has more than ``MAX_ALIASES`` aliases, a recursive alias, or would expand
  to more than ``MAX_NODES`` nodes ("billion laughs"), before anything is constructed.
* Error messages name the problem and its line/column, never the file's text.

For each. A top-level ``for_each: {items: FILE-or-list, as: mol}`` runs all the steps once per item, with
``${mol}`` standing for the item in step arguments (a mapping item also gives ``${mol.field}``). Such a workflow
is a *campaign*: it runs through :func:`triscale.tools.campaigns.run_campaign` (sequentially in this process, or
for each item on a Dask cluster), with per-item results persisted under ``campaigns/<name>/`` so that a re-run
resumes. An items file obeys the same confinement as ``workspace:``: a relative path inside the current directory.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from triscale.tools.calls import call_tool, get_tool
from triscale.tools.errors import ToolError, ToolInputError
from triscale.tools.workspace import Workspace

__all__ = [
    "ForEach",
    "Workflow",
    "WorkflowRun",
    "WorkflowStep",
    "load_workflow",
    "read_text_file",
    "resolve_references",
    "run_workflow",
    "workflow_workspace",
]

_REF = re.compile(r"\$\{\s*([A-Za-z_][\w-]*)((?:\.[\w-]+)*)\s*\}")
MAX_WORKFLOW_BYTES = 1 << 20  # 1 MiB: a workflow is a short list of tool calls
MAX_ALIASES = 100
MAX_NODES = 100_000  # YAML nodes after expanding aliases


class WorkflowStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z_][\w-]*$", description="Name later steps use in ${id.field}.")
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)
    continue_on_error: bool = False


class ForEach(BaseModel):
    """Run every step once per item: ``items`` is an inline list or a text file (one item per line)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    items: str | list[Any] | None = Field(
        None,
        description="An inline list, or a relative path to a text file: one item (first token) per line, the rest "
        "of the line a label; blank lines and lines starting with '#' are skipped. Left out: the caller's --items.",
    )
    as_: str = Field("item", alias="as", pattern=r"^[A-Za-z_][\w-]*$", description="The name steps use: ${as}.")
    retries: int = Field(2, ge=0, le=10, description="Re-runs of an item whose worker died or that crashed.")
    limit: int | None = Field(None, gt=0, description="Only the first N items (a quick trial).")

    @field_validator("items")
    @classmethod
    def _relative_items(cls, v: str | list[Any] | None) -> str | list[Any] | None:
        if isinstance(v, str):
            try:
                _check_relative_workspace(v)
            except ValueError:
                raise ValueError(
                    "an items file must be a relative path without '..' inside the directory the run starts in "
                    "(use the CLI's --items for any other file)"
                ) from None
        elif not v:
            raise ValueError("an inline items list must not be empty")
        return v


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "workflow"
    description: str | None = None
    workspace: str | None = None
    for_each: ForEach | None = None
    steps: list[WorkflowStep] = Field(min_length=1)

    @field_validator("workspace")
    @classmethod
    def _relative_workspace(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _check_relative_workspace(v)
        return v


def _check_relative_workspace(text: str) -> None:
    bad = (
        not text.strip()
        or "\x00" in text
        or text.strip().startswith("~")
        or Path(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or ".." in Path(text).parts
        or ".." in PureWindowsPath(text).parts
    )
    if bad:
        raise ValueError(
            "a workflow's workspace must be a relative path without '..' inside the directory the run starts in "
            "(use the CLI's --workspace for any other directory)"
        )


def workflow_workspace(wf: Workflow, workspace: Workspace | str | None) -> Workspace:
    """The run's workspace: the caller's if given, else the file's. A ``workspace:`` key that leaves the current
    directory (also through a symlink) is refused either way, before anything is created."""
    key_dir = None
    if wf.workspace is not None:
        try:
            _check_relative_workspace(wf.workspace)
        except ValueError as e:
            raise ToolInputError(f"Invalid workflow: workspace: {e}.") from None
        base = Path.cwd().resolve()
        key_dir = (base / wf.workspace).resolve()
        if key_dir != base and base not in key_dir.parents:
            raise ToolInputError(
                f"Invalid workflow: workspace {wf.workspace!r} leads outside {str(base)!r} (through a symlink).",
                hint="Use a plain sub-directory, or leave the key out and pass --workspace.",
            )
    if isinstance(workspace, Workspace):
        return workspace
    if workspace:
        return Workspace(workspace)
    return Workspace(key_dir or "workspace")


class StepOutcome(BaseModel):
    id: str
    tool: str
    status: str
    wall_time_s: float
    result: dict[str, Any] | None = None
    error: str | None = None


class WorkflowRun(BaseModel):
    name: str
    workspace: str
    ok: bool
    steps: list[StepOutcome]
    results_file: str


def _refs_in(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(m.group(1), m.group(2)) for m in _REF.finditer(value)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs_in(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs_in(v)]
    return []


def _yaml_error(p: Path, e: yaml.YAMLError) -> ToolInputError:
    """The YAML problem and its position, without the snippet of file text PyYAML adds."""
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or type(e).__name__
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return ToolInputError(f"Workflow {str(p)!r} is not valid YAML: {problem}{where}.")


def _check_yaml_size(p: Path, root: yaml.Node) -> None:
    """Refuse alias bombs and recursive aliases by walking the composed node graph (nothing is constructed)."""
    expanded: dict[int, int] = {}
    active: set[int] = set()
    aliases = 0
    seen: set[int] = set()

    def size(node: yaml.Node) -> int:
        nonlocal aliases
        key = id(node)
        if key in seen:  # a node reached again is an alias (PyYAML shares the anchored node)
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ToolInputError(
                    f"Workflow {str(p)!r} uses more than {MAX_ALIASES} YAML aliases.",
                    hint="Write the values out; a workflow does not need many anchors.",
                )
        if key in active:
            raise ToolInputError(f"Workflow {str(p)!r} has a recursive YAML alias.")
        if key in expanded:
            return expanded[key]
        seen.add(key)
        active.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if n > MAX_NODES:
            raise ToolInputError(
                f"Workflow {str(p)!r} expands to more than {MAX_NODES} YAML nodes (aliases expanding a "
                "'billion laughs' style document?).",
                hint="A workflow is a short list of tool calls.",
            )
        expanded[key] = n
        return n

    size(root)


def read_text_file(p: Path, what: str, max_bytes: int, hint: str) -> str:
    """A small user-named text file, read safely: a regular file, at most ``max_bytes`` (read no further), UTF-8,
    no NUL bytes; every refusal a ToolInputError that names the file, never its contents."""
    try:
        if not p.is_file():
            raise ToolInputError(f"{what} {str(p)!r} does not exist (or is not a regular file).")
        with open(p, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise ToolInputError(f"{what} {str(p)!r} cannot be read ({e.strerror or type(e).__name__}).") from None
    if len(raw) > max_bytes:
        size = f"{max_bytes >> 20} MiB" if max_bytes % (1 << 20) == 0 else f"{max_bytes // 1024} KiB"
        raise ToolInputError(f"{what} {str(p)!r} is larger than {size}.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolInputError(f"{what} {str(p)!r} is not a text (UTF-8) file.", hint=hint) from None
    if "\x00" in text:
        raise ToolInputError(f"{what} {str(p)!r} is not a text file (it contains NUL bytes).", hint=hint)
    return text


def _read_yaml(p: Path) -> Any:
    """Read a workflow file safely: size-limited, UTF-8 text, bounded alias expansion, safe constructors."""
    text = read_text_file(p, "Workflow file", MAX_WORKFLOW_BYTES, "Pass a YAML workflow file.")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_yaml_size(p, root)
        return loader.construct_document(root)
    except yaml.YAMLError as e:
        raise _yaml_error(p, e) from None
    except RecursionError:
        raise ToolInputError(f"Workflow {str(p)!r} is nested too deeply.") from None
    finally:
        loader.dispose()


def load_workflow(source: str | Path | dict[str, Any] | Workflow) -> Workflow:
    """Parse and check a workflow: known tools, unique step ids, references only to earlier steps."""
    if isinstance(source, Workflow):
        wf = source
    else:
        if isinstance(source, dict):
            data = source
        else:
            data = _read_yaml(Path(source))
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, dict):
            raise ToolInputError("A workflow is a mapping with a 'steps' list (or a bare list of steps).")
        try:
            wf = Workflow.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ToolInputError(f"Invalid workflow: {loc}: {first['msg']}.") from None
    seen: set[str] = set()
    if wf.for_each is not None:
        seen.add(wf.for_each.as_)
    for step in wf.steps:
        get_tool(step.tool)
        for ref, _ in _refs_in(step.args):
            if ref not in seen:
                raise ToolInputError(
                    f"Step {step.id!r} refers to ${{{ref}...}}, which is not an earlier step.",
                    hint=f"Earlier steps: {', '.join(sorted(seen)) or 'none'}.",
                )
        if step.id in seen:
            if wf.for_each is not None and step.id == wf.for_each.as_:
                raise ToolInputError(f"Step id {step.id!r} is also the for_each item name ('as').")
            raise ToolInputError(f"Duplicate step id {step.id!r}.")
        seen.add(step.id)
    return wf


def _lookup(results: dict[str, Any], name: str, path: str) -> Any:
    if name not in results:
        raise ToolInputError(f"${{{name}}} has no result (the step failed or has not run).")
    value: Any = results[name]
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            if isinstance(value, dict):
                has = list(value)
            elif isinstance(value, list):
                has = f"a list of {len(value)}"
            else:  # a number, string or null has no fields
                has = f"the value {value!r}, which has no fields"
            raise ToolInputError(f"${{{name}{path}}}: no {part!r} in the result (has: {has}).")
    return value


def resolve_references(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``${step.field}`` references in ``value`` (recursively) with values from ``results``."""
    if isinstance(value, str):
        m = _REF.fullmatch(value.strip())
        if m:
            return _lookup(results, m.group(1), m.group(2))
        return _REF.sub(lambda mm: str(_lookup(results, mm.group(1), mm.group(2))), value)
    if isinstance(value, dict):
        return {k: resolve_references(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, results) for v in value]
    return value


def run_workflow(
    source: str | Path | dict[str, Any] | Workflow,
    workspace: Workspace | str | None = None,
    *,
    on_step: Any = None,
) -> WorkflowRun:
    """Run every step in order and write ``workflows/<name>_<n>.json`` into the workspace.

    A workflow with ``for_each`` is a campaign: run it with :func:`triscale.tools.campaigns.run_campaign`."""
    wf = load_workflow(source)
    if wf.for_each is not None:
        raise ToolInputError(
            f"Workflow {wf.name!r} has for_each: it is a campaign.",
            hint="Run it with triscale.tools.campaigns.run_campaign (or `triscale run`).",
        )
    ws = workflow_workspace(wf, workspace)
    results: dict[str, Any] = {}
    outcomes: list[StepOutcome] = []
    ok = True
    for step in wf.steps:
        t0 = time.monotonic()
        try:
            args = resolve_references(step.args, results)
            res = call_tool(step.tool, args, ws, timeout_s=step.timeout_s)
            results[step.id] = res.model_dump(mode="json")
            out = StepOutcome(
                id=step.id,
                tool=step.tool,
                status="ok",
                wall_time_s=round(time.monotonic() - t0, 3),
                result=results[step.id],
            )
        except ToolError as e:
            out = StepOutcome(
                id=step.id,
                tool=step.tool,
                status="error",
                wall_time_s=round(time.monotonic() - t0, 3),
                error=str(e),
            )
        outcomes.append(out)
        if on_step is not None:
            on_step(out)
        if out.status != "ok":
            ok = False
            if not step.continue_on_error:
                break
    safe = re.sub(r"[^\w.-]+", "_", wf.name)[:60] or "workflow"
    path = ws.new_file("workflows", safe, ".json")
    run = WorkflowRun(name=wf.name, workspace=str(ws.root), ok=ok, steps=outcomes, results_file=ws.relpath(path))
    path.write_text(json.dumps(run.model_dump(mode="json"), indent=1))
    return run
