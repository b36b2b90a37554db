"""``cams.npz``: written and read back bit for bit; a broken file is a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import camanim
from camanim import InputError
from camanim.rundir import SavedCams, read_cams, write_cams


def test_cams_round_trip_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    saved = SavedCams(cams=rng.random((3, 8, 8), dtype=np.float32), names=np.array(["a", "b", "b#2"]),
                      input=rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
                      image=rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), target=281)
    back = read_cams(write_cams(tmp_path / "cams.npz", saved))
    for key in ("cams", "names", "input", "image"):
        assert getattr(back, key).tobytes() == getattr(saved, key).tobytes()
        assert getattr(back, key).dtype == getattr(saved, key).dtype
    assert back.target == 281


def test_a_cams_file_without_its_arrays_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "cams.npz", cams=np.zeros((1, 2, 2)))
    with pytest.raises(InputError, match="re-run `camanim run`"):
        read_cams(tmp_path / "cams.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InputError, match="junk.npz"):
        read_cams(tmp_path / "junk.npz")


def _damaged(tmp_path):
    rng = np.random.default_rng(0)
    saved = SavedCams(cams=rng.random((3, 8, 8), dtype=np.float32), names=np.array(["a", "b", "c"]),
                      input=np.zeros((1, 3, 8, 8), np.float32), image=np.zeros((8, 8, 3), np.uint8), target=1)
    whole = write_cams(tmp_path / "whole.npz", saved).read_bytes()
    flipped = bytearray(whole)
    at = whole.index(b"cams.npy") + 200  # inside the stored CAMs' bytes: the member's CRC-32 no longer holds
    flipped[at] ^= 0xFF
    return {"truncated": whole[: len(whole) // 2], "empty": b"", "text": b"hello, not an archive\n",
            "flipped": bytes(flipped)}


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "flipped"])
def test_a_damaged_cams_file_is_one_clear_line_from_load_cams(tmp_path, kind):
    # numpy's own errors came through (BadZipFile, EOFError, a hint to unpickle the file): a traceback.
    path = tmp_path / "cams.npz"
    path.write_bytes(_damaged(tmp_path)[kind])
    with pytest.raises(InputError) as err:
        camanim.load_cams(path)
    msg = str(err.value)
    assert msg.startswith(f"{path} is not a readable camanim cams.npz (") and "\n" not in msg
    assert msg.endswith("): re-run `camanim run` to write it again") and "pickle" not in msg


def _inconsistent(tmp_path):
    rng = np.random.default_rng(0)
    saved = SavedCams(cams=None, names=np.array(["a", "b"]), input=np.zeros((1, 3, 8, 8), np.float32),
                      image=np.zeros((8, 8, 3), np.uint8), target=1,
                      maps=[rng.random((4, 4), dtype=np.float32), None], size=(8, 8),
                      vectors=[None, np.ones(3, np.float32)], vector_kind="channels")
    with np.load(write_cams(tmp_path / "good.npz", saved)) as data:
        good = {k: data[k] for k in data.files}
    cases = {
        "a .npy file": None,
        "target not one number": {"target": np.array([1, 2])},
        "map shapes of another rank than size": {"map_shape": np.array([[2, 2, 4], [0, 0, 0]])},
        "a map past the end of map_values": {"map_start": np.array([10, -1])},
        "short vector offsets": {"vector_offsets": np.array([0, 0])},
        "more map entries than names": {"map_start": np.array([0, -1, -1]), "map_shape": np.array([[4, 4], [0, 0], [0, 0]])},
        "input of another size": {"input": np.zeros((1, 3, 5, 5), np.float32)},
        "names not a list": {"names": np.array("a")},
        "size not a shape": {"size": np.array(8)},
        "cams whole of another count": {"cams": np.zeros((3, 8, 8), np.float32)},
    }
    out = {}
    for why, change in cases.items():
        path = tmp_path / f"{len(out)}.npz"
        if change is None:
            np.save(path.with_suffix(".npy"), np.zeros(3))
            path.write_bytes(path.with_suffix(".npy").read_bytes())
        else:
            np.savez(path, **{**good, **change})
        out[why] = path
    return out


def test_a_cams_file_that_is_not_an_archive_or_disagrees_with_itself_is_one_line(tmp_path):
    # a .npy renamed, or arrays that do not fit together: a TypeError or IndexError came through
    for why, path in _inconsistent(tmp_path).items():
        with pytest.raises(InputError, match=r"is not a readable camanim cams.npz \(.+\): re-run `camanim run`") as err:
            camanim.load_cams(path)
        assert "\n" not in str(err.value), why


def test_a_missing_array_and_a_folder_named_cams_npz_are_said_plainly(tmp_path):
    np.savez(tmp_path / "cams.npz", names=np.array(["a"]))
    with pytest.raises(InputError, match=r"\(no array 'input'\)"):
        read_cams(tmp_path / "cams.npz")
    (tmp_path / "d" / "cams.npz").mkdir(parents=True)
    with pytest.raises(InputError, match=r"cams.npz is a folder, not a file"):
        camanim.load_cams(tmp_path / "d" / "cams.npz")


def test_non_spatial_vectors_round_trip_and_old_files_have_none(tmp_path):
    rng = np.random.default_rng(1)
    vectors = [None, rng.standard_normal(5).astype(np.float32), None, rng.standard_normal(1000).astype(np.float32)]
    saved = SavedCams(cams=np.zeros((4, 2, 2), np.float32), names=np.array(["a", "b", "c", "d"]),
                      input=np.zeros((1, 3, 2, 2), np.float32), image=np.zeros((2, 2, 3), np.uint8), target=1,
                      vectors=vectors, vector_kind="act x grad")
    back = read_cams(write_cams(tmp_path / "cams.npz", saved))
    assert back.vector_kind == "act x grad"
    assert [v is None for v in back.vectors] == [True, False, True, False]
    assert back.vectors[1].tobytes() == vectors[1].tobytes() and back.vectors[3].tobytes() == vectors[3].tobytes()
    saved.vectors = None
    back = read_cams(write_cams(tmp_path / "old.npz", saved))
    assert back.vectors is None and back.vector_kind == ""


def _saved_and_loaded(result, tmp_path, name="cams.npz"):
    path = write_cams(tmp_path / name, result.saved_cams())
    return np.load(path), camanim.load_cams(path)


@pytest.mark.parametrize("size", [(37, 53), (64, 64)])
def test_load_cams_gives_the_results_cams_from_layer_maps_at_several_resolutions(tmp_path, size):
    """ResNet18's maps (112 down to 2 px, its non-spatial avgpool and fc) come back as the very CAMs."""
    torch.manual_seed(0)
    result = camanim.animate("resnet18", torch.rand(1, 3, *size), weights="none", layers="all")
    data, cams = _saved_and_loaded(result, tmp_path)
    assert "cams" not in data.files and str(data["upsample"]) == "bilinear" and tuple(data["size"]) == size
    assert cams.dtype == np.float32 and cams.shape == tuple(result.cams.shape) == (75, *size)
    np.testing.assert_allclose(cams, result.cams.numpy(), rtol=1e-6, atol=0)
    shapes = {tuple(s) for s, start in zip(data["map_shape"], data["map_start"]) if start >= 0}
    assert len(shapes) >= 4 and max(h for h, _ in shapes) < size[0]  # stored at layer resolution
    non_spatial = [i for i, r in enumerate(result.layers) if r.non_spatial]
    assert non_spatial and all(data["map_start"][i] == -1 for i in non_spatial)
    assert not cams[non_spatial].any()
    assert data["map_values"].size * 4 < result.cams.numel() * 4 / 5  # the CAMs in a fifth of the space


