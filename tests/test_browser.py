"""The real-browser test (issue #6): JupyterLab in headless Chromium runs ``notebooks/quickstart.ipynb`` against
the suite's JupyterLab server (``lab_server``, tests/lab_server.py: a subprocess with the sparkdock extension on
the local backend, real Spark processes), and the live status card must render as an ipywidget whose state
badge really shows ``RUNNING``.

Chromium is Debian's (``scripts/setup-browser.sh``); playwright only drives it (no browser download).
Screenshots are kept under ``test-artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from sparkdock.demo import Server

pytestmark = [pytest.mark.browser, pytest.mark.spark]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
RUNNING_TIMEOUT = 300.0  # the local backend starts a real cluster; slow machines need minutes
FINISH_TIMEOUT = 420.0  # the rest of the notebook: SQL queries, terminate, wait for COMPLETE
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}
RUNNING_HEX = "#43a047"  # lifecycle.STYLES[RUNNING].hex

# What the page shows, read in one go: every sparkdock badge, the error outputs, and the notebook's text.
_PROBE = """() => {
  const cards = [...document.querySelectorAll('.jp-OutputArea-output .sparkdock-badge')]
    .filter(b => b.closest('.jupyter-widgets, .widget-vbox, .widget-html'));
  const errs = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')]
    .map(e => e.textContent);
  const outs = [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.textContent).join('\\n');
  return {badges: cards.map(b => b.textContent.trim()), errors: errs, text: outs,
          widgetLoadErrors: [...document.querySelectorAll('.jupyter-widgets .jupyter-widgets-error-widget, '
                                                          + '.jp-OutputArea-output .jupyter-widgets-error-widget')]
                             .map(e => e.textContent)};
}"""


def _say(msg: str) -> None:
    print(f"[browser-test +{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


_T0 = time.monotonic()


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium: skipped (with the reason) when missing, but a failure with CI=true."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        reason = f"{CHROMIUM} is missing: run scripts/setup-browser.sh (or `make browser`)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        reason = f"the playwright package is missing (pip install -e '.[test]'): {e}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return CHROMIUM


def _shot(page, target, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    target.screenshot(path=str(path))
    print(f"screenshot: {path}", flush=True)
    return path


def test_quickstart_card_in_jupyterlab(chromium, lab_server, tmp_path):
    from playwright.sync_api import sync_playwright

    server = lab_server
    # the notebook as in the repository: the server is shared, and JupyterLab may have saved an earlier run's
    # outputs into its copy
    shutil.copyfile(REPO / "notebooks" / "quickstart.ipynb", server.root / "quickstart.ipynb")
    t_start = time.monotonic()
    with sync_playwright() as pw:
        # A fresh profile (playwright passes it as --user-data-dir).
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.goto(f"{server.url}lab/tree/quickstart.ipynb?token={server.token}", timeout=120_000)
            try:
                _run_and_watch(page, server, t_start)
            except BaseException:
                with contextlib.suppress(Exception):
                    _shot(page, page, "quickstart-failure.png")
                print("browser console errors:\n" + "\n".join(console[-30:]))
                print("server log:\n" + server.log_tail())
                raise
        finally:
            browser.close()


def _run_and_watch(page, server: Server, t_start: float) -> None:
    # JupyterLab is up, the notebook is open and its kernel is ready.
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.evaluate(
        """async () => {
            const app = window.jupyterapp;
            for (let i = 0; i < 600 && !(app.shell.currentWidget && app.shell.currentWidget.sessionContext); i++)
                await new Promise(r => setTimeout(r, 100));
            const panel = app.shell.currentWidget;
            await panel.context.ready;
            await panel.sessionContext.ready;
        }""",
    )
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'",
        timeout=120_000,
    )
    # The notebook runs in two halves, so that the RUNNING card can be looked at before the notebook's own
    # SQL cells and terminate() move it on: every cell above the first SQL cell (launch, display, wait()),
    # then that cell and every one below it. Fire and forget: the commands' promises end with the last cell.
    split = page.evaluate(
        """() => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            const i = nb.widgets.findIndex(c => c.model.sharedModel.getSource().includes('cluster.sql('));
            if (i > 0) nb.activeCellIndex = i;
            return i;
        }"""
    )
    assert split > 0, "quickstart.ipynb has no cluster.sql( cell"
    _say(f"notebook open, kernel idle: running the cells above cell {split} (notebook:run-all-above)")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-above'); }")

    # 1. the card renders as an ipywidget and its badge goes to RUNNING
    seen: list[str] = []
    deadline = time.monotonic() + RUNNING_TIMEOUT
    while True:
        probe = page.evaluate(_PROBE)
        badge = probe["badges"][0] if probe["badges"] else None
        if badge and (not seen or seen[-1] != badge):
            seen.append(badge)
            _say(f"badge in the browser: {badge}")
        if badge == "RUNNING":
            break
        assert not probe["errors"], "a cell failed:\n" + "\n".join(probe["errors"])
        assert not probe["widgetLoadErrors"], f"the widget did not load: {probe['widgetLoadErrors']}"
        assert badge not in TERMINAL | {"CANCELING"}, f"the cluster ended before RUNNING: {seen}"
        assert time.monotonic() < deadline, (
            f"no RUNNING badge within {RUNNING_TIMEOUT:.0f} s; badges seen: {seen}; outputs:\n{probe['text'][-3000:]}"
        )
        time.sleep(0.25)
    t_running = time.monotonic() - t_start
    with contextlib.suppress(Exception):  # let the wait() cell print, so that the screenshot shows it
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-OutputArea-output')]"
            ".some(e => e.textContent.includes('state: RUNNING'))",
            timeout=30_000,
        )
    card = page.locator(".jp-OutputArea-output .jupyter-widgets:has(.sparkdock-badge)").first
    badge_el = card.locator(".sparkdock-badge").first
    card.scroll_into_view_if_needed()
    _shot(page, card, "quickstart-card-running.png")
    _shot(page, page, "quickstart-running.png")
    colour = badge_el.evaluate("e => getComputedStyle(e).backgroundColor")
    card_text = card.evaluate("e => e.textContent")
    jdbc = card.locator("input[type=text]").first.input_value()
    _say(f"RUNNING after {t_running:.1f} s; badge colour {colour}; JDBC {jdbc!r}")
    r, g, b = (int(RUNNING_HEX[i:i + 2], 16) for i in (1, 3, 5))
    assert colour == f"rgb({r}, {g}, {b})", f"RUNNING badge colour {colour}, expected {RUNNING_HEX}"
    assert badge_el.is_visible()
    assert "quickstart" in card_text
    assert jdbc.startswith("jdbc:hive2://"), f"JDBC URL field: {jdbc!r}"
    lab_link = card.locator("a[href$='/lab']").first
    assert lab_link.count() == 1, "no lab link on the RUNNING card"
    assert "underline" in lab_link.evaluate("e => getComputedStyle(e).textDecorationLine"), "the link looks like text"
    assert card.locator("button:has-text('Terminate')").is_enabled()

    assert badge_el.text_content().strip() == "RUNNING"  # still RUNNING: nothing moved it on yet

    # 2. the rest of the notebook: SQL, then terminate; the card follows to COMPLETE
    page.evaluate(
        f"""() => {{
            const app = window.jupyterapp;
            app.shell.currentWidget.content.activeCellIndex = {split};
            app.commands.execute('notebook:run-all-below');
        }}"""
    )
    _say(f"running cell {split} and every cell below it (notebook:run-all-below)")
    deadline = time.monotonic() + FINISH_TIMEOUT
    while True:
        probe = page.evaluate(_PROBE)
        badge = probe["badges"][0] if probe["badges"] else None
        if badge and seen[-1] != badge:
            seen.append(badge)
            _say(f"badge in the browser: {badge}")
        assert not probe["errors"], "a cell failed:\n" + "\n".join(probe["errors"])
        if re.search(r"final state: COMPLETE", probe["text"]) and badge == "COMPLETE":
            break
        assert time.monotonic() < deadline, (
            f"the notebook did not finish within {FINISH_TIMEOUT:.0f} s; badges seen: {seen}; "
            f"outputs:\n{probe['text'][-3000:]}"
        )
        time.sleep(0.5)
    assert "state: RUNNING" in probe["text"]
    assert "total: 499999500000" in probe["text"]
    _shot(page, page.locator(".jp-OutputArea-output .jupyter-widgets:has(.sparkdock-badge)").first,
          "quickstart-card-complete.png")
    _say(f"notebook done after {time.monotonic() - t_start:.1f} s; badges seen in the browser: {seen}")
    assert seen[-1] == "COMPLETE" and "RUNNING" in seen
