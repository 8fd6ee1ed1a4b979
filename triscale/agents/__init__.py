"""The TriScale science agent: LLM backends, tool bindings, the agent graph, provenance, answers.

Imports are lazy so that ``import triscale.agents`` does not pull in LangChain until something is used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ScienceAgent",
    "AgentRun",
    "FinalAnswer",
    "ResultItem",
    "ScriptedChatModel",
    "make_llm",
    "NoBackendError",
    "export_workflow",
    "load_run",
    "langchain_tools",
    "SYSTEM_PROMPT",
    "RunSettings",
]

_WHERE = {
    "ScienceAgent": "graph",
    "AgentRun": "graph",
    "FinalAnswer": "answer",
    "ResultItem": "answer",
    "ScriptedChatModel": "scripted",
    "make_llm": "llm",
    "NoBackendError": "llm",
    "export_workflow": "provenance",
    "load_run": "provenance",
    "langchain_tools": "tool_bindings",
    "SYSTEM_PROMPT": "prompts",
    "RunSettings": "context",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"triscale.agents.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'triscale.agents' has no attribute {name!r}")