def test_layers_sharing_one_output_share_one_stored_map(tmp_path):
    torch.manual_seed(0)
    result = camanim.animate("resnet18", torch.rand(1, 3, 40, 40), weights="none", layers="layer1*")
    shared = [i for i, r in enumerate(result.layers) if r.same_as is not None]
    assert shared, "resnet18's in-place ReLU shares its BatchNorm's output"
    data, cams = _saved_and_loaded(result, tmp_path)
    for i in shared:
        assert data["map_start"][i] == data["map_start"][result.layers[i].same_as]
    np.testing.assert_allclose(cams, result.cams.numpy(), rtol=1e-6, atol=0)
    starts = data["map_start"][data["map_start"] >= 0]
    assert data["map_values"].size == sum(int(np.prod(data["map_shape"][i])) for i in
                                          {int(s): i for i, s in enumerate(data["map_start"]) if s >= 0}.values())
    assert len(set(starts.tolist())) < len(starts)


def test_load_cams_of_vision_transformer_tokens(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    result = camanim.animate(vit, torch.rand(1, 3, 32, 32), layers="all")
    assert any(r.layout.startswith("TOKENS") for r in result.layers)
    data, cams = _saved_and_loaded(result, tmp_path)
    tokens = [i for i, r in enumerate(result.layers) if r.layout.startswith("TOKENS")]
    assert all(tuple(data["map_shape"][i]) == (4, 4) for i in tokens)
    np.testing.assert_allclose(cams, result.cams.numpy(), rtol=1e-6, atol=0)
    assert cams[tokens].any()


def test_load_cams_of_a_volume_upsamples_trilinear(tmp_path):
    from conftest import tiny_net3d, tiny_volume

    result = camanim.animate(tiny_net3d(), tiny_volume(), layers="all")
    data, cams = _saved_and_loaded(result, tmp_path)
    assert str(data["upsample"]) == "trilinear" and tuple(data["size"]) == (8, 12, 16)
    assert cams.shape == tuple(result.cams.shape) and cams.ndim == 4
    assert any(start >= 0 and tuple(s) != (8, 12, 16) for s, start in zip(data["map_shape"], data["map_start"]))
    np.testing.assert_allclose(cams, result.cams.numpy(), rtol=1e-6, atol=0)


def test_aug_smooth_cams_are_stored_whole_and_a_run_folder_loads(tmp_path):
    """Maps averaged at input size are no upsampling of layer maps: the file keeps them whole."""
    torch.manual_seed(0)
    result = camanim.animate("resnet18", torch.rand(1, 3, 32, 32), weights="none", layers="layer4*", aug_smooth=True)
    assert result.maps is None
    data, cams = _saved_and_loaded(result, tmp_path)
    assert "cams" in data.files and "map_values" not in data.files
    assert cams.tobytes() == result.cams.numpy().tobytes()
    result.save(tmp_path / "run", video=False, report=False, normalisations=("local",))
    np.testing.assert_allclose(camanim.load_cams(tmp_path / "run"), result.cams.numpy(), rtol=1e-6, atol=0)
    with pytest.raises(InputError, match="does not exist"):
        camanim.load_cams(tmp_path / "nowhere")


def test_a_numpy_reader_rebuilds_the_cams_from_the_documented_keys(tmp_path):
    """The keys as the module docstring describes them, read with numpy and scipy-free bilinear weights."""
    torch.manual_seed(0)
    result = camanim.animate("resnet18", torch.rand(1, 3, 24, 40), weights="none", layers="layer2*")
    data = np.load(write_cams(tmp_path / "cams.npz", result.saved_cams()))
    H, W = data["size"]

    def weights(n_in, n_out):  # bilinear, pixel centres aligned (align_corners=False), as documented
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        w = np.zeros((n_out, n_in))
        np.add.at(w, (np.arange(n_out), lo), 1 - (src - lo))
        np.add.at(w, (np.arange(n_out), hi), src - lo)
        return w

    for i, (start, shape) in enumerate(zip(data["map_start"], data["map_shape"])):
        if start < 0:
            assert not result.cams[i].any()
            continue
        m = data["map_values"][start:start + np.prod(shape)].reshape(shape).astype(np.float64)
        cam = weights(shape[0], H) @ m @ weights(shape[1], W).T
        np.testing.assert_allclose(cam, result.cams[i].numpy(), rtol=1e-5, atol=1e-7 * float(cam.max()))
