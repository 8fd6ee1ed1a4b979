"""A LangChain chat model over a local GGUF file through llama-cpp-python, with guard rails for small models.

Why not ``langchain_community.ChatLlamaCpp``: it drops tools unless one is forced and its function-calling
template drops tool results. Here the GGUF's *own* chat template (``tokenizer.chat_template`` in its metadata)
is rendered with ``tools=`` and the full message history (assistant tool calls and tool results included), the
reply's ``<tool_call>{...}</tool_call>`` blocks (or bare JSON calls) become ``AIMessage.tool_calls``, and a reply
that tried to call a tool but does not parse is generated again under a JSON-schema grammar that only admits a
valid call. The parsing and rendering helpers are pure functions, tested without llama-cpp-python.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import threading
import uuid
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

__all__ = [
    "ChatLocalGGUF",
    "render_chat_template",
    "messages_to_dicts",
    "compact_tool",
    "parse_tool_calls",
    "tool_call_schema",
    "gguf_metadata",
]

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, int, int], Any] = {}

# --------------------------------------------------------------------------- prompt rendering


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render a Hugging Face style Jinja chat template (as stored in GGUF metadata)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg: str) -> None:
        raise TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages,
        tools=tools or None,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )


def _content(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "".join(x.get("text", "") if isinstance(x, dict) else str(x) for x in c)
    return str(c or "")


def messages_to_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as chat-template dicts (OpenAI layout; arguments as objects, as HF templates expect)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": _content(m.content)})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": _content(m.content)})
        elif isinstance(m, AIMessage):
            d: dict[str, Any] = {"role": "assistant", "content": _content(m.content)}
            if m.tool_calls:
                d["tool_calls"] = [
                    {"id": tc.get("id"), "type": "function", "function": {"name": tc["name"], "arguments": tc["args"]}}
                    for tc in m.tool_calls
                ]
            out.append(d)
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "content": _content(m.content), "name": m.name, "tool_call_id": m.tool_call_id})
        else:
            out.append({"role": "user", "content": _content(m.content)})
    return out


_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "cf.")


def _first_sentence(text: str, limit: int) -> str:
    """The first sentence (not cut inside "e.g." / "i.e."), at most ``limit`` characters."""
    text = " ".join(str(text or "").split())
    masked = text
    for a in _ABBREV:
        masked = masked.replace(a, "\0" * len(a))
    m = re.match(r"(.+?[.;:])(\s|$)", masked)
    s = text[: m.end(1)] if m else text
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


# Optional arguments not shown to small models (noise in the prompt).
COMPACT_HIDDEN: dict[str, tuple[str, ...]] = {"build_bulk": ("label",), "build_molecule": ("label",)}


def repair_args(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Arguments of a small model's call with the invented values it is known to add removed.

    ``build_bulk`` of an element with an ASE reference state: a lattice constant from the model's memory is
    dropped (the 1.5B gave Cu ``a_A=4.0`` before an equation of state, whose scan then misses the minimum), and
    a cubic lattice (fcc, bcc, diamond) gets its conventional cubic cell unless ``cubic`` was given, so that
    ``equation_of_state`` reports the lattice constant a chemist means. Compounds keep ``a_A`` (they need it)."""
    args = {k: v for k, v in args.items() if k not in COMPACT_HIDDEN.get(name, ())}
    if name == "build_bulk" and isinstance(args.get("name"), str):
        from ase.data import atomic_numbers, reference_states

        z = atomic_numbers.get(args["name"].strip())
        ref = reference_states[z] if z is not None else None
        if (
            ref
            and ref.get("symmetry")
            and (not args.get("crystalstructure") or args["crystalstructure"] == ref["symmetry"])
        ):
            args.pop("a_A", None)
            args.pop("c_A", None)
            if "cubic" not in args and ref["symmetry"] in ("fcc", "bcc", "diamond", "sc"):
                args["cubic"] = True
    return args


