"""`triscale serve`: the tool registry over HTTP/JSON (Starlette on uvicorn), with the transport checks of the MCP
SDK (Host, Origin, token, Content-Type, body size), concurrency, and cancellation when a client leaves.

Every test runs a real uvicorn server on a free port in a background thread and talks to it over TCP.
"""

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from typer.testing import CliRunner

from triscale.cli import app as cli_app
from triscale.tools.errors import ToolInputError
from triscale.tools.http_server import TriscaleServer


def _ask(question, session, cancel):
    return {"answer": f"echo {question}", "results": [], "session": session}


@pytest.fixture()
def start(tmp_path):
    servers = []

    def _start(**kwargs):
        kwargs.setdefault("port", 0)
        srv = TriscaleServer(tmp_path / "ws", **kwargs).start()
        servers.append(srv)
        return srv

    yield _start
    for srv in servers:
        srv.stop()


@pytest.fixture()
def server(start):
    return start(ask=_ask).url


def _call(url, body=None, raw: bytes | None = None, headers=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    with httpx.Client(timeout=120) as client:
        resp = client.request("GET" if data is None else "POST", url, content=data, headers=hdrs)
    return resp.status_code, resp.json()


def _raw_request(port: int, text: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(text.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _calls(tmp_path):
    p = tmp_path / "ws" / "calls.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_lists_tools_and_runs_a_chain(server):
    status, health = _call(server + "/health")
    assert status == 200 and health["status"] == "ok"
    status, tools = _call(server + "/tools")
    names = {t["name"] for t in tools}
    assert status == 200 and {"build_molecule", "single_point"} <= names
    status, built = _call(server + "/tools/build_molecule", {"name": "H2O"})
    assert status == 200 and built["ok"], built
    assert built["result"]["formula"] == "H2O"
    status, cu = _call(server + "/tools/build_bulk", {"name": "Cu"})
    assert status == 200 and cu["ok"], cu
    status, sp = _call(
        server + "/tools/single_point", {"structure_id": cu["result"]["structure_id"], "calculator": "emt"}
    )
    assert status == 200 and sp["ok"], sp
    assert isinstance(sp["result"]["energy_eV"], float) and sp["result"]["method"] == "emt"
    status, answer = _call(server + "/ask", {"question": "hi", "session": "s1"})
    assert status == 200 and answer["answer"] == "echo hi" and answer["session"] == "s1"


def test_bad_requests_get_clear_errors_and_the_store_survives(server):
    status, err = _call(server + "/tools/singel_point", {})
    assert status == 404 and "single_point" in err["error"]  # suggests the close match
    status, err = _call(server + "/tools/single_point", {"structure_id": "st999", "calculator": "emt"})
    assert status == 400 and not err["ok"] and "st999" in err["error"]
    status, err = _call(server + "/tools/build_molecule", {"name": "H2O", "bogus": 1})
    assert status == 400 and err["error_type"] == "ToolInputError"
    status, err = _call(server + "/tools/build_molecule", raw=b"{not json")
    assert status == 400 and "JSON" in err["error"]
    status, err = _call(server + "/ask", {"question": ""})
    assert status == 400
    status, err = _call(server + "/nowhere", {})
    assert status == 404 and err["error_type"] == "NotFound"
    status, built = _call(server + "/tools/build_molecule", {"name": "CH4"})
    assert status == 200 and built["ok"]
    status, listed = _call(server + "/tools/list_structures", {})
    assert status == 200 and listed["ok"]


def test_host_and_origin_checks_stop_other_sites_and_dns_rebinding(start):
    srv = start(allowed_origins=["http://localhost:3000"])
    url = srv.url
    # a page on another origin (CSRF), and a rebound name whose Host is not ours (DNS rebinding)
    status, err = _call(url + "/tools/build_molecule", {"name": "H2O"}, headers={"Origin": "http://evil.example"})
    assert status == 403 and err["error_type"] == "Forbidden"
    status, err = _call(url + "/health", headers={"Origin": "null"})
    assert status == 403
    status, err = _call(url + "/health", headers={"Host": f"evil.example:{srv.port}"})
    assert status == 421 and "evil.example" in err["error"]
    status, err = _call(
        url + "/health", headers={"Host": f"evil.example:{srv.port}", "Origin": f"http://evil.example:{srv.port}"}
    )
    assert status == 421  # same-origin from the rebound page's point of view: the Host check stops it
    reply = _raw_request(srv.port, "GET /health HTTP/1.0\r\n\r\n")  # no Host header at all
    assert reply.startswith(b"HTTP/1.1 400")
    # allowed: no Origin (curl, scripts), our own origin, a listed origin, the loopback names
    assert _call(url + "/health")[0] == 200
    assert _call(url + "/health", headers={"Origin": url})[0] == 200
    assert _call(url + "/health", headers={"Origin": "http://localhost:3000"})[0] == 200
    assert _call(url + "/health", headers={"Host": f"localhost:{srv.port}"})[0] == 200
    status, built = _call(url + "/tools/build_molecule", {"name": "H2O"}, headers={"Origin": url})
    assert status == 200 and built["ok"]


def test_token_is_required_when_configured(start):
    srv = start(token="s3cret-token")
    status, err = _call(srv.url + "/health")
    assert status == 401 and err["error_type"] == "Unauthorized"
    assert _call(srv.url + "/health", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert _call(srv.url + "/health", headers={"Authorization": "Basic s3cret-token"})[0] == 401
    status, err = _call(srv.url + "/tools/build_molecule", {"name": "H2O"})
    assert status == 401
    status, built = _call(
        srv.url + "/tools/build_molecule", {"name": "H2O"}, headers={"Authorization": "Bearer s3cret-token"}
    )
    assert status == 200 and built["ok"]
    assert _call(srv.url + "/health", headers={"Authorization": "Bearer s3cret-token"})[0] == 200


def test_refuses_to_bind_beyond_loopback_without_a_token(start, tmp_path, monkeypatch):
    with pytest.raises(ToolInputError, match="without a token"):
        TriscaleServer(tmp_path / "ws", host="0.0.0.0", port=0)
    monkeypatch.delenv("TRISCALE_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--workspace", str(tmp_path / "ws"), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "TRISCALE_TOKEN" in result.output
    # with a token it serves on every interface; the Host check still applies
    srv = start(host="0.0.0.0", token="tok")
    auth = {"Authorization": "Bearer tok"}
    assert _call(f"http://127.0.0.1:{srv.port}/health", headers=auth)[0] == 200
    assert _call(f"http://127.0.0.1:{srv.port}/health", headers={**auth, "Host": "evil.example"})[0] == 421


def test_content_type_and_body_size_are_checked(start):
    srv = start(max_body_bytes=1000)
    with httpx.Client(base_url=srv.url, timeout=30) as client:
        r = client.post("/tools/build_molecule", content=b'{"name": "H2O"}')  # no Content-Type
        assert r.status_code == 415 and r.json()["error_type"] == "UnsupportedMediaType"
        r = client.post("/tools/build_molecule", data={"name": "H2O"})  # an HTML form
        assert r.status_code == 415
        r = client.post("/tools/build_molecule", json={"name": "H2O", "pad": "x" * 2000})
        assert r.status_code == 413 and r.json()["error_type"] == "PayloadTooLarge"
        r = client.post(
            "/tools/build_molecule", json={"name": "H2O"}, headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert r.status_code == 200
    # a chunked body has no Content-Length: the limit is counted while it streams in
    chunk = b"x" * 600
    body = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    head = (
        f"POST /tools/build_molecule HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.encode() + body + body)  # 1200 bytes in two chunks, never terminated
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_many_clients_at_once_and_an_idle_connection_blocks_nobody(start):
    srv = start()
    idle = socket.create_connection(("127.0.0.1", srv.port))  # connects, sends nothing
    partial = socket.create_connection(("127.0.0.1", srv.port))
    partial.sendall(b"POST /tools/build_molecule HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half a request
    try:

        async def burst():
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=srv.url, limits=limits, timeout=60) as client:
                return await asyncio.gather(*(client.get("/health") for _ in range(200)), return_exceptions=True)

        replies = asyncio.run(burst())
        failures = [r for r in replies if not isinstance(r, httpx.Response) or r.status_code != 200]
        assert not failures, failures[:3]
        assert _call(srv.url + "/tools/build_molecule", {"name": "H2O"})[0] == 200
    finally:
        idle.close()
        partial.close()


def test_a_client_that_leaves_cancels_its_calculation_and_heavy_calls_queue(start, tmp_path):
    srv = start(max_workers=1)
    status, cu = _call(srv.url + "/tools/build_bulk", {"name": "Cu", "cubic": True})
    assert status == 200, cu
    status, big = _call(
        srv.url + "/tools/make_supercell", {"structure_id": cu["result"]["structure_id"], "repeat": [4, 4, 4]}
    )
    assert status == 200, big
    sid = big["result"]["structure_id"]
    md = json.dumps({"structure_id": sid, "calculator": "emt", "steps": 200000, "interval": 10000}).encode()
    leaver = socket.create_connection(("127.0.0.1", srv.port))
    leaver.sendall(
        (
            f"POST /tools/molecular_dynamics HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(md)}\r\n\r\n"
        ).encode()
        + md
    )
    with ThreadPoolExecutor(1) as pool:
        # one calculation slot: a second heavy call waits for it (it is not refused) ...
        waiting = pool.submit(
            _call, srv.url + "/tools/single_point", {"structure_id": cu["result"]["structure_id"], "calculator": "emt"}
        )
        # ... while instant calls are still answered
        assert _call(srv.url + "/tools/list_structures", {})[0] == 200
        time.sleep(2.0)  # the MD call is running in its worker
        assert not waiting.done()
        leaver.close()  # the client leaves mid-call
        status, sp = waiting.result(timeout=120)
    assert status == 200 and sp["ok"], sp
    entries = _calls(tmp_path)
    md_entries = [e for e in entries if e["tool"] == "molecular_dynamics"]
    assert len(md_entries) == 1 and md_entries[0]["status"] == "error", md_entries
    assert "cancel" in md_entries[0]["error"]
    # the queued call ran only once the cancelled one had stopped
    order = [e["tool"] for e in entries]
    assert order.index("molecular_dynamics") < order.index("single_point")


def test_ask_past_its_time_limit_cancels_the_run(start):
    """/ask hands its handler the request's cancel token: past ``request_timeout_s`` (or when the client leaves) the
    token is set, so the agent's run (ScienceAgent.ask(cancel=...)) stops instead of computing on for nobody."""
    import threading
    import time

    seen = threading.Event()

    def slow_ask(question, session, cancel):
        t0 = time.monotonic()
        while not cancel.cancelled and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        if cancel.cancelled:
            seen.set()
        return {"answer": "stopped" if cancel.cancelled else "ran on", "results": []}

    url = start(ask=slow_ask, request_timeout_s=1.0).url
    _call(url + "/ask", {"question": "long"})
    assert seen.wait(10)
