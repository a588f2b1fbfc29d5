"""Render the notebooks' widgets in a real JupyterLab server driven by headless Chromium."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import REPO_ROOT
from servers import free_port, wait_for_http

if TYPE_CHECKING:
    from playwright.sync_api import Page

logger = logging.getLogger(__name__)

NOTEBOOK = REPO_ROOT / "notebooks" / "01_explore.ipynb"
SCREENSHOT = REPO_ROOT / "docs" / "explorer.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

SERVER_START_TIMEOUT_S = 120
SERVER_STOP_TIMEOUT_S = 30
KERNEL_IDLE_TIMEOUT_S = 120
# Bound on Run All Cells. The real notebook loads the offline model and runs three explorers in about 10 s on
# two shared CPU cores, so this leaves room for a slow CI runner.
RUN_ALL_TIMEOUT_S = 240
LOG_TAIL_CHARS = 4000
MIN_SCREENSHOT_BYTES = 10_000
MIN_IMAGE_WIDTH_PX = 100

# JupyterLab 4's status bar shows "<kernel name> | Idle" once the notebook's kernel is connected and idle.
KERNEL_IDLE_TEXT = re.compile(r" \| Idle$")

WIDGET_IMAGES = ".jp-OutputArea-output img.jupyter-widgets, .jp-OutputArea-output .jupyter-widgets img"

# Polled in the page: "traceback", "widget-error" or "dialog" as soon as the run fails, and "done" once no
# cell is running or queued and at least one widget image is shown and loaded. Otherwise null, so that
# polling continues.
RUN_STATE_JS = """(selector) => {
    const stderr = document.querySelectorAll(
        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]');
    if ([...stderr].some((node) => node.textContent.includes("Traceback"))) return "traceback";
    if (document.body.innerText.includes("Error displaying widget")) return "widget-error";
    if (document.querySelector(".jp-Dialog")) return "dialog";

    // JupyterLab shows "[*]" in the input prompt of a running or queued cell.
    const prompts = document.querySelectorAll(".jp-InputPrompt");
    if ([...prompts].some((prompt) => prompt.textContent.includes("*"))) return null;

    const images = [...document.querySelectorAll(selector)];
    if (images.length > 0 && images.every((img) => img.complete)) return "done";
    return null;
}"""


@dataclass
class JupyterLabServer:
    """A running JupyterLab server: its address, access token and log file."""

    base_url: str
    token: str
    root_dir: Path
    log_path: Path

    def notebook_url(self, name: str) -> str:
        return f"{self.base_url}/lab/tree/{name}?token={self.token}"

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- JupyterLab log, last {LOG_TAIL_CHARS} characters ---\n{text[-LOG_TAIL_CHARS:]}"


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the server, then kill whatever is left of its process group, kernels included."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("JupyterLab (pid %d) ignored SIGTERM for %d s, killing its process group",
                           process.pid, SERVER_STOP_TIMEOUT_S)

    # The server shuts its kernels down on SIGTERM. The group kill catches any kernel it left behind.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def write_user_settings(settings_dir: Path) -> None:
    """Turn off JupyterLab's news prompt, which would otherwise cover part of the screenshot."""
    notification = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))


@pytest.fixture
def lab_root(tmp_path) -> Path:
    """Root folder of the JupyterLab server, so that checkpoints and outputs stay out of the repository."""
    root = tmp_path / "notebooks"
    root.mkdir()
    return root


@pytest.fixture
def jupyter_lab(tmp_path, lab_root, tracking_uri):
    """Start JupyterLab on a free port of 127.0.0.1 with a random token, and stop it afterwards."""
    port = free_port()
    token = secrets.token_hex(16)
    server = JupyterLabServer(base_url=f"http://127.0.0.1:{port}", token=token, root_dir=lab_root,
                              log_path=tmp_path / "jupyterlab.log")

    # The kernel inherits this environment, set by conftest.py: offline hubs, the test's MLflow store, and
    # the session's feature cache and output folder.
    # JUPYTER_DATA_DIR stays as it is, so the ipywidgets lab extension in the venv is still found.
    env = dict(os.environ)
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "jupyter-runtime")
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter-config")
    env["IPYTHONDIR"] = str(tmp_path / "ipython")
    write_user_settings(tmp_path / "jupyter-config" / "lab" / "user-settings")

    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={lab_root}",
        "--ServerApp.terminals_enabled=False",
        # Keep JupyterLab offline: no news feed, no update check, no PyPI extension manager.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]

    logger.info("starting JupyterLab on %s with root %s", server.base_url, lab_root)
    with server.log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=env, cwd=lab_root, start_new_session=True)
    try:
        started = time.monotonic()
        wait_for_http(f"{server.base_url}/api/status?token={server.token}", process, SERVER_START_TIMEOUT_S,
                      "JupyterLab", server.log_tail)
        logger.info("JupyterLab served /api/status after %.1f s", time.monotonic() - started)
        yield server
    finally:
        stop_server(process)
        logger.info("JupyterLab stopped with code %s", process.returncode)


