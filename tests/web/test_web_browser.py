"""The workbench in a real browser (headless Chromium via Selenium): the page, a streamed question with its results
table and EOS plot, the 3D viewer on a molecule and a crystal (pixels read from a screenshot), uploads, provenance."""

from __future__ import annotations

import io
import time

import pytest

EOS_SCRIPT = [
    {"tool": "build_bulk", "args": {"name": "Cu"}},
    {"tool": "equation_of_state", "args": {"structure_id": "${1.structure_id}", "calculator": "emt"}},
    "The EMT equation of state of fcc Cu: see the table.",
]
WATER = "3\nwater\nO 0.000 0.000 0.119\nH 0.000 0.763 -0.477\nH 0.000 -0.763 -0.477\n"
NACL_POSCAR = """NaCl rocksalt
5.64
1.0 0.0 0.0
0.0 1.0 0.0
0.0 0.0 1.0
Na Cl
4 4
Direct
0.0 0.0 0.0
0.0 0.5 0.5
0.5 0.0 0.5
0.5 0.5 0.0
0.5 0.5 0.5
0.5 0.0 0.0
0.0 0.5 0.0
0.0 0.0 0.5
"""


def _wait(fn, timeout: float = 60.0, what: str = "condition"):
    t0 = time.monotonic()
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _non_background(driver, element_id: str) -> int:
    """Pixels of the element's screenshot that differ from its white background."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.ID, element_id).screenshot_as_png
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(1 for r, g, b in img.getdata() if r < 235 or g < 235 or b < 235)


def _upload(driver, tmp_path, name: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    f = tmp_path / name
    f.write_text(text)
    driver.find_element(By.CSS_SELECTOR, 'nav button[data-tab="upload"]').click()
    driver.find_element(By.ID, "upload-file").send_keys(str(f))
    driver.find_element(By.ID, "upload").click()


def test_page_loads(web, browser):
    from selenium.webdriver.common.by import By

    browser.get(web.url + "/")
    assert browser.title == "TriScale workbench"
    ws = _wait(lambda: browser.find_element(By.ID, "workspace").text, what="the session info")
    assert "sessions" in ws and "0 structures" in ws
    assert browser.execute_script("return typeof $3Dmol") == "object"  # the vendored viewer, served locally
    assert browser.find_element(By.ID, "cancel").get_attribute("disabled") is not None


def test_question_streams_tool_calls_results_plot_and_provenance(web, browser, script):
    from selenium.webdriver.common.by import By

    script.turns = EOS_SCRIPT
    browser.get(web.url + "/")
    browser.find_element(By.ID, "question").send_keys("Equation of state of fcc Cu with EMT")
    browser.find_element(By.ID, "ask").click()
    table = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".answer table.results"), what="the results table")
    tools = browser.find_elements(By.CSS_SELECTOR, ".tool")
    assert [t.get_attribute("data-tool") for t in tools] == ["build_bulk", "equation_of_state"]
    assert all("ok" in t.get_attribute("class").split() for t in tools)
    assert all(" s" in t.find_element(By.CSS_SELECTOR, ".status").text for t in tools)  # wall time shown
    assert '"calculator":"emt"' in tools[1].find_element(By.CSS_SELECTOR, ".args").text
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r for r in table[0].find_elements(By.TAG_NAME, "tr")[1:]}
    bulk = rows["bulk_modulus"].find_elements(By.TAG_NAME, "td")
    assert 100 < float(bulk[1].text) < 180 and bulk[3].text == "GPa" and bulk[4].text == "emt"
    # the EOS plot: an SVG image that loaded
    img = tools[1].find_element(By.CSS_SELECTOR, "img.plot")
    _wait(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img), what="plot")
    assert browser.find_element(By.ID, "cancel").get_attribute("disabled") is not None  # finished
    # the run id opens its provenance: model turns, tool calls, versions
    browser.find_element(By.CSS_SELECTOR, ".answer a.run").click()
    detail = _wait(
        lambda: (
            browser.find_element(By.ID, "run-detail").text
            if "equation_of_state" in browser.find_element(By.ID, "run-detail").text
            else ""
        ),
        what="the run's provenance",
    )
    assert "model turn 1" in detail and "versions:" in detail and "ase" in detail
    assert browser.find_elements(By.CSS_SELECTOR, "#run-detail img.plot")


def test_viewer_draws_a_molecule_and_a_crystal(web, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(web.url + "/")
    _wait(lambda: browser.find_element(By.ID, "workspace").text, what="the session info")
    blank = _non_background(browser, "viewer")
    _upload(browser, tmp_path, "water.xyz", WATER)
    _wait(lambda: "st1 · H2O · 3 atoms" in browser.find_element(By.ID, "viewer-title").text, what="water in the viewer")
    time.sleep(0.5)
    molecule = _non_background(browser, "viewer")
    assert molecule > blank + 500, (blank, molecule)
    assert "periodic" not in browser.find_element(By.ID, "viewer-title").text

    _upload(browser, tmp_path, "POSCAR", NACL_POSCAR)
    _wait(lambda: "st2 · Na4Cl4 · 8 atoms" in browser.find_element(By.ID, "viewer-title").text, what="NaCl")
    assert "unit cell drawn" in browser.find_element(By.ID, "viewer-title").text
    time.sleep(0.5)
    crystal = _non_background(browser, "viewer")
    assert crystal > blank + 2000, (blank, crystal)
    # the upload is in the structure list, with its import's record
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="structures"]').click()
    rows = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#structures tr")[1:], what="structure rows")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["st2", "st1"]
    assert all("import_structure" in r.text for r in rows)


def test_upload_refuses_a_bad_file_with_the_tools_message(web, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(web.url + "/")
    _wait(lambda: browser.find_element(By.ID, "workspace").text, what="the session info")
    _upload(browser, tmp_path, "broken.cif", "data_x\nthis is not a cif\n")
    msg = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload-result .error"), what="the error")
    assert "broken.cif" in msg[0].text


@pytest.fixture(autouse=True)
def _fresh_cookies(browser):
    """Each test is a new browser session (its own workspace)."""
    browser.delete_all_cookies()
    yield
