"""The OpenAI-compatible backend's fallbacks for servers that refuse parts of the API (llama-cpp-python's server
answers tool_choice="required" with HTTP 500 and refuses a null assistant content), against an in-process
HTTP transport that behaves like that server. The real server is in test_openai_server.py (slow)."""

import json

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool


@tool
def build_molecule(name: str) -> str:
    """Build a molecule from its name."""
    return name


def _reply(message: dict) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.fixture
def server():
    """(llm, requests): a ChatOpenAI from make_llm's factory talking to a llama.cpp-like fake server."""
    from triscale.agents.llm import _openai_chat

    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        if body.get("tool_choice") == "required":
            return httpx.Response(500, json={"error": {"message": "AssertionError"}})
        if any(m["role"] == "assistant" and m.get("content") is None for m in body["messages"]):
            return httpx.Response(500, json={"error": {"message": "content: Input should be a valid string"}})
        call = {"id": "c1", "type": "function", "function": {"name": "build_molecule", "arguments": '{"name": "CO"}'}}
        return httpx.Response(200, json=_reply({"role": "assistant", "content": None, "tool_calls": [call]}))

    llm = _openai_chat(
        model="m",
        base_url="http://fake/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    return llm, requests


def test_forced_tool_choice_falls_back_to_auto(server):
    llm, requests = server
    bound = llm.bind_tools([build_molecule], tool_choice="any")
    msg = bound.invoke("Build CO.")
    assert msg.tool_calls[0]["args"] == {"name": "CO"}
    assert [r.get("tool_choice") for r in requests] == ["required", "auto"]
    bound.invoke("Build CO again.")  # remembered: no second refused request
    assert [r.get("tool_choice") for r in requests] == ["required", "auto", "auto"]
    # a named tool is not forced-any: sent as it is
    llm.bind_tools([build_molecule], tool_choice="build_molecule").invoke("Build CO.")
    assert requests[-1]["tool_choice"]["function"]["name"] == "build_molecule"


def test_streamed_forced_call_falls_back_too(server):
    llm, requests = server
    llm.streaming = False
    chunks = list(llm.bind_tools([build_molecule], tool_choice="any").stream("Build CO."))
    assert chunks and [r.get("tool_choice") for r in requests] == ["required", "auto"]


def test_tool_call_turns_are_sent_with_empty_content(server):
    llm, requests = server
    history = [
        HumanMessage("Build CO."),
        AIMessage("", tool_calls=[{"name": "build_molecule", "args": {"name": "CO"}, "id": "c1"}]),
        ToolMessage("st1", tool_call_id="c1"),
    ]
    llm.bind_tools([build_molecule]).invoke(history)
    assistant = [m for m in requests[-1]["messages"] if m["role"] == "assistant"]
    assert assistant and assistant[0]["content"] == "" and assistant[0]["tool_calls"]


def test_other_errors_are_not_retried(server):
    from triscale.agents.llm import _openai_chat

    def handler(request):
        return httpx.Response(500, json={"error": {"message": "down"}})

    llm = _openai_chat(
        model="m", base_url="http://fake/v1", api_key="k", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )  # fmt: skip
    import openai

    with pytest.raises(openai.InternalServerError):
        llm.bind_tools([build_molecule]).invoke("Build CO.")  # not forced: the error is the server's


def test_streamed_tool_call_names_are_not_repeated():
    """llama-cpp-python's server repeats the function name in every streamed chunk of a call."""
    from triscale.agents.llm import _openai_chat

    def chunk(delta, finish=None):
        body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return f"data: {json.dumps(body)}\n\n"

    def call_delta(args, first=False):
        d = {"index": 0, "type": "function", "function": {"name": "build_molecule", "arguments": args}}
        if first:
            d["id"] = "c1"
        return {"role": "assistant", "content": None, "tool_calls": [d]}

    sse = chunk(call_delta('{"name": ', True)) + chunk(call_delta('"methane"')) + chunk(call_delta("}"))
    sse += chunk({}, "tool_calls") + "data: [DONE]\n\n"

    def handler(request):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse.encode())

    llm = _openai_chat(
        model="m", base_url="http://fake/v1", api_key="k", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )  # fmt: skip
    total = None
    for c in llm.bind_tools([build_molecule]).stream("Build methane."):
        total = c if total is None else total + c
    expected = {"name": "build_molecule", "args": {"name": "methane"}, "id": "c1", "type": "tool_call"}
    assert total.tool_calls == [expected]
