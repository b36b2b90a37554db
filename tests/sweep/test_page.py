"""``sweep.html``'s curves: layer numbers on the x axis (1-based, as in report.html) and each layer's name,
mean and interval on hover."""

from __future__ import annotations

import re

from camanim.sweep.page import curve_svg, layer_ticks


def test_layer_ticks_show_at_most_ten_numbers_and_the_last_layer():
    assert layer_ticks(4) == [0, 1, 2, 3]
    assert layer_ticks(12) == [0, 2, 4, 6, 8, 10, 11]
    assert layer_ticks(82) == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert layer_ticks(0) == []


def test_the_curve_names_its_layers():
    """(review) The x axis said only 'layer (0 … n-1)': now 1-based ticks, each with its layer's name, and one
    point per layer whose title is its number, name, mean and interval."""
    names = ["layer2.1.conv1", "layer2.1.conv2", "layer3.1.conv1"]
    across = {"layers": [{"name": n, "ybroad": v, "ybroad_ci": ci} for n, v, ci in
                         zip(names, [0.1, None, -0.2], [[0.05, 0.15], None, [-0.3, -0.1]])],
              "baseline": {"band": [-0.01, 0.01]}, "best": {"index": 0, "name": names[0], "ybroad": 0.1}}
    svg = curve_svg("c", across)
    ticks = re.findall(r'<text class="x-tick"[^>]*>(\d+)<title>([^<]*)</title></text>', svg)
    assert ticks == [("1", names[0]), ("2", names[1]), ("3", names[2])]
    points = re.findall(r'<circle class="layer-point" data-index="(\d)"[^>]*><title>([^<]*)</title>', svg)
    assert points == [("0", "1 layer2.1.conv1: 0.1 [0.05, 0.15]"), ("2", "3 layer3.1.conv1: -0.2 [-0.3, -0.1]")]
    assert "<title>best: 1 layer2.1.conv1: 0.1</title>" in svg
    assert "layer (1 … 3; hover a point for its name)" in svg


def test_the_groups_warnings_are_on_the_page(finished):
    """(review) A group's warnings (an image left out: every CAM constant there) were only in sweep.json."""
    import copy

    from camanim.sweep.page import render_page

    summary = copy.deepcopy(finished["summary"])
    group = summary["aggregates"]["groups"][0]
    group["all"]["warnings"] = ["1 of 3 images left out (a.png & b): no layer has a ROAD score there"]
    html = render_page(summary)
    found = re.search(r"<ul id=warnings>(.*?)</ul>", html)
    assert found is not None
    assert found.group(1) == (f"<li>{group['model']} · {group['method']}: 1 of 3 images left out (a.png &amp; b): "
                              "no layer has a ROAD score there</li>")
    del group["all"]["warnings"]
    for g in summary["aggregates"]["groups"]:
        g["all"]["warnings"] = []
    assert "id=warnings" not in render_page(summary)


def _best_rows(html: str) -> list[list[str]]:
    table = re.search(r"<table id=best-table>(.*?)</table>", html).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r'<tr class="best-row">(.*?)</tr>', table)]


def test_the_best_layer_table_has_no_band_for_one_image_and_says_whether_the_interval_is_above_it(finished):
    """(review) A split with one image showed a zero-width chance band ``[0.00215, 0.00215]`` that looked precise;
    and the table did not say, as the CLI's line does, whether the best layer's interval lies above the band."""
    from camanim.report.html import fmt_number
    from camanim.sweep.page import render_page

    summary = finished["summary"]
    html = render_page(summary)
    assert "<th>chance band</th><th>interval above chance band</th><th>not separable from it</th>" in html
    rows = _best_rows(html)
    expected = []
    for g in summary["aggregates"]["groups"]:
        for split in ("all", "correct", "incorrect"):
            across = g[split]
            band = across["baseline"]["band"]
            word = {True: "yes", False: "no", None: "undetermined"}[across["best"]["separable_from_baseline"]]
            shown = ("– (one image: no band)" if across["n_images"] < 2
                     else f"[{fmt_number(band[0])}, {fmt_number(band[1])}]")
            expected.append([split, str(across["n_images"]), shown, word])
    assert [[r[2], r[3], r[6], r[7]] for r in rows] == expected
    # the fixture's splits: 3 images in all, one correct (cat) and one incorrect (coffee)
    assert [e[1] for e in expected] == ["3", "1", "1"] * 2
    assert [e[3] for e in expected][1:3] == ["undetermined", "undetermined"]


def test_the_page_gives_this_sessions_seconds_and_all_sessions_after_a_resume(finished):
    """(review) After ``--resume`` the page gave only the last session's seconds: with ``seconds_total`` (all
    sessions; absent in older summaries) both are given when they differ."""
    import copy

    from camanim.sweep.page import render_page

    summary = copy.deepcopy(finished["summary"])
    summary["seconds"] = 12.34
    del summary["seconds_total"]  # an older summary
    assert "failed; 12.3 s." in render_page(summary)
    summary["seconds_total"] = 12.34
    assert "failed; 12.3 s." in render_page(summary)
    summary["seconds_total"] = 100.0
    html = render_page(summary)
    assert "failed; 12.3 s this session, 100.0 s in all." in html
