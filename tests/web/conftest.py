"""Fixtures for the workbench tests: the app on a free loopback port with a scripted chat model, and headless
Chromium (Debian's chromium + chromium-driver) driven by Selenium. The browser tests skip, saying why, when either
is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest.importorskip("langchain")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
        if p and Path(p).exists()
    ),
    None,
)
DRIVER = next(
    (p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "") if p and Path(p).exists()), None
)


class Script:
    """The turns the next session's scripted model plays (set by each test before it asks)."""

    def __init__(self) -> None:
        self.turns: list = []


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def web(tmp_path, script):
    """A running workbench whose agents play ``script.turns``; in-process calculations (fast, deterministic)."""
    from triscale.agents import ScienceAgent, ScriptedChatModel
    from triscale.web.app import web_server

    def factory(ws):
        return ScienceAgent(ScriptedChatModel(messages=iter(list(script.turns))), ws, memory=False)

    server = web_server(tmp_path / "root", port=0, agent_factory=factory, isolate=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium with software WebGL (SwiftShader), so 3Dmol.js draws without a GPU."""
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no Chromium/chromedriver found (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--ignore-gpu-blocklist",
        "--no-first-run",
        "--disable-extensions",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
