"""Targets, scores and batches: topk, softmax, several images in one pass; the CLI's folder tree.

pytorch-grad-cam, given one target for a batch, explains image 0 only; here every image (and every
target of ``topk``) is its own row with its own target, and each row's CAMs equal a solo run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import small_net
from PIL import Image

import camanim
from camanim import InputError
from camanim.cli import main
from camanim.compute.targets import (
    BoxTarget,
    SegmentationTarget,
    SimilarityTarget,
    TopK,
    check_classes,
    is_multi_target,
    parse_target,
    per_image,
    rows_for,
)
from camanim.draw.video import count_frames, probe
from camanim.results import CamSet
from camanim.rundir.names import GRID_VIDEO
from camanim.sources import LoadedModel, Preprocess, register_builtin

LABELS = ["ant", "bee", "cat", "dog", "eel"]


@register_builtin("test-smallnet")
def _smallnet(weights, num_classes) -> LoadedModel:
    return LoadedModel(small_net(), Preprocess(resize=24, crop=(20, 20)), list(LABELS),
                       {"name": "test-smallnet", "weights": "random (seed 0)", "num_classes": 5})


def images(n: int = 2, size: int = 20) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)  # the two images get different predicted classes
    return [2 * torch.randn(1, 3, size, size, generator=g) for _ in range(n)]


def test_parse_target():
    assert parse_target("topk:3") == TopK(3) and parse_target("TopK=2") == TopK(2)
    assert parse_target("285") == "285" and parse_target(4) == 4 and parse_target(None) is None
    assert is_multi_target("topk:2") and not is_multi_target("cat") and not is_multi_target([1, 2])
    with pytest.raises(InputError, match="topk:K"):
        parse_target("topk:0")
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 0.5]])
    assert rows_for([TopK(2)], LABELS, 5, logits) == [[1, 2]]
    assert rows_for(["dog", None, 4], LABELS, 5) == [[3], [None], [4]]
    with pytest.raises(InputError, match="more classes"):
        rows_for([TopK(6)], LABELS, 5, logits)
    with pytest.raises(InputError, match="not a class label"):
        rows_for(["zebra"], LABELS, 5)


def test_each_image_of_a_batch_equals_its_solo_run():
    model = small_net()
    a, b = images()
    both = camanim.animate(model, [a, b], method="gradcam,scorecam", layers="all")
    assert isinstance(both, CamSet) and len(both) == 4
    assert both.folders == ["image1/gradcam", "image1/scorecam", "image2/gradcam", "image2/scorecam"]
    for k, x in enumerate((a, b)):
        solo = camanim.animate(model, x, method="gradcam", layers="all")
        got = both[2 * k]
        assert got.target.index == solo.target.index == int(model(x).argmax())
        torch.testing.assert_close(got.cams, solo.cams, rtol=1e-5, atol=1e-6)
        assert got.layers[0].shape == solo.layers[0].shape == (1, 6, 20, 20)
        solo_sc = camanim.animate(model, x, method="scorecam", layers="all")
        torch.testing.assert_close(both[2 * k + 1].cams, solo_sc.cams, rtol=1e-4, atol=1e-6)
    assert both[0].target.index != both[2].target.index, "the two images are explained for their own classes"
    # one target per image, or one target for all
    per = camanim.animate(model, [a, b], target=[1, "eel"], labels=LABELS)
    assert [r.target.index for r in per] == [1, 4] and per[1].target.label == "eel"
    solo = camanim.animate(model, b, target=4)
    torch.testing.assert_close(per[1].cams, solo.cams, rtol=1e-5, atol=1e-6)
    mixed = camanim.animate(model, [a, b], target=[4, None])
    assert [r.target.index for r in mixed] == [4, int(model(b).argmax())]
    with pytest.raises(InputError, match="one target per image"):
        camanim.animate(model, [a, b], target=[1, 2, 3])


def test_topk_gives_one_result_per_class_from_one_pass():
    model = small_net()
    (x,) = images(1)
    top = model(x)[0].topk(3).indices.tolist()
    res = camanim.animate(model, x, method="gradcam", target="topk:3", labels=LABELS)
    assert [r.target.index for r in res] == top and res.folders == [f"class_{k}" for k in top]
    assert res[0].options["traced_passes"] == 1
    for r, k in zip(res, top):
        solo = camanim.animate(model, x, method="gradcam", target=k)
        torch.testing.assert_close(r.cams, solo.cams, rtol=1e-5, atol=1e-6)
        assert r.target.label == LABELS[k]
    # rows of one image share every masked forward: topk:3 costs ScoreCAM what one class costs
    one = camanim.animate(model, x, method="scorecam", target=top[1])
    three = camanim.animate(model, x, method="scorecam", target="topk:3")
    assert three[0].options["extra_forwards"] == one.options["extra_forwards"]
    torch.testing.assert_close(three[1].cams, one.cams, rtol=1e-4, atol=1e-6)


def test_softmax_score_changes_what_is_explained():
    model = small_net()
    (x,) = images(1)
    logit = camanim.animate(model, x, method="gradcam", target=2)
    soft = camanim.animate(model, x, method="gradcam", target=2, score="softmax")
    assert soft.options["score"] == "softmax" and logit.options["score"] == "logit"
    assert not torch.allclose(logit.cams, soft.cams)
    with pytest.raises(InputError, match="logit, softmax or sigmoid"):
        camanim.animate(model, x, score="probability")


def _write_images(folder, n=2):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{'ab'[i]}.png"
        Image.fromarray(rng.integers(0, 255, (30, 34, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.mark.slow
def test_cli_several_methods_write_subfolders_and_a_grid_video(tmp_path):
    out = tmp_path / "out"
    (path,) = _write_images(tmp_path, 1)
    assert main(["run", path, "--model", "test-smallnet", "--method", "gradcam,hirescam,scorecam",
                 "--out", str(out), "--quiet", "--batch-size", "16"]) == 0
    top = json.loads((out / "manifest.json").read_text())
    assert top["kind"] == "set" and top["methods"] == ["gradcam", "hirescam", "scorecam"]
    assert top["grids"] == [GRID_VIDEO] and [r["folder"] for r in top["runs"]] == top["methods"]
    n = None
    for name in top["methods"]:
        m = json.loads((out / name / "manifest.json").read_text())
        assert m["method"] == name and m["options"]["methods"] == top["methods"]
        n = len(m["layers"])
        assert (out / name / "camanim_local.mp4").is_file()
        assert [la["same_as"] for la in m["layers"] if la["name"] == "features"] == [7]
    info = probe(out / GRID_VIDEO)
    assert info["codec"] == "h264" and count_frames(out / GRID_VIDEO) == n
    sc = json.loads((out / "scorecam" / "manifest.json").read_text())["options"]
    assert sc["extra_forwards"] > 0 and sc["traced_passes"] == 1


def test_cli_images_topk_and_plugin_folders(tmp_path, monkeypatch, capsys):
    paths = _write_images(tmp_path, 2)
    (tmp_path / "cli_cams.py").write_text(
        "from camanim.methods import CamMethod\n"
        "class MeanAct(CamMethod):\n"
        "    '''Mean activation.'''\n"
        "    name = 'test-cli-meanact'\n"
        "    uses_gradients = False\n"
        "    def cam(self, acts, grads, ctx):\n"
        "        return acts.mean(dim=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    assert main(["run", *paths, "--model", "test-smallnet", "--target", "topk:2", "--no-video", "--quiet",
                 "--method", "cli_cams:MeanAct", "--out", str(out)]) == 0
    top = json.loads((out / "manifest.json").read_text())
    folders = [r["folder"] for r in top["runs"]]
    assert len(folders) == 4 and folders[0].startswith("imga/class_") and folders[2].startswith("imgb/class_")
    for f in folders:
        m = json.loads((out / f / "manifest.json").read_text())
        assert m["method"] == "test-cli-meanact" and f.endswith(f"class_{m['target']['index']}")
        assert len(list((out / f / "frames" / "local").glob("*.png"))) == len(m["layers"])
    assert top["grids"] == []
    capsys.readouterr()
    assert main(["run", paths[0], "--model", "test-smallnet", "--method", "fullgrad", "--out",
                 str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a per-layer method" in err and len(err.strip().splitlines()) == 1
    assert main(["run", paths[0], "--model", "test-smallnet", "--method", "nosuch.module:X", "--out",
                 str(tmp_path / "o3"), "--quiet"]) == 2


def _decode(path) -> list[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    w, h = next(reader)["size"]
    return [np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3).astype(np.float32) for b in reader]


@pytest.mark.slow
def test_methods_grid_shows_each_methods_own_frame_of_the_same_layer(tmp_path):
    """One tile per method, in the order asked, each its run's local frame of the step's layer, labelled."""
    methods = ["gradcam", "eigencam", "layercam"]
    res = camanim.animate(small_net(), images(1)[0], method=",".join(methods), layers="features.*")
    out = tmp_path / "out"
    res.save(out, normalisations=["local"], fps=5)
    assert res.folders == methods
    own = {m: [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32)
               for p in sorted((out / m / "frames" / "local").glob("*.png"))] for m in methods}
    n = len(own["gradcam"])
    assert n == 8 and all(len(own[m]) == n for m in methods)
    h, w = own["gradcam"][0].shape[:2]
    grid = _decode(out / GRID_VIDEO)
    assert len(grid) == n
    # geometry: a title strip above and a caption strip below the tiles, equal gutters between them
    gh, gw = grid[0].shape[:2]
    strip, gutter = (gh - h) // 2, (gw - len(methods) * w) // (len(methods) - 1)
    assert strip > 0 and gutter >= 0 and gh == h + 2 * strip
    assert gw == len(methods) * w + (len(methods) - 1) * gutter

    def tile(frame, r):
        x0 = r * (w + gutter)
        return frame[strip:strip + h, x0:x0 + w], frame[:strip, x0:x0 + w], frame[strip + h:, x0:x0 + w]

    distinct = 0
    for i, frame in enumerate(grid):
        for r, m in enumerate(methods):
            image, _, _ = tile(frame, r)
            err = np.abs(image - own[m][i]).mean()
            assert err < 8, f"step {i}: tile {r} is not {m}'s frame {i} (mean abs diff {err:.1f})"
            for other in methods:
                # where two methods' frames differ clearly, the tile is the one of its own method
                if other != m and np.abs(own[other][i] - own[m][i]).mean() > 16:
                    assert np.abs(image - own[other][i]).mean() > 8, f"step {i}: tile {r} looks like {other}"
                    distinct += 1
        captions = [tile(frame, r)[2] for r in range(len(methods))]
        assert all(np.abs(c - captions[0]).mean() < 4 for c in captions[1:]), f"step {i}: tiles show different layers"
    assert distinct >= n, "the methods' frames differ enough for the tile order to be checked"
    titles = [tile(grid[0], r)[1] for r in range(len(methods))]
    for a in range(len(methods)):
        for b in range(a + 1, len(methods)):
            changed = (np.abs(titles[a] - titles[b]).max(axis=2) > 64).mean()
            assert changed > 0.01, f"tiles {a} and {b} carry the same label"


def test_per_image_targets_split_on_commas_unless_a_label_has_one():
    labels = ["cat", "dog, hound", "eel"]
    assert per_image(None, 2, labels) is None and per_image("eel", 2, labels) == "eel"
    assert per_image("281, eel", 2, labels) == ["281", "eel"]
    assert per_image("dog, hound", 2, labels) == "dog, hound"  # one label, for every image
    with pytest.raises(InputError, match="gives 3 targets for 2 image"):
        per_image("1,2,3", 2, labels)
    with pytest.raises(InputError, match="has an empty entry"):
        per_image("1,,2", 3, labels)


def test_per_image_targets_on_the_output_are_one_per_target_option():
    """(#18 review) ``seg:CLASS,mask=PATH`` has a comma of its own: targets on the output are given once per
    ``--target`` (repeated), each whole; a single one with a comma of unclear meaning is refused in one line."""
    labels = ["cat", "dog, hound", "eel"]
    one = per_image(["seg:15,mask=m.png"], 2, labels)  # one for every image, its mask and all
    assert one == SegmentationTarget(15, "m.png") and one.origin == "--target seg:15,mask=m.png"
    both = per_image(["seg:15,mask=a,b.png", "seg:7"], 2, labels)  # repeated: each whole, commas and all
    assert both == [SegmentationTarget(15, "a,b.png"), SegmentationTarget(7)]
    assert per_image(["box:0", "similar:r.png"], 2, labels) == [BoxTarget(0), SimilarityTarget("r.png")]
    assert per_image(["dog, hound", "eel"], 2, labels) == ["dog, hound", "eel"]
    assert per_image(["similar:a,b.png"], 1, labels) == SimilarityTarget("a,b.png")  # one image: no doubt
    refused = [
        (["seg:15,mask=m.png,seg:7"], 2, r"^--target 'seg:15,mask=m.png,seg:7' is ambiguous with 2 images .* give "
                                         r"--target once per image, e.g. --target seg:15,mask=m.png --target seg:7$"),
        (["seg:15,seg:7"], 2, "is ambiguous with 2 images"),
        (["similar:a.png,b.png"], 2, "is ambiguous with 2 images"),
        (["seg:15,mask=a,b.png"], 2, "is ambiguous with 2 images"),
        (["seg:15,seg:7"], 1, r"^--target 'seg:15,seg:7' holds several targets: give one per image, repeating "
                              r"--target"),
        (["281,seg:15"], 2, r"seg:, box: and similar: targets are given one per --target"),
        (["seg:15", "seg:7", "seg:1"], 2, r"^--target is given 3 times for 2 image\(s\)"),
    ]
    for spec, n, words in refused:
        with pytest.raises(InputError, match=words) as err:
            per_image(spec, n, labels)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"^target='seg:15,seg:7' holds several targets: .*target=\['seg:15', 'seg:7'\]"):
        parse_target("seg:15,seg:7")  # from Python: a list


def test_check_classes_names_the_first_class_out_of_range():
    logits = torch.zeros(3, 4)
    check_classes(logits, torch.tensor([0, 3, 1]))
    with pytest.raises(InputError, match="target class 4 is out of range: the model has 4 classes"):
        check_classes(logits, torch.tensor([0, 4, -1]))
