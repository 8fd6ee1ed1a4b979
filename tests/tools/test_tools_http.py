"""`triscale serve`: the tool registry over plain HTTP/JSON, with clear errors and nothing lost on bad input."""

import json
import threading
import urllib.error
import urllib.request

import pytest

from triscale.tools.http_server import make_server


@pytest.fixture()
def server(tmp_path):
    srv = make_server(tmp_path / "ws", port=0, ask=lambda q, s: {"answer": f"echo {q}", "results": [], "session": s})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def _call(url, body=None, raw: bytes | None = None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_lists_tools_and_runs_a_chain(server):
    status, health = _call(server + "/health")
    assert status == 200 and health["status"] == "ok"
    status, tools = _call(server + "/tools")
    names = {t["name"] for t in tools}
    assert status == 200 and {"build_molecule", "single_point"} <= names
    status, built = _call(server + "/tools/build_molecule", {"name": "H2O"})
    assert status == 200 and built["ok"], built
    sid = built["result"]["structure_id"]
    status, sp = _call(server + "/tools/single_point", {"structure_id": sid, "calculator": "emt"})
    assert status == 200 and sp["ok"] and isinstance(sp["result"]["energy_eV"], float)
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
    assert status == 404
    status, built = _call(server + "/tools/build_molecule", {"name": "CH4"})
    assert status == 200 and built["ok"]
    status, listed = _call(server + "/tools/list_structures", {})
    assert status == 200 and listed["ok"]
