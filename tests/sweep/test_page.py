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
