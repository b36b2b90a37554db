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
