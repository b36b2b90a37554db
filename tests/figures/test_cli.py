"""``camanim figure``: each figure kind from the command line, and its errors (one line, exit 2, nothing written)."""

from __future__ import annotations

import pytest
from pypdf import PdfReader

from camanim.cli import main


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("camanim: error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(("runs", "extra", "summary"), [
    (["gradcam"], ["--with-road", "--depths", "0,50,100"], "filmstrip: 2 rows x 3 columns"),
    (["gradcam"], ["--layers", "conv1,layer4.1.conv2", "--norms", "global"], "filmstrip: 1 rows x 2 columns"),
    (["gradcam", "hirescam"], ["--spatial-only"], "methods: 2 rows x 6 columns"),
    (["gradcam", "mobilenet"], ["--depths", "0,25,50,75,100", "--norms", "local,global"], "models: 4 rows x 5 columns"),
    (["gradcam"], ["--layer", "layer2.0.conv1", "--norms", "local,global"], "norms: 1 rows x 2 columns"),
])
def test_each_figure_kind_from_the_command_line(figure_runs, tmp_path, capsys, runs, extra, summary):
    out = tmp_path / "fig.pdf"
    assert main(["figure", *(str(figure_runs[r]) for r in runs), "--out", str(out), "--dpi", "50", *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [summary, f"   png: {tmp_path / 'fig.png'}", f"   pdf: {out}"]
    assert len(PdfReader(out).pages) == 1


@pytest.mark.parametrize(("runs", "extra", "needle"), [
    (["gradcam"], ["--depths", "0,150"], "--depths 150 is outside 0-100"),
    (["gradcam"], ["--depths", ""], "--depths is empty"),
    (["gradcam"], ["--norms", "max"], "--norms 'max'"),
    (["gradcam"], ["--layers", "nope"], "has no layer 'nope'"),
    (["hirescam"], ["--with-road"], "camanim road"),
    (["gradcam", "hirescam"], ["--with-road"], "one-run filmstrip"),
    (["gradcam", "mobilenet"], ["--layers", "conv1"], "use --depths"),
    (["gradcam"], ["--depths", "0,50", "--layers", "conv1"], "exclude each other"),
    (["gradcam"], ["--out", "fig.svg"], "give fig.pdf, fig.png or fig"),
])
def test_bad_figure_input_is_one_line_exit_2_and_writes_nothing(figure_runs, tmp_path, capsys, runs, extra, needle):
    out = ["--out", str(tmp_path / "fig.pdf")] if "--out" not in extra else []
    assert main(["figure", *(str(figure_runs[r]) for r in runs), *out, *extra]) == 2
    assert needle in _err_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["figure", str(tmp_path), "--out", str(tmp_path / "fig.pdf")]) == 2
    assert "not a camanim run folder" in _err_line(capsys)
