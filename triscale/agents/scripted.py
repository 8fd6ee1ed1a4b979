"""A scripted chat model: deterministic tests and the evaluation harness's oracle backend.

It subclasses langchain-core's ``GenericFakeChatModel`` and makes ``bind_tools`` return itself (the stock fake
raises). Each model turn takes the next item of the script: a string, an ``AIMessage``, a ``{"tool": name,
"args": {...}}`` dict (one tool call), a list of such dicts (parallel calls), or a callable
``f(messages) -> any of these``. Strings in tool arguments may use ``${N.field}``: the ``field`` of the artifact
of the N-th successful tool result so far (1-based), so a script can chain ids it cannot know in advance.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["ScriptedChatModel", "load_script"]

_REF = re.compile(r"\$\{(\d+)\.([\w.]+)\}")
_ids = itertools.count(1)


def _artifacts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    return [
        m.artifact
        for m in messages
        if isinstance(m, ToolMessage) and m.status != "error" and isinstance(m.artifact, dict)
    ]


def _resolve(value: Any, arts: list[dict[str, Any]]) -> Any:
    if isinstance(value, str):

        def get(m: re.Match) -> str:
            obj: Any = arts[int(m.group(1)) - 1]
            for part in m.group(2).split("."):
                obj = obj[int(part)] if isinstance(obj, list) else obj[part]
            return str(obj)

        return _REF.sub(get, value)
    if isinstance(value, dict):
        return {k: _resolve(v, arts) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, arts) for v in value]
    return value


def _to_message(item: Any, messages: list[BaseMessage]) -> AIMessage:
    if callable(item):
        item = item(messages)
    if isinstance(item, AIMessage):
        return item
    if isinstance(item, str):
        return AIMessage(content=item)
    calls = [item] if isinstance(item, dict) else list(item)
    arts = _artifacts(messages)
    tool_calls = [
        {"name": c["tool"], "args": _resolve(c.get("args", {}), arts), "id": f"call_{next(_ids)}", "type": "tool_call"}
        for c in calls
    ]
    return AIMessage(content=calls[0].get("say", "") if calls else "", tool_calls=tool_calls)


class ScriptedChatModel(GenericFakeChatModel):
    """Plays a script of model turns; ``bind_tools`` returns the model itself. When the script is exhausted it
    answers with an empty message (the agent then assembles the answer from the tool results)."""

    messages: Iterator[Any]
    model_name: str = "scripted"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> ScriptedChatModel:
        return self

    def with_structured_output(self, *args: Any, **kwargs: Any):  # pragma: no cover - not used by the agent
        raise NotImplementedError("The scripted model emits tool calls only.")

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        try:
            item = next(self.messages)
        except StopIteration:
            item = ""
        return ChatResult(generations=[ChatGeneration(message=_to_message(item, messages))])

    @property
    def _llm_type(self) -> str:
        return "triscale-scripted"


def load_script(path: str | Path) -> ScriptedChatModel:
    """A scripted model from a JSON file holding the list of turns (strings and tool-call dicts)."""
    turns = json.loads(Path(path).read_text())
    if not isinstance(turns, list):
        raise ValueError("A script file holds a JSON list of turns.")
    return ScriptedChatModel(messages=iter(turns))
