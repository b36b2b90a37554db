"""Image lists: what a sweep reads from folders, globs and CSV/TSV lists (no model is run here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camanim import InputError
from camanim.sweep import expand_images


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(("content", "said"), [
    (b"", "is empty"),
    (b"path,label\n", "lists no image"),
    (b"path,label\n../imgs/cat.png,caf\xe9\n", "is not UTF-8"),
])
def test_a_bad_image_list_is_one_line(tmp_path: Path, content: bytes, said: str) -> None:
    """(review) An empty file, a header without rows and a Latin-1 file: one line each, no traceback."""
    (tmp_path / "list.csv").write_bytes(content)
    with pytest.raises(InputError, match=said) as err:
        expand_images([str(tmp_path / "list.csv")])
    assert "\n" not in str(err.value) and "list.csv" in str(err.value)


def test_one_file_reached_twice_is_one_image_and_conflicting_labels_are_refused(tmp_path: Path) -> None:
    """(review) The same file by two paths (a list's ``../``) is one image, keeping its label; two different
    labels for it are refused in one line instead of one being dropped."""
    cat = _png(tmp_path / "imgs" / "cat.png")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "idx.csv").write_text("path,label\n../imgs/cat.png,285\n")
    entries = expand_images([str(cat), str(tmp_path / "lists" / "idx.csv")])
    assert [(Path(e.image).resolve(), e.label) for e in entries] == [(cat.resolve(), "285")]
    (tmp_path / "lists" / "other.csv").write_text("path,label\n../imgs/cat.png,281\n")
    with pytest.raises(InputError, match=r"cat\.png.* labelled both 285 and 281"):
        expand_images([str(tmp_path / "lists" / "idx.csv"), str(tmp_path / "lists" / "other.csv")])


def test_saving_misclassified_runs_without_labels_is_refused_before_any_work(tmp_path: Path) -> None:
    """(review) ``--save-which misclassified`` on unlabelled images would save nothing, silently."""
    from _sweepfixture import MODEL, SETTINGS

    from camanim.sweep import SweepOptions, run_sweep

    cat = _png(tmp_path / "cat.png")
    with pytest.raises(InputError, match="^--save-which misclassified needs true labels"):
        run_sweep([str(cat)], tmp_path / "out", SETTINGS, SweepOptions(models=(MODEL,), save_runs=2,
                                                                     save_which="misclassified"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("header", ["file\timg", "path,diagnosis", "image,patient_id,diagnosis"])
def test_a_list_whose_label_column_has_another_name_is_refused(tmp_path: Path, header: str) -> None:
    """(review) ``file<TAB>img``: the second column was ignored without a word, so the sweep explained the
    predicted classes and reported no accuracy. Other columns without a label column are refused in one line."""
    sep = "\t" if "\t" in header else ","
    name = "list.tsv" if sep == "\t" else "list.csv"
    _png(tmp_path / "a.png")
    (tmp_path / name).write_text(header + "\n" + sep.join(["a.png"] + ["281"] * header.count(sep)) + "\n")
    with pytest.raises(InputError, match=r"besides its path column .* no label column: name the label column "
                                         r"label, class, target") as err:
        expand_images([str(tmp_path / name)])
    assert "\n" not in str(err.value) and repr(header.split(sep)[-1]) in str(err.value)


def test_a_list_with_a_label_column_keeps_its_other_columns_out_of_the_way(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "list.csv").write_text("patient_id,path,Class\nP1,a.png,281\n")
    assert [(Path(e.image).name, e.label) for e in expand_images([str(tmp_path / "list.csv")])] == [("a.png", "281")]
    (tmp_path / "only.csv").write_text("path\na.png\n")
    assert [e.label for e in expand_images([str(tmp_path / "only.csv")])] == [None]


@pytest.mark.parametrize("resume", [False, True])
def test_an_out_folder_with_tables_but_no_sweep_json_gets_one_answer(tmp_path: Path, resume: bool) -> None:
    """(review) An --out with a user's own ``images/`` folder said "holds a sweep already: add --resume", and
    with --resume "holds no sweep: drop --resume". Both now say it is not a sweep's folder; nothing is touched."""
    from _sweepfixture import MODEL, SETTINGS

    from camanim.sweep import SweepOptions, run_sweep

    cat = _png(tmp_path / "cat.png")
    mine = _png(tmp_path / "out" / "images" / "mine.png")
    with pytest.raises(InputError, match=r"has an 'images' or 'layers' folder but no sweep\.json, so it is not a "
                                         r"sweep's folder .*: give another --out"):
        run_sweep([str(cat)], tmp_path / "out", SETTINGS, SweepOptions(models=(MODEL,), resume=resume))
    assert sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*")) == [
        Path("images"), mine.relative_to(tmp_path / "out")]


@pytest.mark.parametrize(("spec", "what"), [("photos/", "folder"), ("photos", "folder"), ("labels.csv", "list"),
                                            ("more/labels.tsv", "list")])
def test_a_missing_folder_or_list_is_refused_but_a_missing_image_is_an_item(tmp_path: Path, spec: str,
                                                                            what: str) -> None:
    """(review) ``camanim sweep photos/`` with a typo ran a sweep of one failed item: a missing folder or list
    is refused in one line; a missing image file stays a failed item of its own (the issue's contract)."""
    with pytest.raises(InputError, match=rf"^{what} '{tmp_path / spec}' does not exist: check the path"):
        expand_images([str(tmp_path / spec)])
    assert [Path(e.image).name for e in expand_images([str(tmp_path / "gone.png"), str(tmp_path / "scan.dcm")])] == [
        "gone.png", "scan.dcm"]


