"""The workbench's HTTP side without a browser: the shared guard (Origin, Host, token), streamed events, cancel."""

from __future__ import annotations

import json
import time

import httpx
import pytest


def _events(client: httpx.Client, ask_id: str, timeout: float = 120) -> list[dict]:
    out = []
    with client.stream("GET", f"/api/ask/{ask_id}/events", timeout=timeout) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("data:"):
                out.append(json.loads(line[5:]))
    return out


def test_foreign_origin_and_host_are_refused(web):
    with httpx.Client(base_url=web.url, timeout=60) as c:
        r = c.post("/api/ask", json={"question": "hi"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and "Origin" in r.json()["error"]
        r = c.post("/api/upload", json={"filename": "a.xyz", "content": "x"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert c.get("/api/session", headers={"Host": "evil.example"}).status_code == 421
        # the page's own origin passes
        assert c.get("/api/session", headers={"Origin": web.url}).status_code == 200
        # POST bodies are JSON only (a cross-site form cannot post here)
        r = c.post("/api/ask", content=b"question=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
    assert not list((web.app.state.workbench.root / "sessions").glob("*/agent_runs"))


def test_token_from_header_or_cookie_and_public_shell(tmp_path):
    from triscale.web.app import TOKEN_COOKIE, web_server

    server = web_server(tmp_path / "root", port=0, token="s3cret", isolate=False).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.get("/").status_code == 200  # the static shell: no data in it
            assert c.get("/static/app.js").status_code == 200
            assert c.get("/api/session").status_code == 401
            assert c.get("/api/session", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get("/api/session", headers={"Authorization": "Bearer s3cret"}).status_code == 200
            c.cookies.set(TOKEN_COOKIE, "s3cret")
            assert c.get("/api/structures").status_code == 200
    finally:
        server.stop()


def test_sessions_get_their_own_workspaces(web):
    body = {"filename": "h2.xyz", "content": "2\n\nH 0 0 0\nH 0 0 0.74\n"}
    with httpx.Client(base_url=web.url, timeout=60) as a, httpx.Client(base_url=web.url, timeout=60) as b:
        assert a.post("/api/upload", json=body).json()["result"]["structure_id"] == "st1"
        assert [r["id"] for r in a.get("/api/structures").json()] == ["st1"]
        assert b.get("/api/structures").json() == []
        assert b.get("/api/structures/st1").status_code == 404
        wa, wb = a.get("/api/session").json()["workspace"], b.get("/api/session").json()["workspace"]
        assert wa != wb and wa.startswith(str(web.app.state.workbench.root / "sessions"))
        # a bad file is refused with the tool's message, and a path cannot leave the workspace
        r = a.post("/api/upload", json={"filename": "bad.cif", "content": "not a cif"})
        assert r.status_code == 400 and "bad.cif" in r.json()["error"]
        assert a.get("/api/files/../../etc/passwd").status_code in (400, 404)
        assert a.get("/api/trajectory", params={"path": "/etc/passwd"}).status_code == 404


def test_events_stream_in_order_with_results(web, script):
    script.turns = [
        {"tool": "build_bulk", "args": {"name": "Cu"}},
        {"tool": "equation_of_state", "args": {"structure_id": "${1.structure_id}", "calculator": "emt"}},
        "Done.",
    ]
    with httpx.Client(base_url=web.url, timeout=60) as c:
        ask_id = c.post("/api/ask", json={"question": "EOS of Cu"}).json()["ask_id"]
        assert c.post("/api/ask", json={"question": "again"}).status_code in (200, 409)  # 409 while running
        events = _events(c, ask_id)
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "done"
        starts = [e for e in events if e["type"] == "tool_start"]
        ends = [e for e in events if e["type"] == "tool_end"]
        assert [e["name"] for e in starts] == ["build_bulk", "equation_of_state"]
        assert [e["index"] for e in ends] == [1, 2] and all(e["ok"] for e in ends)
        assert kinds.index("tool_start") < kinds.index("tool_end") < kinds.index("answer")
        eos = ends[1]
        assert eos["plot"] == f"/api/plot/{eos['call_id']}.svg"
        assert eos["result"]["volumes_A3"] == "[9 values]"  # long lists shortened for display
        answer = next(e for e in events if e["type"] == "answer")
        props = {r["property"]: r for r in answer["results"]}
        assert 100 < props["bulk_modulus"]["value"] < 180 and props["bulk_modulus"]["unit"] == "GPa"
        svg = c.get(eos["plot"])
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg")
        assert b"<svg" in svg.content and b"GPa" in svg.content
        run = c.get(f"/api/runs/{answer['run_id']}").json()
        assert [e["kind"] for e in run["entries"]][0] == "run_start"
        wf = c.get(f"/api/runs/{answer['run_id']}/workflow.yaml")
        assert wf.status_code == 200 and "equation_of_state" in wf.text and "${s1.structure_id}" in wf.text
        cif = c.get("/api/structures/st2/download", params={"format": "cif"})
        assert cif.status_code == 200 and b"_cell_length_a" in cif.content


@pytest.mark.slow  # a worker process starts (forkserver, imports): ~17 s here
def test_cancel_kills_the_running_calculation(tmp_path, script):
    """A long MD in a worker process is killed from the page's cancel; the run ends with what finished."""
    from triscale.agents import ScienceAgent, ScriptedChatModel
    from triscale.web.app import web_server

    script.turns = [
        {"tool": "build_bulk", "args": {"name": "Cu", "cubic": True, "repeat": [3, 3, 3]}},
        {
            "tool": "molecular_dynamics",
            "args": {"structure_id": "${1.structure_id}", "calculator": "emt", "steps": 200000, "temperature_K": 300},
        },
        {"tool": "single_point", "args": {"structure_id": "${1.structure_id}", "calculator": "emt"}},
        "Stopped.",
    ]

    def factory(ws):
        return ScienceAgent(ScriptedChatModel(messages=iter(list(script.turns))), ws, memory=False)

    server = web_server(tmp_path / "root", port=0, agent_factory=factory, isolate=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            ask_id = c.post("/api/ask", json={"question": "long MD"}).json()["ask_id"]
            bench = server.app.state.workbench
            ask = next(iter(bench.sessions.values())).asks[ask_id]
            t0 = time.monotonic()
            while not any(e["type"] == "tool_start" and e["name"] == "molecular_dynamics" for e in ask.events):
                assert time.monotonic() - t0 < 120, ask.events
                time.sleep(0.1)
            time.sleep(1.0)
            assert not ask.done
            assert c.post(f"/api/ask/{ask_id}/cancel", json={}).status_code == 200
            events = _events(c, ask_id, timeout=120)
        md = next(e for e in events if e["type"] == "tool_end" and e["name"] == "molecular_dynamics")
        assert not md["ok"] and "cancel" in md["content"].lower()
        after = [e for e in events if e["type"] == "tool_end" and e["name"] == "single_point"]
        assert all(not e["ok"] and "cancelled" in e["content"] for e in after)
        answer = next(e for e in events if e["type"] == "answer")
        assert answer["stop_reason"] == "cancelled"
    finally:
        server.stop()


@pytest.mark.parametrize("bad", [{"question": ""}, {"q": "x"}])
def test_bad_ask_bodies(web, bad):
    with httpx.Client(base_url=web.url, timeout=60) as c:
        r = c.post("/api/ask", json=bad)
        assert r.status_code == 400 and "question" in r.json()["error"]


def test_spectrum_and_orbital_level_plots(web, script):
    """The vibrational spectrum and the orbital level diagram appear inline, drawn from the tools' own results."""
    script.turns = [
        {"tool": "build_molecule", "args": {"name": "water"}},
        {"tool": "vibrational_analysis", "args": {"structure_id": "st1", "calculator": "gfn2-xtb"}},
        {"tool": "orbital_energies", "args": {"structure_id": "st1", "calculator": "gfn2-xtb"}},
        "Done.",
    ]
    with httpx.Client(base_url=web.url, timeout=60) as c:
        ask_id = c.post("/api/ask", json={"question": "IR spectrum and orbitals of water"}).json()["ask_id"]
        ends = {e["name"]: e for e in _events(c, ask_id, timeout=300) if e["type"] == "tool_end"}
        vib, orb = ends["vibrational_analysis"], ends["orbital_energies"]
        assert vib["ok"] and orb["ok"]
        spectrum = c.get(vib["plot"])
        assert spectrum.status_code == 200 and b"<svg" in spectrum.content and b"ZPE" in spectrum.content
        levels = c.get(orb["plot"])
        assert levels.status_code == 200 and b"<svg" in levels.content and b"gap" in levels.content


def test_pictures_a_tool_draws_are_shown(web, script):
    """A tool that draws its own picture (simulate_pde's field snapshots) gets it inline, served from the session's
    workspace."""
    script.turns = [
        {"tool": "simulate_pde", "args": {"pde": "burgers", "resolution": 64, "t_final": 0.05, "n_snapshots": 2}},
        "Done.",
    ]
    with httpx.Client(base_url=web.url, timeout=60) as c:
        ask_id = c.post("/api/ask", json={"question": "Burgers equation"}).json()["ask_id"]
        end = next(e for e in _events(c, ask_id, timeout=300) if e["type"] == "tool_end")
        assert end["ok"], end
        assert end["image"] and end["image"].startswith("/api/files/") and end["image"].endswith(".png")
        png = c.get(end["image"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_idle_sessions_beyond_the_cap_leave_memory_not_disk(tmp_path):
    """Every cookie-less request makes a session; memory must not grow without bound. The least recently used idle
    sessions are dropped past ``max_sessions``; a running one stays; a dropped one's workspace comes back."""
    from types import SimpleNamespace

    from triscale.web.app import Workbench

    bench = Workbench(tmp_path, agent_factory=lambda ws: None, max_sessions=2)
    first, _ = bench.session(None)
    (first.workspace.root / "notes.txt").write_text("kept")
    first.current = SimpleNamespace(done=False)  # a question running in it
    second, _ = bench.session(None)
    third, _ = bench.session(None)
    assert list(bench.sessions) == [first.id, third.id]  # second (idle, least recent) dropped; first runs
    first.current.done = True
    fourth, _ = bench.session(None)
    assert list(bench.sessions) == [third.id, fourth.id]
    again, new = bench.session(first.id)
    assert not new and again is not first and again.workspace.root == first.workspace.root
    assert (again.workspace.root / "notes.txt").read_text() == "kept" and len(bench.sessions) == 2