@dataclass
class BrowserPage:
    """A Playwright page with the console errors and uncaught exceptions it has logged so far."""

    page: Page
    console_errors: list[str]


@pytest.fixture
def open_page():
    """Yield a function that opens a page in headless Debian Chromium. The browser closes at teardown.

    The browser starts inside the test, so that a missing Chromium fails the test rather than its setup.
    """
    from playwright.sync_api import sync_playwright

    with contextlib.ExitStack() as cleanup:

        def launch() -> BrowserPage:
            assert CHROMIUM.is_file(), (f"{CHROMIUM} not found: install Debian's chromium package "
                                        "(apt-get install chromium) to run the browser tests")
            playwright = cleanup.enter_context(sync_playwright())
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            cleanup.callback(browser.close)

            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            session = BrowserPage(page=page, console_errors=[])

            def record_console(message) -> None:
                if message.type == "error":
                    session.console_errors.append(message.text)

            page.on("console", record_console)
            page.on("pageerror", lambda error: session.console_errors.append(str(error)))
            return session

        yield launch


def write_standin_notebook(path: Path) -> None:
    """Write a notebook that shows an ipywidgets VBox around an Image of a matplotlib horizontal bar chart."""
    import nbformat

    source = """\
import io

import ipywidgets
from matplotlib.figure import Figure

figure = Figure(figsize=(5, 3), dpi=100)
axes = figure.add_subplot()
axes.barh(["circle", "square", "triangle"], [0.62, 0.27, 0.11])
axes.set_xlabel("probability")
figure.tight_layout()

png = io.BytesIO()
figure.savefig(png, format="png")
ipywidgets.VBox([ipywidgets.Label("Top classes"), ipywidgets.Image(value=png.getvalue(), format="png")])
"""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# Widget stand-in"), nbformat.v4.new_code_cell(source)]
    nbformat.write(notebook, path)


def copy_without_outputs(source: Path, target: Path) -> None:
    """Copy a notebook with its outputs cleared, so that only outputs of this run can pass or fail the test.

    A saved widget output whose widget state was not saved renders as "Error displaying widget".
    """
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, target)


def failure_context(server: JupyterLabServer, browser: BrowserPage) -> str:
    console = "\n".join(browser.console_errors[-20:]) or "(none)"
    return f"--- browser console errors ---\n{console}\n{server.log_tail()}"