def test_the_sweeps_own_folder_is_never_taken_as_images(tmp_path: Path) -> None:
    """(review) ``camanim sweep .`` with the default --out inside the folder: the resume explained the sweep's
    own frames and plots as 6 more images. Files under the sweep's folder are left out of folders and globs."""
    rocket = _png(tmp_path / "rocket.png")
    _png(tmp_path / "camanim-sweep" / "runs" / "r" / "frames" / "0000.png")
    _png(tmp_path / "camanim-sweep" / "sweep.png")
    for spec in (str(tmp_path), str(tmp_path / "**" / "*.png")):
        got = [e.image for e in expand_images([spec], exclude=tmp_path / "camanim-sweep")]
        assert got == [str(rocket)], (spec, got)
    assert len(expand_images([str(tmp_path)])) == 3  # without it (not a sweep's own): every file


def test_a_copy_with_and_without_a_label_is_one_image_and_conflicting_copies_are_refused(tmp_path: Path) -> None:
    """(review) A byte copy without a label beside the labelled original was a second image: n 3 over 2 distinct
    images, a narrower interval. It is a duplicate of one item that keeps the label."""
    from camanim.sweep.items import sweep_plan

    cat = _png(tmp_path / "cat.png")
    (tmp_path / "cat_copy.png").write_bytes(cat.read_bytes())
    (tmp_path / "list.csv").write_text("path,label\ncat_copy.png,\ncat.png,281\n")
    items, dups = sweep_plan(expand_images([str(tmp_path / "list.csv")]), ["resnet18"], "none")
    # (second review) the labelled file is the one run, so its name and its label go together
    assert [(Path(it.image).name, it.label) for it in items] == [("cat.png", "281")]
    assert [(Path(d["path"]).name, Path(d["same_as"]).name) for d in dups] == [("cat_copy.png", "cat.png")]
    # a resume keeps the file its tables recorded
    recorded = {str(tmp_path / "cat_copy.png")}
    items, dups = sweep_plan(expand_images([str(tmp_path / "list.csv")]), ["resnet18"], "none", prefer=recorded)
    assert [(Path(it.image).name, it.label) for it in items] == [("cat_copy.png", "281")]
    assert [(Path(d["path"]).name, Path(d["same_as"]).name) for d in dups] == [("cat.png", "cat_copy.png")]
    (tmp_path / "two.csv").write_text("path,label\ncat_copy.png,285\ncat.png,281\n")
    with pytest.raises(InputError, match=r"cat\.png' has the same content as .*cat_copy\.png' but the label 281, "
                                         r"not 285"):
        sweep_plan(expand_images([str(tmp_path / "two.csv")]), ["resnet18"], "none")


def test_a_semicolon_list_is_read_and_a_row_with_extra_fields_is_refused(tmp_path: Path) -> None:
    """(review) ``path;label`` (a European spreadsheet's CSV) was refused as "no path column"; a row with more
    fields than the header was read without a word (its extra field dropped)."""
    _png(tmp_path / "a.png")
    (tmp_path / "semi.csv").write_text("path;label\na.png;281\n")
    assert [(Path(e.image).name, e.label) for e in expand_images([str(tmp_path / "semi.csv")])] == [("a.png", "281")]
    (tmp_path / "extra.csv").write_text("path,label\na.png,281\nmy,cat.png,285\n")
    with pytest.raises(InputError, match=r"extra\.csv' line 3 has more fields than its header: quote a path"):
        expand_images([str(tmp_path / "extra.csv")])


@pytest.mark.parametrize(("kwargs", "said"), [
    ({"methods": "gradcam"}, r"SweepSettings\(methods='gradcam'\): give a tuple of method names"),
    ({"methods": ("nosuch",)}, "unknown method 'nosuch'"),
    ({"cam": {"target": 3}}, r"a sweep's target is each image's label"),
])
def test_python_sweep_settings_are_checked_on_construction(kwargs: dict, said: str) -> None:
    """(review) ``methods="gradcam"`` ran methods 'g', 'r', ... and failed every item; an unknown method and a
    ``target`` in ``cam`` (silently overridden) were accepted: refused when the settings are made."""
    from camanim.road import RoadOptions
    from camanim.sweep import SweepOptions, SweepSettings

    with pytest.raises(InputError, match=said):
        SweepSettings(**{"methods": ("gradcam",), "cam": {}, "road": RoadOptions(), **kwargs})
    with pytest.raises(InputError, match=r"SweepOptions\(models='resnet18'\): give a tuple of model names"):
        SweepOptions(models="resnet18")  # type: ignore[arg-type]


def test_the_readmes_python_sweep_runs_as_written(tmp_path: Path) -> None:
    """(review) A script without a ``__main__`` guard ran itself again in every worker: the README's example has
    one, and runs as written (a fresh interpreter in an empty folder)."""
    import os
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = text.index("In Python (the workers are processes")
    code = text[text.index("```python\n", start) + len("```python\n"):text.index("```", text.index("```python\n", start) + 10)]
    assert 'if __name__ == "__main__":' in code
    (tmp_path / "sweep_example.py").write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "sweep_example.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("best layer"), done.stdout
    assert (tmp_path / "sweep-py" / "sweep.json").is_file()
