"""The learner's path in a real browser: JupyterLab, the project's kernel, an ipywidgets control.

Learners open the notebooks in JupyterLab and move sliders; papermill and nbval never render a
widget. This test starts JupyterLab on loopback, opens a notebook in headless Chromium, runs a
cell that shows a control through :func:`optkit.course.notebook.explore` (what every lesson uses), moves
the control and checks that the output follows. On failure it saves a screenshot into the test
run's folder (``OPTKIT_RUN_DIR``, set by ``make test``) or pytest's temporary folder.

It runs as its own stage of ``make test`` (marker ``browser``), not in the unit stage. It needs
Debian's ``chromium`` (``apt-get install chromium``; CI installs it) and Playwright (in the
``notebooks`` extra); without them it skips and says how to enable it.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDGET_CELL = ("from optkit.course import notebook\nfrom optkit.techniques import quantize\n"
               "notebook.explore(lambda bits: print('integer range', quantize.qrange(bits)), bits=(2, 8))")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on loopback serving one notebook; yields (url, folder)."""
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: install Debian's package (`sudo apt-get install chromium`) "
                    "to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="Playwright is missing: `make env` installs it "
                                                      "(the notebooks extra)")
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(WIDGET_CELL)]
    nb.metadata["kernelspec"] = {"name": "optkit", "display_name": "Python (optkit)", "language": "python"}
    nbformat.write(nb, str(root / "widget_check.ipynb"))
    port, token = _free_port(), secrets.token_hex(16)
    # A learner's session: widgets live (no OPTKIT_STATIC), the project's kernel, loopback only.
    env = {k: v for k, v in os.environ.items() if k != "OPTKIT_STATIC"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail("JupyterLab did not start: " + (tmp_path / "jupyterlab.log").read_text()[-2000:])
            time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}/lab/tree/widget_check.ipynb?token={token}", tmp_path
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


def test_a_widget_control_changes_the_output_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    url, tmp = lab
    shots = Path(os.environ.get("OPTKIT_RUN_DIR") or tmp)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        try:
            page.goto(url)
            page.wait_for_function(KERNEL_IDLE, timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            first = page.wait_for_selector(".jp-OutputArea-output:has-text('integer range')", timeout=90_000)
            assert "(-16, 15)" in first.inner_text()  # the slider's default: the middle of 2..8 bits
            handle = page.wait_for_selector(".jupyter-widgets .noUi-handle", timeout=30_000)
            handle.focus()
            page.keyboard.press("ArrowRight")  # 5 -> 6 bits, as a learner's arrow key would
            page.wait_for_selector(".jp-OutputArea-output:has-text('integer range (-32, 31)')", timeout=30_000)
            # explore() shows the control and the output, not the repr of the function behind it
            assert "<function" not in page.inner_text(".jp-Notebook")
        except Exception:
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "browser-failure.png"))
            raise
        finally:
            browser.close()