def run_notebook_in_browser(server: JupyterLabServer, browser: BrowserPage, name: str, screenshot: Path) -> None:
    """Open a notebook in JupyterLab, run all cells, and assert that every widget image renders without errors."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page = browser.page

    started = time.monotonic()
    page.goto(server.notebook_url(name), wait_until="domcontentloaded")

    # Wait for the status bar's kernel status, not the toolbar's execution indicator, which can read "idle"
    # before a kernel exists. Running cells without a kernel opens a "Select Kernel" dialog instead.
    try:
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=KERNEL_IDLE_TIMEOUT_S * 1000)
        page.locator(".jp-StatusBar-TextItem", has_text=KERNEL_IDLE_TEXT).wait_for(
            state="attached", timeout=KERNEL_IDLE_TIMEOUT_S * 1000)
    except PlaywrightTimeoutError:
        pytest.fail(f"{name} or its kernel was not ready within {KERNEL_IDLE_TIMEOUT_S} s\n"
                    f"{failure_context(server, browser)}")
    logger.info("%s open with an idle kernel after %.1f s", name, time.monotonic() - started)

    page.locator(".lm-MenuBar-itemLabel").get_by_text("Run", exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    run_started = time.monotonic()

    try:
        handle = page.wait_for_function(RUN_STATE_JS, arg=WIDGET_IMAGES, timeout=RUN_ALL_TIMEOUT_S * 1000,
                                        polling=500)
        run_state = handle.json_value()
    except PlaywrightTimeoutError:
        run_state = "timeout"
    logger.info("%s: run all cells ended as %r after %.1f s", name, run_state, time.monotonic() - run_started)

    # Run All leaves the last cell in view, so scroll the notebook's first widget image to the middle instead.
    if run_state == "done":
        page.locator(WIDGET_IMAGES).first.evaluate("(img) => img.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(500)
    page.screenshot(path=screenshot, full_page=True)
    context = failure_context(server, browser)
    page_text = page.inner_text("body")
    image_widths_px = page.eval_on_selector_all(WIDGET_IMAGES, "images => images.map((img) => img.naturalWidth)")
    logger.info("%s: widget images %s px wide", name, image_widths_px)
    tracebacks = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]',
                              has_text="Traceback").all_inner_texts()

    assert run_state != "timeout", (f"{name}: cells still running, or no widget image loaded, after "
                                    f"{RUN_ALL_TIMEOUT_S} s (screenshot: {screenshot})\n{context}")
    assert not tracebacks, f"{name}: a cell raised an exception:\n{tracebacks[0][-LOG_TAIL_CHARS:]}\n{context}"
    assert "Error displaying widget" not in page_text, (f"{name}: JupyterLab could not render a widget "
                                                        f"(screenshot: {screenshot})\n{context}")
    assert run_state == "done", f"{name}: run ended as {run_state!r} (screenshot: {screenshot})\n{context}"
    assert image_widths_px, f"{name}: no image inside a widget output (screenshot: {screenshot})\n{context}"
    assert min(image_widths_px) > MIN_IMAGE_WIDTH_PX, (
        f"{name}: widget images {image_widths_px} px wide, expected every one over {MIN_IMAGE_WIDTH_PX} px "
        f"(a width of 0 is an image that failed to decode; screenshot: {screenshot})\n{context}")
    assert screenshot.is_file(), f"screenshot not written: {screenshot}"
    assert screenshot.stat().st_size > MIN_SCREENSHOT_BYTES, (
        f"screenshot {screenshot} has only {screenshot.stat().st_size} bytes")


@pytest.mark.slow
@pytest.mark.browser
def test_browser_renders_widget_standin(jupyter_lab, open_page, lab_root, tmp_path):
    browser = open_page()
    write_standin_notebook(lab_root / "standin.ipynb")

    run_notebook_in_browser(jupyter_lab, browser, "standin.ipynb", tmp_path / "standin.png")


@pytest.mark.slow
@pytest.mark.browser
def test_explore_notebook_renders(jupyter_lab, open_page, lab_root, tmp_path):
    browser = open_page()
    assert NOTEBOOK.is_file(), f"notebook not found: {NOTEBOOK}"
    copy_without_outputs(NOTEBOOK, lab_root / NOTEBOOK.name)
    screenshot = tmp_path / "explore.png"

    run_notebook_in_browser(jupyter_lab, browser, NOTEBOOK.name, screenshot)

    # The classifier explorer marks its bar chart and the similarity explorer its heat map.
    chart_widths_px = browser.page.eval_on_selector_all(
        "img.clipbench-label-chart", "images => images.map((img) => img.naturalWidth)")
    heatmap_widths_px = browser.page.eval_on_selector_all(
        "img.clipbench-similarity-heatmap", "images => images.map((img) => img.naturalWidth)")
    assert len(chart_widths_px) == 1, f"expected one classifier bar chart, found {chart_widths_px}"
    assert chart_widths_px[0] > MIN_IMAGE_WIDTH_PX, f"bar chart is {chart_widths_px[0]} px wide"
    assert len(heatmap_widths_px) == 2, f"expected two similarity heat maps, found {heatmap_widths_px}"

    if os.environ.get("CLIPBENCH_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(screenshot, SCREENSHOT)
        logger.info("copied the screenshot to %s", SCREENSHOT)
