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
