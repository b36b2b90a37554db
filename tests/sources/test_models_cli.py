"""`camanim models`: builtin, torchvision and timm names, grouped by source and filtered by a glob."""

from __future__ import annotations

import fnmatch
import re

import pytest
import timm
import torchvision

from camanim.cli import main

HEADER = re.compile(r"(builtin|torchvision|timm) \((\d+)\):")


def _groups(out: str) -> dict[str, list[str]]:
    """Parse the listing: a 'source (count):' header, then its names indented by two spaces."""
    groups: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    current = None
    for line in out.splitlines():
        header = HEADER.fullmatch(line)
        if header:
            current = header.group(1)
            assert current not in groups, f"group {current} listed twice"
            groups[current], counts[current] = [], int(header.group(2))
        else:
            assert current is not None and line.startswith("  ") and line.strip() == line[2:], line
            groups[current].append(line[2:])
    assert counts == {k: len(v) for k, v in groups.items()}, "a header's count differs from its names"
    return groups


def test_convnext_pattern_lists_torchvision_and_timm_names(capsys):
    assert main(["models", "convnext*"]) == 0
    groups = _groups(capsys.readouterr().out)
    tv = sorted(fnmatch.filter(torchvision.models.list_models(module=torchvision.models), "convnext*"))
    # torchvision first, then timm; no builtin model matches, so its group is left out
    assert list(groups) == ["torchvision", "timm"]
    assert groups["torchvision"] == tv == ["convnext_base", "convnext_large", "convnext_small", "convnext_tiny"]
    assert groups["timm"] == sorted(timm.list_models("convnext*"))
    assert {"convnext_atto", "convnext_tiny", "convnextv2_tiny"} <= set(groups["timm"])
    # a name both sources have is listed under each (timm's is reached as timm:NAME)
    assert "convnext_tiny" in groups["torchvision"] and "convnext_tiny" in groups["timm"]


def test_builtin_default_model_is_listed(capsys):
    assert main(["models", "efficientnet_l*"]) == 0
    groups = _groups(capsys.readouterr().out)
    assert list(groups) == ["builtin", "timm"]
    assert groups["builtin"] == ["efficientnet_lite0"]
    assert groups["timm"] == sorted(timm.list_models("efficientnet_l*"))
    assert "efficientnet_lite0" in groups["timm"] and "efficientnet_lite4" in groups["timm"]


def test_no_pattern_lists_every_source(capsys):
    assert main(["models"]) == 0
    groups = _groups(capsys.readouterr().out)
    assert list(groups) == ["builtin", "torchvision", "timm"]
    tvm = torchvision.models
    assert groups["torchvision"] == sorted(tvm.list_models(module=tvm) + tvm.list_models(module=tvm.segmentation)
                                           + tvm.list_models(module=tvm.detection))  # classifiers, seg, detection
    assert "fcn_resnet50" in groups["torchvision"] and "fasterrcnn_resnet50_fpn" in groups["torchvision"]
    assert groups["timm"] == sorted(timm.list_models())


def test_pattern_matching_nothing_exits_2_with_one_line(capsys):
    assert main(["models", "zzz_no_such_model*"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert "no model name matches 'zzz_no_such_model*'" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("typo,expected", [("resnet5O", "resnet50"), ("convnext_tinny", "convnext_tiny")])
def test_unknown_model_in_run_exits_2_and_suggests_close_names(tmp_path, capsys, typo, expected):
    out = tmp_path / "o"
    assert main(["run", "sample:cat", "--model", typo, "--weights", "none", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    match = re.search(r"unknown model '(.+?)' \(did you mean: (.+?)\?\)", err[0])
    assert match and match.group(1) == typo
    suggestions = match.group(2).split(", ")
    assert suggestions[0] == expected and 1 <= len(suggestions) <= 5
    assert "camanim models" in err[0]
    assert not out.exists()


def test_a_reader_that_goes_away_ends_the_listing_quietly():
    """`camanim models | head`: the reader closes the pipe; no BrokenPipeError traceback, whether the
    listing is cut short while printing (the whole list) or when it is flushed at exit (a short one)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("camanim")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # output held until exit, as usual
    p = subprocess.Popen([str(cli), "methods"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and err == ""
    head = subprocess.run(f"'{cli}' models | head -2", shell=True, capture_output=True, text=True, env=env,
                          timeout=120)
    assert head.returncode == 0 and head.stdout.splitlines() == ["builtin (1):", "  efficientnet_lite0"]
    assert head.stderr == ""
