"""The MCP server answering a real MCP client session (the SDK's client) over stdio and in-process."""

import json
import sys

import anyio
import pytest

mcp = pytest.importorskip("mcp")


def test_stdio_session(tmp_path):
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "triscale.cli", "mcp", "--workspace", str(tmp_path / "ws")],
        # no torch preload in the server's workers: this session uses xTB only
        env={"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "TRISCALE_WORKER_PRELOAD": ""},
    )

    async def session():
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
            names = {t.name for t in tools}
            assert {"build_molecule", "single_point", "equation_of_state", "submit_job"} <= names
            sp = next(t for t in tools if t.name == "single_point")
            assert "structure_id" in sp.input_schema["properties"] and sp.output_schema["properties"]["energy_eV"]
            built = await client.call_tool("build_molecule", {"name": "water"})
            assert not built.is_error and built.structured_content["structure_id"] == "st1"
            res = await client.call_tool("single_point", {"structure_id": "st1", "calculator": "gfn2-xtb"})
            assert not res.is_error
            assert res.structured_content["energy_eV"] == pytest.approx(-137.9678, abs=1e-3)
            assert json.loads(res.content[0].text)["structure_id"] == "st1"  # compact JSON text for the model
            bad = await client.call_tool("single_point", {"structure_id": "st9"})
            assert (
                bad.is_error
                and "Unknown structure 'st9'" in bad.content[0].text
                and "st1 (water)" in bad.content[0].text
            )
            bad = await client.call_tool("single_point", {"structure_id": "st1", "calculater": "emt"})
            assert bad.is_error and "unknown argument 'calculater'" in bad.content[0].text

    anyio.run(session)
    assert (tmp_path / "ws" / "structures.db").exists()


def test_in_process_server_and_http_app(tmp_path):
    from mcp import Client

    from triscale.tools.mcp_server import build_server

    server = build_server(tmp_path / "ws", tools=["build_bulk", "equation_of_state"])

    async def session():
        async with Client(server) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"build_bulk", "equation_of_state"}
            cu = await client.call_tool("build_bulk", {"name": "Cu", "cubic": True})
            sid = cu.structured_content["structure_id"]
            eos = await client.call_tool("equation_of_state", {"structure_id": sid, "calculator": "emt"})
            assert eos.structured_content["lattice_constant_A"] == pytest.approx(3.59, abs=0.01)

    anyio.run(session)
    assert server.streamable_http_app() is not None  # the --http transport builds


def test_streamable_http_on_localhost(tmp_path):
    import socket
    import subprocess
    import time

    from mcp import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**__import__("os").environ, "TRISCALE_WORKER_PRELOAD": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "triscale.cli",
            "mcp",
            "--http",
            "--port",
            str(port),
            "--workspace",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        for _ in range(300):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)

        async def session():
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                r = await client.call_tool("build_bulk", {"name": "Cu", "cubic": True})
                assert not r.is_error and r.structured_content["n_atoms"] == 4
                r = await client.call_tool("single_point", {"structure_id": "st1", "calculator": "emt"})
                assert not r.is_error and r.structured_content["pressure_GPa"] is not None

        anyio.run(session)
    finally:
        proc.terminate()
        proc.wait(10)