def compact_tool(tool: dict[str, Any], desc_limit: int = 160, arg_limit: int = 70) -> dict[str, Any]:
    """A smaller OpenAI tool spec for small models: first sentence of each description, flat argument types,
    ``calculator`` as a plain method string, no ``$defs``."""
    fn = tool.get("function", tool)
    params = fn.get("parameters", {}) or {}
    props = {}
    hidden = COMPACT_HIDDEN.get(fn.get("name", ""), ())
    for name, p in (params.get("properties") or {}).items():
        if name in hidden and name not in (params.get("required") or []):
            continue
        if name == "calculator":
            props[name] = {"type": "string", "description": "auto, triscale, gfn2-xtb, emt, chgnet or dft"}
            continue
        if name == "structure_id":  # small models copy an example id ('st3') they were never given
            props[name] = {"type": "string", "description": "Molecule name or SMILES (e.g. 'water'), or a returned id."}
            continue
        q: dict[str, Any] = {}
        types = [x.get("type") for x in p.get("anyOf", []) if x.get("type") not in (None, "null")]
        q["type"] = p.get("type") or (types[0] if types else "string")
        if q["type"] == "array":
            items = p.get("items") or next((x.get("items") for x in p.get("anyOf", []) if x.get("items")), None)
            if isinstance(items, dict) and items.get("type"):
                q["items"] = {k: items[k] for k in ("type", "enum") if k in items}
            for key in ("minItems", "maxItems"):
                if key in p:
                    q[key] = p[key]
        for key in ("enum", "default"):
            if key in p and p[key] is not None:
                q[key] = p[key]
        if p.get("description"):  # required arguments keep their examples
            limit = 2 * arg_limit if name in (params.get("required") or []) else arg_limit
            q["description"] = _first_sentence(p["description"], limit)
        props[name] = q
    out_params = {"type": "object", "properties": props}
    if params.get("required"):
        out_params["required"] = list(params["required"])
    return {
        "type": "function",
        "function": {
            "name": fn["name"],
            "description": _first_sentence(fn.get("description", ""), desc_limit),
            "parameters": out_params,
        },
    }


# --------------------------------------------------------------------------- parsing replies

_TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE_RE = re.compile(r"```(?:json|tool_call)?\s*(.*?)```", re.DOTALL)


# a JSON string literal (kept whole) or a // line comment outside one (removed)
_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*')


def _without_comments(text: str) -> str:
    """``text`` without ``// ...`` line comments outside strings (small models annotate JSON calls with them:
    ``"a_A": 3.6,  // Cu lattice constant``, which made the whole call unparseable and silently dropped)."""
    return _STRING_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)


def _loads(text: str) -> Any:
    text = text.strip().rstrip(",")
    if "//" in text:
        text = _without_comments(text)
    for attempt in (text, text.replace("\n", " ")):
        try:
            return json.loads(attempt)
        except json.JSONDecodeError:
            pass
    try:  # single quotes, True/False/None
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    # a trailing missing brace is the most common truncation
    depth = text.count("{") - text.count("}")
    if 0 < depth <= 3:
        try:
            return json.loads(text + "}" * depth)
        except json.JSONDecodeError:
            pass
    return None


def _balanced_objects(text: str) -> list[str]:
    """Top-level ``{...}`` substrings (string-aware brace matching)."""
    out, depth, start, in_str, esc = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
    return out


def _as_call(obj: Any, names: list[str]) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    if "function" in obj and isinstance(obj["function"], dict):
        obj = obj["function"]
    name = obj.get("name") or obj.get("tool") or obj.get("tool_name")
    if not isinstance(name, str):
        return None
    args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
    if isinstance(args, str):
        args = _loads(args) if args.strip() else {}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    if names and name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        if not close:
            return {"name": name, "args": args}  # unknown tool: the agent returns an actionable error
        name = close[0]
    return {"name": name, "args": args}


def parse_tool_calls(text: str, tool_names: list[str] | None = None) -> tuple[str, list[dict[str, Any]], bool]:
    """``(content, tool_calls, attempted)`` from a model reply.

    Accepts ``<tool_call>{"name": .., "arguments": {..}}</tool_call>`` blocks (Qwen/Hermes style, closing tag
    optional), fenced JSON, and a bare JSON call naming a known tool. ``attempted`` is true when the reply looks
    like a call that could not be parsed (the caller then retries under a grammar)."""
    names = list(tool_names or [])
    calls: list[dict[str, Any]] = []
    attempted = False
    blocks = _TOOL_CALL_RE.findall(text)
    if blocks:
        attempted = True
        for b in blocks:
            objs = _balanced_objects(b) or [b]
            for o in objs:
                c = _as_call(_loads(o), names)
                if c:
                    calls.append(c)
        content = _TOOL_CALL_RE.sub("", text).strip()
        return content, calls, attempted and not calls
    candidates = _FENCE_RE.findall(text) or [text]
    for cand in candidates:
        for o in _balanced_objects(cand):
            obj = _loads(o)
            c = _as_call(obj, names)
            if c and (not names or c["name"] in names or '"arguments"' in o):
                calls.append(c)
                text = text.replace(o, "")
            elif isinstance(obj, dict) or ('"name"' in o and '"arguments"' in o):
                attempted = attempted or '"name"' in o
    content = _FENCE_RE.sub("", text).strip() if calls else text.strip()
    return content, calls, attempted and not calls


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema admitting exactly one call of one of ``tools`` (for grammar-constrained generation)."""
    options = []
    for t in tools:
        fn = t.get("function", t)
        params = compact_tool(t)["function"]["parameters"]
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    return {"anyOf": options} if len(options) > 1 else options[0]


def gguf_metadata(path: str) -> dict[str, Any]:
    """Scalar metadata of a GGUF file (architecture, name, quantisation, context length, chat template...)
    read with the ``gguf`` package, without loading the weights."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    out: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model", "tokenizer.ggml.pre"):
            continue
        try:
            val = f.contents()
        except Exception:
            continue
        if isinstance(val, list) and len(val) > 16:
            continue
        out[key] = val
    return out


