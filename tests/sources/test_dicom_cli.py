"""``camanim run scan.dcm``: de-identified outputs, DICOM facts in the manifest and the report, a
multi-label model's findings by label and by sigmoid rank, and one-line errors with nothing written."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dicom
from pydicom.data import get_testdata_file

from camanim.cli import main

#: a fast 1-channel model for the CLI (random weights, two layers, a 64-pixel input)
FAST = ["--model", "resnet18", "--weights", "none", "--channels", "1", "--layers", "layer4.1.conv2,layer4.1.bn2",
        "--input-size", "64", "--quiet"]

PHI = {
    "PatientName": "Doe^Janeway", "PatientID": "PID98765X", "PatientBirthDate": "19510203",
    "StudyDate": "20240517", "SeriesDate": "20240518", "AcquisitionDate": "20240519", "ContentDate": "20240520",
    "StudyTime": "101112.5", "InstitutionName": "Saint Example Hospital", "ReferringPhysicianName": "Who^Drfoster",
    "AccessionNumber": "ACC4242", "OtherPatientIDs": "OPID777", "PatientAddress": "1 Secret Lane",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4242424242", "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.5353535353",
    "StudyDescription": "Protocolxyzzy", "OperatorsName": "Opname^Quux",
}


def _needles() -> list[bytes]:
    out = set()
    for value in PHI.values():
        for part in [value, *value.replace("^", " ").split()]:
            if len(part) >= 4:
                out |= {part.encode(), part.lower().encode(), part.upper().encode(), part.encode("utf-16-le")}
    for date in ("20240517", "20240518", "20240519", "20240520", "19510203"):
        out.add(f"{date[:4]}-{date[4:6]}-{date[6:]}".encode())
    return sorted(out)


def _all_bytes(folder: Path):
    """(name, bytes) of every file under ``folder``, and of every member of the zip files (cams.npz)."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            yield str(p), data
            if zipfile.is_zipfile(p):
                with zipfile.ZipFile(p) as z:
                    for name in z.namelist():
                        yield f"{p}:{name}", z.read(name)


