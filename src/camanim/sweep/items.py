"""What a sweep runs: the images a user names (folders, globs, a CSV/TSV with labels), and the items
(image × model) with their identity.

An item's key is a hash of the image's *content* (its file bytes; a ``sample:`` name for a built-in
sample), its label (the target) and the model's name and weights, never its position in the list: the key names the item's
part files (resume skips a finished key) and, with the sweep's ``--seed``, fixes every random draw of
the item (RandomCAM's weights, ROAD's noise, keyed by the removal mask, see :mod:`camanim.road.metric`),
so the numbers do not depend on the order, the worker or the number of workers.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: file suffixes a folder or glob takes as images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: names of the path and label columns a CSV/TSV list may use (first found, case-insensitive)
PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("label", "class", "target")


@dataclass(frozen=True)
class ImageEntry:
    """One image of a sweep: its spec (a path or ``sample:NAME``) and its label (class index or name, or None)."""

    image: str
    label: str | None = None


@dataclass(frozen=True)
class SweepItem:
    """One unit of work: an image explained by one model (every method of the sweep in one pass).

    Attributes:
        image: the image spec as listed (a path or ``sample:NAME``).
        label: the true class (index or name) or None.
        model: the model name (``--model``).
        image_sha256: SHA-256 of the image file's bytes (of the spec for a sample or a missing file).
        key: the item's identity, 16 hex digits of SHA-256 over image hash, label, model and weights.
    """

    image: str
    label: str | None
    model: str
    image_sha256: str
    key: str


def _read_list(path: Path) -> list[ImageEntry]:
    """The images of a CSV/TSV list: a path column and an optional label column (relative paths from its folder).

    Raises:
        InputError: the file is empty, not UTF-8, has no path column or no rows, or has other columns but
            no label column (a label column under another name is refused, never ignored).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"image list '{path}' is not UTF-8 (byte {exc.start}): save it as UTF-8") from exc
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise InputError(f"image list '{path}' is empty: give a header (path, and optionally label) and one row "
                         "per image")
    header = lines[0]
    delimiter = ("\t" if path.suffix.lower() == ".tsv" or "\t" in header
                 else ";" if ";" in header and "," not in header else ",")
    reader = csv.DictReader(lines, delimiter=delimiter)
    rows = list(reader)
    extra = next((n for n, row in enumerate(rows, start=2) if row.get(None)), None)
    if extra is not None:  # DictReader keeps a row's extra fields under None: a path with a comma, or a shifted row
        raise InputError(f"image list '{path}' line {extra} has more fields than its header: quote a path that "
                         f"holds a '{delimiter}' (\"a{delimiter}b.png\"), or fix the row")
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    col = next((fields[c] for c in PATH_COLUMNS if c in fields), None)
    if col is None:
        raise InputError(f"image list '{path}' has no path column: name one of {', '.join(PATH_COLUMNS)} "
                         "in its header (and optionally a label column)")
    lab = next((fields[c] for c in LABEL_COLUMNS if c in fields), None)
    others = [f for f in (reader.fieldnames or []) if f != col and f.strip()]
    if lab is None and others:  # a label column under another name would be dropped without a word
        raise InputError(f"image list '{path}' has column(s) {', '.join(repr(f) for f in others)} besides its path "
                         f"column '{col}' and no label column: name the label column {', '.join(LABEL_COLUMNS)}, "
                         "or remove the other columns to explain each image's predicted class")
    out = []
    for row in rows:
        spec = (row.get(col) or "").strip()
        if not spec:
            continue
        if not spec.startswith("sample:") and not Path(spec).is_absolute():
            spec = str(path.parent / spec)
        label = (row.get(lab) or "").strip() if lab else ""
        out.append(ImageEntry(spec, label or None))
    if not out:
        raise InputError(f"image list '{path}' lists no image: give one path per row")
    return out


def _outside(found: list[str], exclude: str | None) -> list[str]:
    """``found`` without the files under ``exclude`` (a resolved folder: the sweep's own output)."""
    if exclude is None:
        return found
    return [f for f in found if not os.path.realpath(f).startswith(exclude + os.sep)]