# --------------------------------------------------------------------------- the chat model


class ChatLocalGGUF(BaseChatModel):
    """Chat model over a GGUF file with tool calling for small instruction models (Qwen2.5 and similar)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_path: str
    n_ctx: int = 8192
    n_threads: int | None = None
    temperature: float = 0.0
    max_tokens: int = 384  # caps a rambling turn; a call is ~40 tokens, a final answer ~30
    seed: int = 0
    grammar_retry: bool = True
    compact: bool = True
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | None = None

    @property
    def _llm_type(self) -> str:
        return "triscale-gguf"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> ChatLocalGGUF:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        specs = [convert_to_openai_tool(t) for t in tools]
        if isinstance(tool_choice, dict):  # {"type": "function", "function": {"name": ...}}
            tool_choice = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        if tool_choice in ("auto", "none", False):
            tool_choice = None
        if tool_choice is True:
            tool_choice = "any"
        return self.model_copy(
            update={"tools": [compact_tool(s) for s in specs] if self.compact else specs, "tool_choice": tool_choice}
        )

    def _llama(self):
        import os

        from llama_cpp import Llama

        env = os.environ.get("TRISCALE_LLM_THREADS", "")
        threads = (
            self.n_threads or (int(env) if env.isdigit() and int(env) > 0 else 0) or max(1, min(4, os.cpu_count() or 1))
        )
        key = (self.model_path, self.n_ctx, threads)
        with _LOCK:
            if key not in _MODELS:
                _MODELS[key] = Llama(
                    model_path=self.model_path, n_ctx=self.n_ctx, n_threads=threads, seed=self.seed, verbose=False
                )
            return _MODELS[key]

    def render(self, messages: list[BaseMessage]) -> str:
        llm = self._llama()
        meta = llm.metadata or {}
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.model_path} has no chat template in its metadata; it is not a chat model.")
        return render_chat_template(template, messages_to_dicts(messages), self.tools or None)

    def _complete(self, prompt: str, grammar: Any = None) -> tuple[str, dict[str, int]]:
        llm = self._llama()
        out = llm.create_completion(
            prompt,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            stop=["<|im_end|>", "<|endoftext|>", "<|eot_id|>"],
            seed=self.seed,
            grammar=grammar,
        )
        usage = out.get("usage", {})
        return out["choices"][0]["text"], usage

    def _known_args(self, call: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments after :func:`repair_args` (compact mode only)."""
        return repair_args(call["name"], call["args"]) if self.compact else call["args"]

    def _forced_tools(self) -> list[dict[str, Any]]:
        """The tools a forced call may use (``tool_choice`` "any"/"required" or one tool's name)."""
        if self.tool_choice in ("any", "required"):
            return self.tools
        return [t for t in self.tools if t["function"]["name"] == self.tool_choice] or self.tools

    def _grammar_call(self, prompt: str, tools: list[dict[str, Any]]) -> tuple[str, dict[str, int]]:
        from llama_cpp import LlamaGrammar

        grammar = LlamaGrammar.from_json_schema(json.dumps(tool_call_schema(tools)), verbose=False)
        text, usage = self._complete(prompt + "<tool_call>\n", grammar=grammar)
        return "<tool_call>" + text + "</tool_call>", usage

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        prompt = self.render(messages)
        names = [t["function"]["name"] for t in self.tools]
        retried = False
        if self.tools and self.tool_choice:  # a call is required: generate it under the grammar directly
            text, usage = self._grammar_call(prompt, self._forced_tools())
            retried = True
        else:
            text, usage = self._complete(prompt)
        content, calls, attempted = parse_tool_calls(text, names)
        if attempted and self.tools and self.grammar_retry and not retried:
            text2, usage2 = self._grammar_call(prompt, self.tools)
            _, calls, _ = parse_tool_calls(text2, names)
            usage = {k: usage.get(k, 0) + usage2.get(k, 0) for k in set(usage) | set(usage2)}
            retried = True
        tool_calls = [
            {"name": c["name"], "args": self._known_args(c), "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}
            for c in calls
        ]
        msg = AIMessage(
            content=content if not tool_calls else content,
            tool_calls=tool_calls,
            response_metadata={"raw": text, "grammar_retry": retried, "model": self.model_path},
            usage_metadata={
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
                "total_tokens": int(usage.get("total_tokens", 0)),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])