@pytest.mark.slow
def test_phi_never_reaches_any_output_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    px = rng.integers(-1000, 1500, size=(48, 40)).astype(np.int16)
    scan = write_dicom(tmp_path / "scan.dcm", px, RescaleSlope=1, RescaleIntercept=0, WindowCenter=40, WindowWidth=400,
                       PixelSpacing=[0.5, 0.6], **PHI)
    raw = scan.read_bytes()
    assert all(v.encode() in raw for v in ("Doe^Janeway", "PID98765X", "20240517"))  # the file does carry them
    out = tmp_path / "out"
    assert main(["run", str(scan), *FAST, "--format", "mp4,gif", "--road", "--road-trials", "1",
                 "--road-percentiles", "50", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    files = list(_all_bytes(out))
    kinds = {Path(name.split(":")[0]).suffix for name, _ in files}
    assert {".json", ".html", ".png", ".mp4", ".gif", ".npz", ".csv"} <= kinds
    for needle in _needles():
        for name, data in files:
            assert needle not in data, f"{needle!r} found in {name}"
        assert needle.decode("latin-1") not in printed.out + printed.err
    manifest = json.loads((out / "manifest.json").read_text())
    image = manifest["image"]
    assert image["modality"] == "CT" and image["pixel_spacing_mm"] == [0.5, 0.6]
    assert image["window"] == {"centre": 40.0, "width": 400.0, "function": "LINEAR", "source": "file"}
    report = (out / "report.html").read_text()
    assert "window 40/400 HU" in report and "pixel 0.5 × 0.6 mm" in report and ">CT" in report


def test_sample_ct_run_with_a_window_and_one_channel(tmp_path, capsys):
    out = tmp_path / "ct"
    assert main(["run", "sample:ct", *FAST, "--window", "40,400", "--no-video", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["channels"] == 1
    assert manifest["image"]["window"] == {"centre": 40.0, "width": 400.0, "function": "LINEAR", "source": "--window"}
    assert manifest["image"]["rescale"]["unit"] == "HU" and manifest["image"]["source"] == "sample:ct"
    # --input-size 64: resized to 73 px (the recipe's 256/224 ratio), cropped to 64: 0.661468 * 128 / 73
    assert manifest["image"]["input_pixel_spacing_mm"] == [round(0.661468 * 128 / 73, 6)] * 2
    with np.load(out / "cams.npz") as z:
        assert z["input"].shape == (1, 1, 64, 64)
        image = z["image"]
    # the display image is grey (the windowed slice), not a colour artefact
    assert image.shape == (64, 64, 3) and (image[..., 0] == image[..., 2]).all() and image.std() > 10
    assert "window 40/400 HU" in (out / "report.html").read_text()


# -- multi-label: findings by label, and top k by sigmoid ---------------------------------------------------


FINDINGS = ["effusion", "nodule", "pneumonia", "normal"]


def _multilabel_checkpoint(path: Path) -> torch.nn.Module:
    """A seeded 1-channel ResNet-18 with 4 sigmoid findings, saved as a state dict (a fine-tune's checkpoint)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=4)
    model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    torch.save(model.state_dict(), path)
    return model.eval()


def test_multi_label_target_by_label_and_topk_by_sigmoid(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(FINDINGS) + "\n")
    model = _multilabel_checkpoint(tmp_path / "findings.pt")
    fast = [a if a != "none" else str(tmp_path / "findings.pt") for a in FAST]
    args = ["run", "sample:ct", *fast, "--num-classes", "4", "--labels", str(labels), "--score", "sigmoid",
            "--no-video"]
    assert main([*args, "--target", "Nodule", "--out", str(tmp_path / "one")]) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert m["target"]["index"] == 1 and m["target"]["label"] == "nodule"
    assert m["options"]["probability"] == "sigmoid"
    # the model's own logits on the run's own input: the printed p is sigmoid(logit of nodule)
    with np.load(tmp_path / "one" / "cams.npz") as z, torch.no_grad():
        logits = model(torch.from_numpy(z["input"]))[0]
    probs = torch.sigmoid(logits)
    assert m["target"]["score"] == pytest.approx(float(probs[1]), abs=1e-5)
    assert f"p={float(probs[1]):.3g} (sigmoid)" in printed and "1 (nodule)" in printed

    assert main([*args, "--target", "topk:2", "--out", str(tmp_path / "top")]) == 0
    top = json.loads((tmp_path / "top" / "manifest.json").read_text())
    ranked = torch.argsort(probs, descending=True)[:2].tolist()
    assert [r["target"]["index"] for r in top["runs"]] == ranked
    assert [r["target"]["label"] for r in top["runs"]] == [FINDINGS[k] for k in ranked]
    assert [r["target"]["score"] for r in top["runs"]] == pytest.approx([float(probs[k]) for k in ranked], abs=1e-5)


def test_a_label_the_model_does_not_have_is_one_line(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(FINDINGS) + "\n")
    out = tmp_path / "out"
    assert main(["run", "sample:ct", *FAST, "--num-classes", "4", "--labels", str(labels), "--score", "sigmoid",
                 "--target", "fracture", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target 'fracture' is not a class label" in err
    assert not out.exists()


# -- bad DICOM input: exit 2, one line, nothing written ----------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    fake = tmp / "fake.dcm"
    fake.write_bytes(b"\0" * 200)
    frames = write_dicom(tmp / "frames.dcm", np.zeros((2, 8, 8), np.int16))
    return {
        "not dicom": ([str(fake)], "is not a DICOM file pydicom can read"),
        "no pixel data": ([get_testdata_file("rtplan.dcm")], "has no pixel data"),
        "frame out of range": ([str(frames), "--frame", "2"], r"--frame 2 is out of range: .* 0..1"),
        "negative frame": ([str(frames), "--frame", "-1"], "--frame -1 is out of range"),
        "bad window": (["sample:ct", "--window", "40"], "--window '40': give the window's centre and width"),
        "zero width": (["sample:ct", "--window", "40,0"], "the width must be above 0"),
        "window on a photo": (["sample:cat", "--window", "40,400"], "--window applies to DICOM images .* not to .sample:cat."),
        "missing file": ([str(tmp / "nope.dcm")], "not found"),
    }


@pytest.mark.parametrize("case", ["not dicom", "no pixel data", "frame out of range", "negative frame", "bad window",
                                  "zero width", "window on a photo", "missing file"])
def test_bad_dicom_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    import re

    argv, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "deep" / "out"
    assert main(["run", *argv, *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("camanim: error: ") and re.search(message, err), err
    assert not (tmp_path / "deep").exists()
