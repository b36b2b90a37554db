"""The report and comparison pages in a real browser: Debian's chromium driven by Playwright.

Needs /usr/bin/chromium (``scripts/install_chromium.sh``) and the ``playwright``
Python package; the browser itself is never downloaded (no ``playwright install``).
Without either, every test here is skipped with the reason.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _runfixture import frame_colour, make_run_dir
from PIL import Image

from camanim.report import align_by_depth, build_report, compare, report_html

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
N_LAYERS = 14


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found; run scripts/install_chromium.sh (as root) to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed; `.venv/bin/pip install playwright` (no `playwright install` needed)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _Page:
    """A page plus everything that went wrong on it: console errors, page errors, network use."""

    def __init__(self, browser) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 1000})
        self.errors: list[str] = []
        self.requests: list[str] = []
        # The report must work offline: anything but file: and data: URLs is a failure.
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def layer(self) -> int:
        return int(self.page.evaluate("document.body.dataset.layer"))

    def src(self, selector: str) -> str:
        return self.page.eval_on_selector(selector, "el => el.src")

    def shown_colour(self, selector: str) -> np.ndarray:
        """Mean RGB of the image as decoded and shown by the browser."""
        rgb = self.page.eval_on_selector(
            selector,
            """img => {
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const ctx = c.getContext('2d');
                ctx.drawImage(img, 0, 0);
                const d = ctx.getImageData(0, 0, c.width, c.height).data;
                const sum = [0, 0, 0];
                for (let k = 0; k < d.length; k += 4) { sum[0] += d[k]; sum[1] += d[k + 1]; sum[2] += d[k + 2]; }
                const n = d.length / 4;
                return sum.map(v => v / n);
            }""",
        )
        return np.array(rgb)

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def page(browser) -> Iterator[_Page]:
    wrapped = _Page(browser)
    try:
        yield wrapped
    finally:
        wrapped.close()


def _frames(page: _Page, norm: str, prefix: str = "") -> list[str]:
    return page.page.evaluate(f"JSON.parse(document.getElementById('{prefix}frames-data-{norm}').textContent)")


def _assert_shows(page: _Page, index: int, names: list[str]) -> None:
    assert page.layer() == index
    assert page.page.input_value("#layer-slider") == str(index)
    caption = page.page.inner_text("#layer-caption")
    assert f"Layer {index + 1} / {N_LAYERS}" in caption and names[index] in caption, caption
    assert page.src("#frame-local") == _frames(page, "local")[index]
    assert page.src("#frame-global") == _frames(page, "global")[index]
    current = page.page.eval_on_selector_all("#layer-table tr.cam-current", "rows => rows.map(r => r.dataset.index)")
    assert current == [str(index)]


def test_report_viewer_interactions(page: _Page, tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", n_layers=N_LAYERS, size=(320, 384))
    report = build_report(run)
    names = [layer["name"] for layer in json.loads((run / "manifest.json").read_text())["layers"]]
    best = json.loads((run / "ybroad.json").read_text())["ybroad_max"]["index"]

    page.page.goto(report.as_uri())
    page.page.wait_for_function("document.body.dataset.layer === '0'")
    _assert_shows(page, 0, names)
    assert np.abs(page.shown_colour("#frame-local") - frame_colour("local", 0)).max() < 12

    # slider, as a script would move it
    page.page.eval_on_selector(
        "#layer-slider", "el => { el.value = '5'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    _assert_shows(page, 5, names)
    assert np.abs(page.shown_colour("#frame-local") - frame_colour("local", 5)).max() < 12
    assert np.abs(page.shown_colour("#frame-global") - frame_colour("global", 5)).max() < 12

    # arrow keys: page-wide, and on the focused slider without stepping twice
    page.page.click("h1")
    page.page.keyboard.press("ArrowRight")
    _assert_shows(page, 6, names)
    page.page.focus("#layer-slider")
    page.page.keyboard.press("ArrowRight")
    _assert_shows(page, 7, names)
    page.page.click("h1")
    page.page.keyboard.press("ArrowLeft")
    _assert_shows(page, 6, names)

    # a table row
    page.page.click("#layer-table tbody tr[data-index='2']")
    _assert_shows(page, 2, names)

    # a point on the ybROAD curve, the best layer, and the plot background (nearest layer)
    page.page.click(f"#ybroad-plot circle[data-index='{best}']")
    _assert_shows(page, best, names)
    page.page.click("#ybroad-plot circle[data-index='1']")
    _assert_shows(page, 1, names)
    box = page.page.eval_on_selector(
        "#params-plot", "svg => { const r = svg.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }"
    )
    x0, dx = (float(page.page.get_attribute("#params-plot", a)) for a in ("data-x0", "data-dx"))
    scale = box[2] / 640  # viewBox width
    page.page.mouse.click(box[0] + (x0 + 11 * dx) * scale, box[1] + 40 * scale)
    _assert_shows(page, 11, names)

    # the header's "ybROAD max" link
    page.page.click(".cam-jump")
    _assert_shows(page, best, names)

    # play runs to the end and stops; pause holds
    page.page.click("#play")
    page.page.wait_for_function(f"document.body.dataset.layer === '{N_LAYERS - 1}'", timeout=10_000)
    page.page.wait_for_function("document.getElementById('root').dataset.playing === 'false'")
    page.page.click("#play")  # at the end: restarts from 0
    page.page.wait_for_function("Number(document.body.dataset.layer) >= 2", timeout=10_000)
    page.page.click("#play")
    held = page.layer()
    page.page.wait_for_timeout(400)
    assert page.layer() == held

    page.page.keyboard.press("Home")
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as img:
        assert img.width == 1440 and img.height >= 900
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 30  # a real page, not a blank one
    assert shot.stat().st_size > 30_000

    assert page.errors == []
    assert page.requests == []


def test_hostile_names_stay_text(page: _Page, tmp_path: Path) -> None:
    names = ["<script>window.pwned = 1</script>", "<img src=x onerror='window.pwned=2'>", "</script><!--", "a&b", "ok"]
    run = make_run_dir(tmp_path / "run", n_layers=5, names=names)

    page.page.goto(build_report(run).as_uri())
    page.page.wait_for_function("document.body.dataset.layer === '0'")

    assert page.page.evaluate("window.pwned === undefined")
    assert page.page.inner_text("#caption-name") == names[0]
    assert page.page.inner_text("#layer-table tbody tr[data-index='2'] code") == names[2]
    page.page.keyboard.press("ArrowRight")
    assert page.page.inner_text("#caption-name") == names[1]
    assert page.errors == []


def test_two_inline_fragments_keep_apart(page: _Page, tmp_path: Path) -> None:
    run_a = make_run_dir(tmp_path / "a", n_layers=6)
    run_b = make_run_dir(tmp_path / "b", n_layers=4, with_ybroad=False)
    notebook = tmp_path / "notebook.html"
    notebook.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        f"<div class='output'>{report_html(run_a, inline=True)}</div>"
        f"<div class='output'>{report_html(run_b, inline=True)}</div></body></html>",
        encoding="utf-8",
    )

    page.page.goto(notebook.as_uri())
    roots = page.page.eval_on_selector_all(".camanim-report", "els => els.map(e => [e.id, e.dataset.layer])")
    assert len(roots) == 2 and all(layer == "0" for _, layer in roots)
    (root_a, _), (root_b, _) = roots
    prefix_a = root_a.removesuffix("root")
    page.page.click(f"#{prefix_a}layer-table tbody tr[data-index='3']")
    page.page.keyboard.press("ArrowRight")  # focus is inside fragment a

    layers = page.page.eval_on_selector_all(".camanim-report", "els => els.map(e => e.dataset.layer)")
    assert layers == ["4", "0"]
    assert page.page.evaluate("document.body.dataset.layer") is None
    # a notebook shows a tile of the contact sheet: layer 4's cell, and the sheet itself hidden
    sheet = page.page.evaluate(f"JSON.parse(document.getElementById('{prefix_a}report-data').textContent).sheets.local")
    c, r = 4 % sheet["cols"], 4 // sheet["cols"]
    x = c / (sheet["cols"] - 1) * 100 if sheet["cols"] > 1 else 0
    y = r / (sheet["rows"] - 1) * 100 if sheet["rows"] > 1 else 0
    position = page.page.eval_on_selector(f"#{prefix_a}frame-local", "el => el.style.backgroundPosition")
    assert [float(v.rstrip("%")) for v in position.split()] == pytest.approx([x, y])
    assert page.page.is_hidden(f"#{prefix_a}sheet-local") and page.page.is_visible(f"#{prefix_a}frame-local")
    assert page.errors == []


def test_compare_page_steps_runs_by_depth(page: _Page, tmp_path: Path) -> None:
    runs = [
        make_run_dir(tmp_path / "short", n_layers=4, model="tiny_a", size=(160, 192)),
        make_run_dir(tmp_path / "long", n_layers=9, model="tiny_b", method="scorecam", size=(160, 192)),
        make_run_dir(tmp_path / "mid", n_layers=6, model="tiny_c", method="layercam", size=(160, 192)),
    ]
    with pytest.warns(UserWarning, match="4 to 9 layers"):  # more than 2x apart: said on the page too
        result = compare(runs, tmp_path / "cmp", fps=20)
    mapping = align_by_depth([4, 9, 6])

    page.page.goto(result["html"].as_uri())
    page.page.wait_for_function("document.body.dataset.step === '0'")

    def shown() -> list[int]:
        return [int(page.page.get_attribute(f"#caption-{r}", "data-layer")) for r in range(3)]

    for step in (0, 3, 8):
        page.page.eval_on_selector(
            "#depth-slider", f"el => {{ el.value = '{step}'; el.dispatchEvent(new Event('input')); }}"
        )
        assert shown() == [mapping[r][step] for r in range(3)]
        for r in range(3):
            colour = page.shown_colour(f"#frame-{r}")
            assert np.abs(colour - frame_colour("local", mapping[r][step])).max() < 12
    page.page.click("#norm-global")
    assert np.abs(page.shown_colour("#frame-1") - frame_colour("global", 8)).max() < 12
    page.page.click("h1")
    page.page.keyboard.press("ArrowLeft")
    assert shown() == [mapping[r][7] for r in range(3)]

    shot = tmp_path / "compare.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert page.errors == []
    assert page.requests == []


def test_real_run_report_in_browser(page: _Page, tmp_path: Path) -> None:
    """A real engine run (with ybROAD), not a synthetic folder: open, slide, click, screenshot."""
    from camanim.cli import main

    out = tmp_path / "real"
    assert main(["sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer4.1*", "--road",
                 "--road-percentiles", "50", "--out", str(out), "--no-video", "--frame-width", "96", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    names = [layer["name"] for layer in manifest["layers"]]
    best = json.loads((out / "ybroad.json").read_text())["ybroad_max"]["index"]

    page.page.goto((out / "report.html").as_uri())
    page.page.wait_for_function("document.body.dataset.layer === '0'")
    assert names[0] in page.page.inner_text("#caption-name")
    page.page.eval_on_selector(
        "#layer-slider", "el => { el.value = '3'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    assert page.layer() == 3 and page.page.inner_text("#caption-name") == names[3]
    page.page.click("#layer-table tbody tr[data-index='5']")
    assert page.layer() == 5 and page.page.inner_text("#caption-name") == names[5]
    target = 1 if best != 1 else 2
    page.page.click(f"#ybroad-plot circle[data-index='{target}']")
    assert page.layer() == target
    page.page.click(f"#ybroad-plot circle[data-index='{best}']")
    assert page.layer() == best and page.page.inner_text("#caption-name") == names[best]
    shot = tmp_path / "real-report.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 30_000
    assert page.errors == []
    assert page.requests == []


LONG_NAMES = ["encoder_stage_one_very_long_descriptive_block_name_for_testing_layout", "a" * 120]


def _timm_like_run(tmp_path: Path, n: int = 24, long_names: bool = False) -> tuple[Path, dict]:
    """A run with EfficientNet-like names, types and shapes (the widest the default run's table gets);
    ``long_names``: two of them replaced by names without a place to break (a user's own modules)."""
    from _runfixture import write_scored_ybroad

    names = [f"blocks.{i // 6}.{i % 6}.bn{1 + i % 3}.drop" for i in range(n)]
    if long_names:
        names[:2] = LONG_NAMES
    run = make_run_dir(tmp_path / "timm", n_layers=n, names=names)
    manifest = json.loads((run / "manifest.json").read_text())
    for i, layer in enumerate(manifest["layers"]):
        layer["type"] = "BatchNormAct2d" if i % 2 else "DepthwiseSeparableConv"
        layer["shape"] = [1, 1152, 7, 7]
        layer["params"] = 1_234_567
    (run / "manifest.json").write_text(json.dumps(manifest))
    data = write_scored_ybroad(run, best=7, alias=8, note=5)
    build_report(run)
    return run, data


@pytest.mark.parametrize("long_names", [False, True], ids=["timm-names", "long-names"])
def test_ybroad_column_visible_without_horizontal_scroll_at_1400px(browser, tmp_path: Path, long_names: bool) -> None:
    run, _ = _timm_like_run(tmp_path, long_names=long_names)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto((run / "report.html").as_uri())
        page.wait_for_function("document.body.dataset.layer === '0'")
        geometry = page.evaluate("""() => {
            const wrap = document.getElementById('table-wrap');
            const th = document.getElementById('sort-ybroad').closest('th');
            const w = wrap.getBoundingClientRect(), t = th.getBoundingClientRect();
            const cell = document.querySelector('#layer-table tbody tr td.cam-yb').getBoundingClientRect();
            return {wrapLeft: w.left, wrapRight: w.right, thLeft: t.left, thRight: t.right, cellRight: cell.right,
                    scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth,
                    pageScroll: document.documentElement.scrollWidth, viewport: window.innerWidth};
        }""")
        assert geometry["scrollWidth"] <= geometry["clientWidth"], geometry  # the table does not scroll sideways
        assert geometry["wrapLeft"] <= geometry["thLeft"] and geometry["thRight"] <= geometry["wrapRight"] + 0.5
        assert geometry["cellRight"] <= geometry["wrapRight"] + 0.5, geometry
        assert geometry["pageScroll"] <= geometry["viewport"], geometry  # nor does the page
    finally:
        context.close()


def test_ybroad_column_sorts_and_the_viewer_still_finds_its_rows(page: _Page, tmp_path: Path) -> None:
    run, data = _timm_like_run(tmp_path)
    values = {layer["index"]: layer["ybroad"] for layer in data["layers"]}
    page.page.goto((run / "report.html").as_uri())
    page.page.wait_for_function("document.body.dataset.layer === '0'")

    def order() -> list[int]:
        return [int(i) for i in page.page.eval_on_selector_all("#layer-table tbody tr",
                                                               "rows => rows.map(r => r.dataset.index)")]

    defined = [i for i, v in values.items() if v is not None]
    page.page.click("#sort-ybroad")
    assert page.page.get_attribute("#sort-ybroad >> xpath=..", "aria-sort") == "descending"
    got = order()
    assert got[0] == data["best"]["index"] == 7
    assert got[:len(defined)] == sorted(defined, key=lambda i: (-values[i], i))
    assert got[len(defined):] == [i for i, v in values.items() if v is None]  # no value: last
    page.page.click("#sort-ybroad")
    assert page.page.get_attribute("#sort-ybroad >> xpath=..", "aria-sort") == "ascending"
    assert order()[:len(defined)] == sorted(defined, key=lambda i: (values[i], i))
    # the slider still marks the row of its layer, wherever sorting put it
    page.page.eval_on_selector(
        "#layer-slider", "el => { el.value = '7'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    current = page.page.eval_on_selector_all("#layer-table tr.cam-current", "rows => rows.map(r => r.dataset.index)")
    assert current == ["7"]
    page.page.click("#layer-table tbody tr[data-index='3']")
    assert page.layer() == 3
    # the caption says what a pass-through layer carries
    page.page.click("#layer-table tbody tr[data-index='5']")
    assert page.page.inner_text("#caption-meta").endswith("· BatchNorm output, before activation")
    # the # column sorts back to execution order
    page.page.click("#sort-\\#")
    page.page.click("#sort-\\#")
    assert order() == sorted(values)
    assert page.errors == [] and page.requests == []


# -- what a researcher expects: sorting, links to a layer, colour bars, top-5, dark mode, no JavaScript --

def _shot(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot under the test's tmp dir, checked to be a real page; copied to the folder
    ``CAMANIM_SCREENSHOTS`` names, when set, for a person to look at (nothing is written outside tmp else)."""
    import os

    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as img:
        assert np.asarray(img.convert("RGB")).std() > 20, name  # not blank
    if os.environ.get("CAMANIM_SCREENSHOTS"):
        shots = Path(os.environ["CAMANIM_SCREENSHOTS"])
        shots.mkdir(parents=True, exist_ok=True)
        (shots / name).write_bytes(path.read_bytes())
    return path


def _ux_run(tmp_path: Path) -> Path:
    run = make_run_dir(tmp_path / "run", n_layers=N_LAYERS, size=(320, 384))
    manifest_path = run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["top"] = [{"index": 281 + k, "label": f"cat{k}", "score": round(0.5 / (k + 1), 6)} for k in range(5)]
    manifest_path.write_text(json.dumps(manifest))
    build_report(run)
    return run


def _context_page(browser, **options):
    context = browser.new_context(**{"viewport": {"width": 1400, "height": 900}, **options})
    errors: list[str] = []
    pg = context.new_page()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, pg, errors


def test_report_sorting_layer_links_colour_bars_top5_and_table_fit(browser, tmp_path: Path) -> None:
    run = _ux_run(tmp_path)
    best = json.loads((run / "ybroad.json").read_text())["ybroad_max"]["index"]
    context, pg, errors = _context_page(browser)
    try:
        # report.html#layer=5 opens the fifth layer (1-based, as shown); stepping rewrites the address
        pg.goto((run / "report.html").as_uri() + "#layer=5")
        pg.wait_for_function("document.body.dataset.layer === '4'")
        assert f"Layer 5 / {N_LAYERS}" in pg.inner_text("#layer-caption")
        pg.click("h1")
        pg.keyboard.press("ArrowRight")
        assert pg.evaluate("location.hash") == "#layer=6"
        pg.evaluate("location.hash = '#layer=2'")
        pg.wait_for_function("document.body.dataset.layer === '1'")

        # sorting: ybROAD first descending (best first, no value last), then Params ascending on a second click
        pg.click("#sort-ybroad")
        order = pg.eval_on_selector_all("#layer-table tbody tr", "rs => rs.map(r => Number(r.dataset.index))")
        values = pg.eval_on_selector_all("#layer-table tbody tr", "rs => rs.map(r => r.cells[6].dataset.sort)")
        assert order[0] == best and sorted(order) == list(range(N_LAYERS))
        numbers = [float(v) for v in values if v]
        assert numbers == sorted(numbers, reverse=True) and all(v == "" for v in values[len(numbers):])
        assert pg.get_attribute("#layer-table th[data-col='6']", "aria-sort") == "descending"
        pg.click("#sort-params")
        pg.click("#sort-params")
        params = pg.eval_on_selector_all("#layer-table tbody tr", "rs => rs.map(r => r.cells[4].dataset.sort)")
        known = [float(v) for v in params if v]
        assert known == sorted(known) and pg.get_attribute("#layer-table th[data-col='4']", "aria-sort") == "ascending"
        pg.click("#layer-table tbody tr[data-index='7']")  # a sorted table still jumps to the row's layer
        assert pg.evaluate("document.body.dataset.layer") == "7"

        # colour bars: the run's colormap from 0 to 1, and what 1 means
        assert "this layer's max" in pg.inner_text("#colourbar-local")
        assert "network's max" in pg.inner_text("#colourbar-global")
        ramp = pg.eval_on_selector("#colourbar-local .cam-colourbar-ramp", "el => getComputedStyle(el).backgroundImage")
        assert ramp.startswith("linear-gradient") and ramp.count("rgb(") == 11
        assert pg.is_visible("#colourbar-local")

        # top-5, most probable first
        top = pg.eval_on_selector_all("#top5 li", "lis => lis.map(li => li.textContent)")
        assert len(top) == 5 and top[0].startswith("50.0%") and "cat0" in top[0] and "#281" in top[0]

        # the whole table fits its card at 1400 px: the ybROAD column is not behind a horizontal scroll
        fit = pg.eval_on_selector("#table-wrap", "w => [w.scrollWidth, w.clientWidth]")
        assert fit[0] <= fit[1], fit
        assert pg.is_visible("#sort-ybroad") and pg.is_visible("#sort-ms")
        pg.evaluate("location.hash = '#layer=1'")
        pg.wait_for_function("document.body.dataset.layer === '0'")
        _shot(pg, tmp_path, "report-light.png")
        assert errors == []
    finally:
        context.close()


def test_report_dark_mode_follows_the_system(browser, tmp_path: Path) -> None:
    run = _ux_run(tmp_path)
    for scheme in ("light", "dark"):
        context, pg, errors = _context_page(browser, color_scheme=scheme)
        try:
            pg.goto((run / "report.html").as_uri())
            pg.wait_for_function("document.body.dataset.layer === '0'")
            colours = pg.evaluate("""() => ['body', '.cam-card', 'table td'].map(s => {
                const el = document.querySelector(s), cs = getComputedStyle(el);
                return [cs.backgroundColor, cs.color]; })""")
            card_bg = [int(v) for v in re.findall(r"\d+", colours[1][0])[:3]]
            cell_ink = [int(v) for v in re.findall(r"\d+", colours[2][1])[:3]]
            if scheme == "dark":
                assert max(card_bg) < 60 and min(cell_ink) > 150, colours  # light text on dark cards
                _shot(pg, tmp_path, "report-dark.png")
            else:
                assert min(card_bg) > 240 and max(cell_ink) < 80, colours
            assert errors == []
        finally:
            context.close()


def test_frames_show_without_javascript(browser, tmp_path: Path) -> None:
    run = _ux_run(tmp_path)
    notebook = tmp_path / "notebook.html"
    notebook.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
                        f"<div class='output'>{report_html(run, inline=True)}</div></body></html>", encoding="utf-8")
    for scheme in ("light", "dark"):
        context, pg, _ = _context_page(browser, java_script_enabled=False, color_scheme=scheme)
        try:
            # a page: the first frame of each normalisation, as a plain image
            pg.goto((run / "report.html").as_uri())
            for norm in ("local", "global"):
                size = pg.eval_on_selector(f"#frame-{norm}", "img => [img.complete, img.naturalWidth]")
                assert size[0] and size[1] == 320, (norm, size)
            assert np.abs(_shown(pg, "#frame-local") - frame_colour("local", 0)).max() < 12
            # a notebook (an untrusted one runs no script): the contact sheets, every layer in order
            pg.goto(notebook.as_uri())
            sheets = pg.eval_on_selector_all("img.cam-sheet", "imgs => imgs.map(i => [i.naturalWidth, i.offsetHeight])")
            assert len(sheets) == 2 and all(w > 0 and h > 50 for w, h in sheets), sheets
            assert pg.eval_on_selector_all(".cam-tile", "ts => ts.every(t => t.offsetHeight === 0)")
            _shot(pg, tmp_path, f"notebook-nojs-{scheme}.png")
        finally:
            context.close()


def _shown(pg, selector: str) -> np.ndarray:
    """Mean RGB of an image as the browser decoded it (read back through a screenshot of the element:
    no script runs on a page with JavaScript disabled)."""
    data = pg.locator(selector).screenshot()
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)


def test_input_card_draws_the_crop_box_on_the_original_photo(page: _Page, tmp_path: Path) -> None:
    """A real run of a non-square photo: the Input card shows the original at its aspect ratio with the
    region the model saw boxed where the centre crop took it (fractions of the rendered picture)."""
    from camanim.cli import main

    out = tmp_path / "rocket"
    assert main(["sample:rocket", "--model", "resnet18", "--weights", "none", "--layers", "layer4.1.conv2",
                 "--out", str(out), "--no-video", "--frame-width", "96", "--quiet"]) == 0
    width, height = json.loads((out / "manifest.json").read_text())["image"]["original_size"]
    left, top, right, bottom = json.loads((out / "manifest.json").read_text())["image"]["crop"]["box"]
    page.page.goto((out / "report.html").as_uri())
    page.page.wait_for_function("document.body.dataset.layer === '0'")
    svg = page.page.locator("svg.cam-input")
    assert svg.is_visible()
    outer = svg.bounding_box()
    assert outer["width"] > 100 and abs(outer["width"] / outer["height"] - width / height) < 0.02
    assert page.page.eval_on_selector("svg.cam-input image", "el => el.getBoundingClientRect().width") > 0
    box = page.page.locator("svg.cam-input rect.cam-crop-box").bounding_box()
    scale = outer["width"] / width
    for got, want in ((box["x"] - outer["x"], left), (box["y"] - outer["y"], top),
                      (box["width"], right - left), (box["height"], bottom - top)):
        assert abs(got - want * scale) <= 4, (got, want * scale)  # within the stroke (3 px) and rounding
    card = page.page.locator("svg.cam-input").locator("xpath=..")
    assert "lost at each side" in card.inner_text()
    card.screenshot(path=str(tmp_path / "input-card.png"))
    assert page.errors == [] and page.requests == []


def test_input_card_of_a_tall_photo_stays_short(page: _Page, tmp_path: Path) -> None:
    """(review) A 60 x 2000 photo: the Input picture is at most 360 px tall, at the photo's aspect ratio,
    and the layer table still starts within the first screen and a half."""
    from camanim.cli import main

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 60, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    out = tmp_path / "tall"
    assert main([str(tmp_path / "t.png"), "--model", "resnet18", "--weights", "none", "--layers", "layer4.1.conv2",
                 "--out", str(out), "--no-video", "--frame-width", "96", "--quiet"]) == 0
    page.page.goto((out / "report.html").as_uri())
    page.page.wait_for_function("document.body.dataset.layer === '0'")
    box = page.page.locator("svg.cam-input").bounding_box()
    assert 300 < box["height"] <= 361 and abs(box["width"] / box["height"] - 60 / 2000) < 0.005, box
    assert page.page.locator("#layer-table").bounding_box()["y"] < 1500
    assert page.errors == [] and page.requests == []


def test_ybroad_card_is_not_cut_by_the_sticky_viewer_and_a_header_cell_sorts(browser, tmp_path: Path) -> None:
    """(review) At 1400 x 900 the sticky viewer needs no scrolling of its own (the ybROAD card, chart and
    curves, is in the page's flow), and a click anywhere in a numeric header cell sorts, not only on its label."""
    run, _ = _timm_like_run(tmp_path)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto((run / "report.html").as_uri())
        page.wait_for_function("document.body.dataset.layer === '0'")
        inner = page.evaluate("""() => { const v = document.querySelector('.cam-viewer');
            return {scroll: v.scrollHeight, client: v.clientHeight,
                    roadInside: !!v.querySelector('#ybroad-plot')}; }""")
        assert inner["scroll"] <= inner["client"] + 1 and not inner["roadInside"], inner
        plot = page.locator("#ybroad-plot")
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= 900, box  # the whole chart can be seen
        th = page.locator("#sort-ms").locator("xpath=ancestor::th")
        th.scroll_into_view_if_needed()
        cell, label = th.bounding_box(), page.locator("#sort-ms").bounding_box()
        assert cell["x"] + 3 < label["x"]  # a spot in the cell left of the label
        page.mouse.click(cell["x"] + 3, cell["y"] + cell["height"] / 2)
        assert th.get_attribute("aria-sort") == "descending"
    finally:
        context.close()