def expand_images(specs: Sequence[str], exclude: str | os.PathLike[str] | None = None) -> list[ImageEntry]:
    """The images named by ``specs``, in order, each once: folders (recursive, image suffixes only),
    globs, CSV/TSV lists, files and ``sample:NAME``. An image file that does not exist is kept (the sweep
    records it as a failed item); a folder or glob that matches nothing is an error, and so is a missing
    folder (a path without a suffix or ending in ``/``) or CSV/TSV list.

    Files under ``exclude`` (the sweep's ``--out``: its frames, plots and saved runs) are never taken from a
    folder or glob, so a sweep of ``.`` does not explain its own output when it resumes.

    Raises:
        InputError: no spec, a folder or glob with no image in it, or a missing folder or list.
    """
    exclude = None if exclude is None else os.path.realpath(exclude)
    if not specs:
        raise InputError("camanim sweep needs images: folders, globs, a CSV/TSV list, files or sample:NAME")
    out: list[ImageEntry] = []
    for spec in specs:
        p = Path(spec)
        if spec.startswith("sample:"):
            out.append(ImageEntry(spec))
        elif p.is_dir():
            found = _outside(sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                             exclude)
            if not found:
                raise InputError(f"folder '{spec}' holds no image ({', '.join(IMAGE_SUFFIXES)}): give another folder")
            out += [ImageEntry(f) for f in found]
        elif p.suffix.lower() in (".csv", ".tsv") and p.is_file():
            out += _read_list(p)
        elif not p.exists() and not glob.has_magic(spec) and (p.suffix.lower() in (".csv", ".tsv")
                                                               or spec.endswith(("/", os.sep)) or not p.suffix):
            # a missing list or folder is a typo in the command, not one bad image among many
            what = "list" if p.suffix.lower() in (".csv", ".tsv") else "folder"
            raise InputError(f"{what} '{spec}' does not exist: check the path (a missing image file is recorded "
                             "as a failed item; a missing folder or list stops the sweep before it starts)")
        elif glob.has_magic(spec):
            found = _outside(sorted(f for f in glob.glob(spec, recursive=True) if Path(f).is_file()), exclude)
            if not found:
                raise InputError(f"glob '{spec}' matches no file: check the pattern (quote it for the shell)")
            out += [ImageEntry(f) for f in found]
        else:
            out.append(ImageEntry(spec))
    # one image once, however it was reached (a list's ../, a folder and a glob): keyed by its resolved
    # path; its label is kept, and two different labels for it are refused rather than one dropped
    unique: dict[str, ImageEntry] = {}
    for entry in out:
        key = entry.image if entry.image.startswith("sample:") else os.path.realpath(entry.image)
        first = unique.get(key)
        if first is None:
            unique[key] = entry
        elif entry.label is not None and first.label is not None and entry.label != first.label:
            raise InputError(f"image '{entry.image}' is labelled both {first.label} and {entry.label}: give each "
                             "image one label")
        elif first.label is None and entry.label is not None:
            unique[key] = ImageEntry(first.image, entry.label)
    return list(unique.values())


def image_sha256(spec: str) -> str:
    """SHA-256 of an image file's bytes; of the spec text for ``sample:NAME`` or a file that cannot be read."""
    p = Path(spec)
    if not spec.startswith("sample:") and p.is_file():
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    return hashlib.sha256(spec.encode()).hexdigest()


def file_sha256(spec: str | None) -> str | None:
    """SHA-256 of a settings file's bytes (``--weights`` checkpoint, ``--labels`` list), or None when ``spec``
    names no file (``default``, ``none``, unset): a file changed at the same path is another model."""
    if spec is None or not Path(spec).is_file():
        return None
    return image_sha256(str(spec))


def sweep_plan(images: Sequence[ImageEntry], models: Sequence[str], weights: str,
               prefer: Set[str] = frozenset()) -> tuple[list[SweepItem], list[dict[str, str]]]:
    """Every (image, model) pair as a :class:`SweepItem`, and the files left out because their content
    repeats an earlier file's (same bytes: one image, run once, with the label of whichever copy has one;
    counting it twice would narrow the intervals across images).

    Args:
        prefer: files to run rather than their copies (a resumed sweep's recorded images, so that the names in
            its tables and in ``duplicates`` agree); otherwise the first labelled copy, else the first.

    Returns:
        ``(items, duplicates)``; ``duplicates``: ``[{"path": file left out, "same_as": the file run}]`` in
        list order (one path listed twice is one file, merged by :func:`expand_images`, not a duplicate).

    Raises:
        InputError: no model named, or copies of one image with different labels.
    """
    if not models:
        raise InputError("--model names no model: give one or several, e.g. --model resnet18,efficientnet_lite0")
    hashes = {e.image: image_sha256(e.image) for e in images}
    copies: dict[str, list[ImageEntry]] = {}  # content -> its files, in list order
    for e in images:
        copies.setdefault(hashes[e.image], []).append(e)
    first: dict[str, ImageEntry] = {}  # content -> the one entry run
    duplicates = []
    for h, group in copies.items():
        labels = {e.label for e in group if e.label is not None}
        if len(labels) > 1:
            a = next(e for e in group if e.label is not None)
            b = next(e for e in group if e.label is not None and e.label != a.label)
            raise InputError(f"'{b.image}' has the same content as '{a.image}' but the label {b.label}, not "
                             f"{a.label}: give one image one label (or remove the copy)")
        # the file run: one a finished sweep already recorded (a resume), else the first with the label, else
        # the first; the others are its duplicates, named against it
        kept = (next((e for e in group if e.image in prefer), None) if prefer else None) \
            or next((e for e in group if e.label is not None), group[0])
        first[h] = ImageEntry(kept.image, next(iter(labels), None))
        duplicates += [{"path": e.image, "same_as": kept.image} for e in group if e.image != kept.image]
    order = {e.image: n for n, e in enumerate(images)}
    duplicates.sort(key=lambda d: order[d["path"]])
    items, keys = [], set()
    for model in models:
        for e in first.values():
            key = hashlib.sha256(f"{hashes[e.image]}|{e.label}|{model}|{weights}".encode()).hexdigest()[:16]
            # ``weights`` is the settings' spec plus the checkpoint's content hash where it is a file
            if key not in keys:
                keys.add(key)
                items.append(SweepItem(e.image, e.label, model, hashes[e.image], key))
    return items, duplicates


def sweep_items(images: Sequence[ImageEntry], models: Sequence[str], weights: str) -> list[SweepItem]:
    """Every (image, model) pair as a :class:`SweepItem`; an image whose content repeats an earlier one
    (same bytes, label and model) is left out: its key is the same (:func:`sweep_plan` names those files).

    Raises:
        InputError: no model named.
    """
    return sweep_plan(images, models, weights)[0]
