"""``sweep.html`` in a real browser (Debian's chromium through Playwright, nothing downloaded): it loads
nothing from outside, shows one curve per (model, method), the best-layer table and every image with
its prediction and its own best layer, and its run links open the saved reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser_page() -> Iterator[tuple[object, list[str], list[str]]]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found; run scripts/install_chromium.sh (as root) to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed; `.venv/bin/pip install playwright`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        requests: list[str] = []

        def route(r) -> None:
            if r.request.url.startswith(("file:", "data:")):
                r.continue_()
            else:
                requests.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page, errors, requests
        finally:
            context.close()
            browser.close()


def test_sweep_page_shows_curves_best_layers_and_images(browser_page, finished):
    page, errors, requests = browser_page
    page.goto((finished["out"] / "sweep.html").as_uri())
    summary = finished["summary"]
    groups = summary["aggregates"]["groups"]
    # one curve per (model, method), its band, the chance band, the best layer marked
    assert page.eval_on_selector_all("svg.sweep-curve", "els => els.length") == len(groups) == 2
    assert page.eval_on_selector_all("svg.sweep-curve polygon.ci-band", "els => els.length") >= 2
    assert page.eval_on_selector_all("svg.sweep-curve rect.baseline-band", "els => els.length") == 2
    box = page.eval_on_selector("svg.sweep-curve", "el => el.getBoundingClientRect().width")
    assert box > 300
    best = page.eval_on_selector_all("#best-table tr.best-row td.best-layer", "els => els.map(e => e.textContent)")
    assert best[0] == groups[0]["all"]["best"]["name"]
    assert len(best) == 6  # 2 methods x (all, correct, incorrect)
    rows = page.eval_on_selector_all("#images tbody tr", "els => els.map(e => e.innerText)")
    assert len(rows) == 5
    cat = next(r for r in rows if r.startswith("sample:cat"))
    per_image = next(r for r in summary["per_image"] if r["image"] == "sample:cat")
    assert str(per_image["predicted"]) in cat and per_image["best"]["gradcam"]["layer"] in cat
    assert sum("failed" in r for r in rows) == 2
    assert page.eval_on_selector_all("#failures li", "els => els.length") == 2
    # the saved run's report opens from its link
    link = page.eval_on_selector("#images a", "a => a.href")
    page.goto(link)
    assert page.title() and "report" in page.url
    assert errors == [] and requests == []
