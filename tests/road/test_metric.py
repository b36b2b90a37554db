"""ybROAD: exact removal counts, ROAD's imputation and scores against pytorch-grad-cam, files."""

from __future__ import annotations

import csv
import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics import road as ref_road
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

import camanim
import camanim.road.imputation as imputation
from camanim.road import YbRoad, removal_masks, write_ybroad, ybroad
from camanim.road.files import tick_positions
from camanim.road.imputation import linear_imputation, nested_dissection_rank

H = W = 32
PCTS = (20, 40, 60, 80)


def _net() -> nn.Module:
    """A tiny seeded CNN for 3x32x32 inputs (the score must react to pixel changes)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    ).eval()


@pytest.fixture
def net() -> nn.Module:
    return _net()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))


def _tie_free_cams(n: int, seed: int = 2) -> torch.Tensor:
    """CAMs whose values are distinct multiples of 1/1024, so ``1 - cam`` (the reference's LeRF) is exact too."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(H * W, generator=g).float().reshape(H, W) / (H * W) for _ in range(n)])


# ------------------------------------------------------------------ which pixels go

def test_removal_masks_break_ties_by_flat_index() -> None:
    cam = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    morf, lerf = removal_masks(cam, [50, 0])
    # k = 3: the two ones, then the first zero in flat order; LeRF: the first three zeros.
    assert morf[0].tolist() == [[True, True, False], [True, False, False]]
    assert lerf[0].tolist() == [[True, False, True], [False, True, False]]
    assert not morf[1].any() and not lerf[1].any()


def test_exactly_k_removed_where_reference_threshold_is_not() -> None:
    """A ReLU-like CAM, 70% exact zeros: we remove exactly k; the reference's percentile threshold cannot."""
    g = torch.Generator().manual_seed(3)
    cam = torch.rand(H, W, generator=g)
    cam[torch.rand(H, W, generator=g) < 0.7] = 0.0
    n_zero = int((cam == 0).sum())
    morf, lerf = removal_masks(cam, PCTS)
    expected = [round(p / 100 * H * W) for p in PCTS]  # 205, 410, 614, 819 (no .5 cases here)
    assert [int(m.sum()) for m in morf] == expected
    assert [int(m.sum()) for m in lerf] == expected
    # MoRF takes the largest values: everything removed is >= everything kept.
    for m in morf:
        assert cam[m].min() >= cam[~m].max()
    for m in lerf:
        assert cam[m].max() <= cam[~m].min()

    def reference_removed(metric: type, kept_pct: float, mask: torch.Tensor) -> int:
        seen = {}
        metric(kept_pct, lambda img, keep: seen.setdefault("keep", keep))(torch.zeros(3, H, W), mask)
        return int((seen["keep"] == 0).sum())

    # 40% removed: the 60th percentile is 0, nothing is "< 0", so MoRF removes the whole image...
    assert reference_removed(RemoveMostRelevantFirst, 60, cam) == H * W
    # ...and LeRF keeps only the non-zero pixels, removing all zeros instead of 410 pixels.
    assert reference_removed(RemoveLeastRelevantFirst, 60, cam) >= n_zero > expected[1]


@pytest.mark.parametrize("pcts", [(100,), (-1,), (), (99.99,)])
def test_percentages_must_leave_pixels(pcts: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="percentiles"):
        removal_masks(torch.rand(4, 4), pcts)


# ------------------------------------------------------------------ imputation

def test_imputation_hand_values() -> None:
    img = torch.zeros(1, 3, 3)
    img[0, 0, 1], img[0, 1, 0], img[0, 1, 1] = 6.0, 12.0, 24.0
    removed = torch.zeros(2, 3, 3, dtype=torch.bool)
    removed[0, 1, 1] = True  # interior: all 8 neighbours, weights sum to 1
    removed[1, 0, 0] = True  # corner: 3 in-image neighbours, weights 1/6 + 1/6 + 1/12 renormalised
    out = linear_imputation(img, removed)
    assert out[0, 0, 1, 1].item() == pytest.approx(6 / 6 + 12 / 6)
    assert out[1, 0, 0, 0].item() == pytest.approx((6 / 6 + 12 / 6 + 24 / 12) / (5 / 12))
    # Kept pixels are untouched.
    torch.testing.assert_close(out[0][~removed[0].expand(1, 3, 3)], img[~removed[0].expand(1, 3, 3)])


def test_imputation_preserves_a_constant_image() -> None:
    removed = torch.rand(3, 9, 11, generator=torch.Generator().manual_seed(0)) < torch.tensor([0.1, 0.5, 0.95])[
        :, None, None]
    out = linear_imputation(torch.full((2, 9, 11), 0.25), removed)
    torch.testing.assert_close(out, torch.full((3, 2, 9, 11), 0.25), atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(32, 32), (17, 23)])
def test_imputation_equals_reference_noisy_linear_imputer(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(4)
    img = torch.randn(3, *shape, generator=g)
    fractions = torch.tensor([0.02, 0.2, 0.5, 0.8, 0.97])
    removed = torch.rand(len(fractions), *shape, generator=g) < fractions[:, None, None]
    # One large blob touching two borders, the hardest system.
    blob = torch.zeros(shape, dtype=torch.bool)
    blob[: shape[0] * 3 // 4, shape[1] // 4:] = True
    removed = torch.cat([removed, blob[None]])
    reference = ref_road.NoisyLinearImputer(noise=0.0)
    expected = torch.stack([reference(img, (~m).float()) for m in removed])
    torch.testing.assert_close(linear_imputation(img, removed), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(linear_imputation(img, removed, workers=2), expected, atol=1e-4, rtol=0)


def test_nested_dissection_rank_is_a_permutation_with_separators_last() -> None:
    rank = nested_dissection_rank(7, 5)
    assert sorted(rank.tolist()) == list(range(35))
    # The first split is the middle row (row 3), eliminated after both halves.
    assert set(rank.reshape(7, 5)[3].tolist()) == set(range(30, 35))


# ------------------------------------------------------------------ scores

def _reference_scores(net: nn.Module, x: torch.Tensor, cams: torch.Tensor, target: int, score: str,
                      monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pytorch-grad-cam's per-percentage MoRF/LeRF and ROADCombined, noise switched off."""
    class NoiseFree(ref_road.NoisyLinearImputer):
        def __init__(self) -> None:
            super().__init__(noise=0.0)

    # ROAD*RelevantFirst build their imputer by this module-level name, with noise 0.01.
    monkeypatch.setattr(ref_road, "NoisyLinearImputer", NoiseFree)
    n = cams.shape[0]
    make = ClassifierOutputSoftmaxTarget if score == "prob" else ClassifierOutputTarget
    targets = [make(target)] * n
    batch, cams_np = x.repeat(n, 1, 1, 1), cams.numpy()
    kept = [100 - p for p in PCTS]  # the reference's percentile is the share of pixels KEPT
    morf = np.stack([ref_road.ROADMostRelevantFirst(q)(batch, cams_np, targets, net) for q in kept], axis=1)
    lerf = np.stack([ref_road.ROADLeastRelevantFirst(q)(batch, cams_np, targets, net) for q in kept], axis=1)
    combined = ref_road.ROADCombined(percentiles=kept)(batch, cams_np, targets, net)
    return morf, lerf, combined


@pytest.mark.parametrize("score", ["prob", "logit"])
def test_scores_equal_pytorch_grad_cam_road(net: nn.Module, x: torch.Tensor, score: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cams = _tie_free_cams(3)
    ours = ybroad(net, x, cams, 2, percentiles=PCTS, score=score, noise=0.0)
    morf, lerf, combined = _reference_scores(net, x, cams, 2, score, monkeypatch)
    torch.testing.assert_close(ours.morf[0], torch.from_numpy(morf).double(), atol=1e-3, rtol=0)
    torch.testing.assert_close(ours.lerf[0], torch.from_numpy(lerf).double(), atol=1e-3, rtol=0)
    torch.testing.assert_close(ours.curve_mean, torch.from_numpy(combined).double(), atol=1e-3, rtol=0)
    # The comparison must not be vacuous: the perturbations move the score.
    assert ours.morf.abs().max() > (1e-3 if score == "prob" else 1e-2)


def test_combined_and_summaries_follow_the_definitions(net: nn.Module, x: torch.Tensor) -> None:
    res = ybroad(net, x, _tie_free_cams(4), 1, noise=0.05, trials=3)
    torch.testing.assert_close(res.combined, (res.lerf - res.morf) / 2)
    torch.testing.assert_close(res.curve, res.combined.mean(-1))
    torch.testing.assert_close(res.curve_mean, res.curve.mean(0))
    torch.testing.assert_close(res.curve_std, res.curve.std(0, correction=1))
    best = res.ybroad_max
    assert best is not None
    assert best.index == int(res.curve_mean.argmax()) and best.value == float(res.curve_mean.max())
    assert best.name == str(best.index)
    assert res.ybroad_mean == pytest.approx(float(res.curve_mean.mean()))


def test_constant_image_scores_zero(net: nn.Module) -> None:
    # Linear imputation reproduces a constant image exactly, so nothing changes.
    res = ybroad(net, torch.full((1, 3, H, W), 0.3), _tie_free_cams(2), 0, noise=0.0, score="logit")
    torch.testing.assert_close(res.morf, torch.zeros_like(res.morf), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.lerf, torch.zeros_like(res.lerf), atol=1e-6, rtol=0)


def test_undefined_layers_are_nan_and_skipped(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(4)
    cams[1] = 0.5  # constant: no ranking
    cams[3, 0, 0] = math.nan
    res = ybroad(net, x, cams, 1, noise=0.0, non_spatial=[False, False, True, False],
                 layer_names=["a", "b", "c", "d"])
    assert res.defined.tolist() == [True, False, False, False]
    assert torch.isnan(res.combined[:, 1:]).all() and not torch.isnan(res.combined[:, 0]).any()
    assert res.ybroad_max is not None and res.ybroad_max.index == 0 and res.ybroad_max.name == "a"
    assert res.ybroad_mean == pytest.approx(float(res.curve_mean[0]))
    # Layer 0 scores as if scored alone.
    alone = ybroad(net, x, cams[:1], 1, noise=0.0)
    torch.testing.assert_close(res.combined[:, :1], alone.combined)

    none = ybroad(net, x, cams[1:3], 1, non_spatial=[False, True])
    assert none.ybroad_max is None and math.isnan(none.ybroad_mean)
    data = none.to_json_dict()
    assert data["ybroad_max"] is None and data["ybroad_mean"] is None
    assert data["layers"][0]["combined"] == [None] * 4


def test_identical_masks_are_imputed_once(net: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    solved: list[int] = []
    original = imputation._solve_group

    def counting(image, removed, height, width):
        solved.append(removed.shape[0])
        return original(image, removed, height, width)

    monkeypatch.setattr(imputation, "_solve_group", counting)
    cams = _tie_free_cams(3)
    cams[1] = 3 * cams[0] + 1  # same ranking, same masks
    res = ybroad(net, x, cams, 0, noise=0.0, trials=2)
    # two distinct layers x MoRF/LeRF x percentages, and the chance baseline's own random ranking per trial
    assert sum(solved) == 2 * 2 * len(PCTS) + 2 * 2 * len(PCTS)
    torch.testing.assert_close(res.combined[:, 1], res.combined[:, 0], atol=1e-6, rtol=0)


def test_identical_masks_get_one_noisy_image_and_one_score(net: nn.Module, x: torch.Tensor) -> None:
    """Layers that remove the very same pixels (``same_as``) are scored on the same image: equal scores."""
    rec = _Recorder(net)
    cams = _tie_free_cams(2)
    cams = torch.stack([cams[0], cams[1], 2 * cams[0]])  # layer 2 ranks pixels as layer 0 does
    res = ybroad(rec, x, cams, 0, noise=0.05, seed=3, trials=2, batch_size=4)
    assert torch.equal(res.morf[:, 2], res.morf[:, 0]) and torch.equal(res.lerf[:, 2], res.lerf[:, 0])
    assert (res.morf[:, 1] - res.morf[:, 0]).abs().max() > 0
    # the clean image, then one image per distinct mask and trial: 2 layers x 2 directions x 4 x 2 trials,
    # and the chance baseline: one random ranking per trial, each scored with its own trial's noise only
    assert sum(len(batch) for batch in rec.seen) == 1 + 2 * 2 * len(PCTS) * 2 + 2 * 2 * len(PCTS)
    # a layer's numbers do not depend on which other layers are scored with it
    alone = ybroad(net, x, cams[:1], 0, noise=0.05, seed=3, trials=2)
    torch.testing.assert_close(alone.combined[:, 0], res.combined[:, 0], atol=1e-6, rtol=0)


class _FailsOnBatches(nn.Module):
    """Scores the clean image, then fails on the first perturbed batch."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] > 1:
            raise RuntimeError("boom")
        return self.inner(images)


def test_torch_threads_restored_after_scoring_and_after_a_failure(net: nn.Module, x: torch.Tensor) -> None:
    threads = torch.get_num_threads()
    ybroad(net, x, _tie_free_cams(2), 0, noise=0.0, batch_size=4)
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError, match="boom"):
        ybroad(_FailsOnBatches(net), x, _tie_free_cams(2), 0, noise=0.0, batch_size=4)
    assert torch.get_num_threads() == threads and not net.training


class _DictOut(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": images.mean(dim=(2, 3)), "scores": self.inner(images)}


def test_models_with_dict_outputs_take_an_output_key(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(2)
    expected = ybroad(net, x, cams, 1, noise=0.0)
    got = ybroad(_DictOut(net), x, cams, 1, noise=0.0, output_key="scores")
    torch.testing.assert_close(got.combined, expected.combined)
    with pytest.raises(camanim.InputError, match="--output-key"):
        ybroad(_DictOut(net), x, cams, 1, noise=0.0)


class _Recorder(nn.Module):
    """Wraps a model and keeps every image it is shown."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images.clone())
        return self.inner(images)


def test_noise_only_on_removed_pixels_with_requested_std(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(1)
    rec = _Recorder(net)
    ybroad(rec, x, cams, 0, percentiles=(60,), noise=0.2, batch_size=1)
    clean, morf_img = rec.seen[0][0], rec.seen[1][0]  # clean forward first, then MoRF 60%
    removed = removal_masks(cams[0], (60,))[0][0]
    noise_free = linear_imputation(x[0], removed[None])[0]
    diff = morf_img - noise_free
    torch.testing.assert_close(morf_img[:, ~removed], clean[:, ~removed], atol=0, rtol=0)
    assert diff[:, removed].std().item() == pytest.approx(0.2, rel=0.05)
    assert abs(diff[:, removed].mean().item()) < 0.02


def test_seeded_reproducible_and_independent_of_batching(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(3)
    a = ybroad(net, x, cams, 3, noise=0.1, seed=7, trials=2, batch_size=5)
    b = ybroad(net, x, cams, 3, noise=0.1, seed=7, trials=2, batch_size=64)
    torch.testing.assert_close(a.combined, b.combined, atol=1e-6, rtol=0)
    one = ybroad(net, x, cams, 3, noise=0.1, seed=7, trials=1)
    torch.testing.assert_close(one.combined[0], a.combined[0], atol=1e-6, rtol=0)  # trial 0 is trial 0
    assert (a.morf[0] - a.morf[1]).abs().max() > 1e-5  # trials differ
    other = ybroad(net, x, cams, 3, noise=0.1, seed=8, trials=1)
    assert (other.morf[0] - one.morf[0]).abs().max() > 1e-5


def test_train_mode_is_restored_and_does_not_change_scores(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(2)
    expected = ybroad(net, x, cams, 1, noise=0.0)
    net.train()
    got = ybroad(net, x, cams, 1, noise=0.0)
    assert net.training and all(m.training for m in net.modules())
    torch.testing.assert_close(got.combined, expected.combined)


def test_progress_counts_every_perturbed_image(net: nn.Module, x: torch.Tensor) -> None:
    calls: list[tuple[int, int]] = []
    ybroad(net, x, _tie_free_cams(2), 0, trials=2, batch_size=7, progress=lambda d, t: calls.append((d, t)))
    total = 2 * 2 * 2 * len(PCTS) + 2 * 2 * len(PCTS)  # layers x directions x trials x pcts + the baseline
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"score": "accuracy"}, ValueError),
        ({"percentiles": (20, 100)}, ValueError),
        ({"trials": 0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"noise": -0.1}, ValueError),
        ({"seed": -1}, ValueError),
        ({"target": 5}, ValueError),
        ({"target": 1.0}, TypeError),
        ({"layer_names": ["only-one"]}, ValueError),
        ({"cams": torch.rand(2, H, W + 1)}, ValueError),
        ({"cams": np.zeros((2, H, W))}, TypeError),
        ({"input_tensor": torch.rand(2, 3, H, W)}, ValueError),
    ],
)
def test_bad_arguments(net: nn.Module, x: torch.Tensor, kwargs: dict, error: type) -> None:
    args = {"model": net, "input_tensor": x, "cams": _tie_free_cams(2), "target": 0, **kwargs}
    with pytest.raises(error):
        ybroad(**args)


# ------------------------------------------------------------------ files

def _fake(n: int, trials: int, seed: int = 0) -> YbRoad:
    g = torch.Generator().manual_seed(seed)
    morf = torch.randn(trials, n, 2, generator=g, dtype=torch.float64)
    lerf = torch.randn(trials, n, 2, generator=g, dtype=torch.float64)
    defined = torch.ones(n, dtype=torch.bool)
    defined[1] = False
    morf[:, 1] = lerf[:, 1] = math.nan
    return YbRoad(percentiles=(25.0, 62.5), score="logit", noise=0.01, seed=0, trials=trials,
                  layer_names=[f"features.{i}.conv" for i in range(n)], morf=morf, lerf=lerf,
                  combined=(lerf - morf) / 2, defined=defined)


def test_write_ybroad_files_hold_the_result(tmp_path) -> None:
    res = _fake(5, trials=3)
    paths = write_ybroad(tmp_path / "out", res)
    assert set(paths) == {"csv", "json", "png"}

    data = json.loads(paths["json"].read_text())
    assert data["percentiles"] == [25, 62.5] and data["percent_meaning"] == "pixels removed"
    assert data["score"] == "logit" and data["trials"] == 3 and data["seed"] == 0
    old_keys = {"index": 1, "name": "features.1.conv", "defined": False, "morf": [None, None],
                "lerf": [None, None], "combined": [None, None], "ybroad": None, "ybroad_std": None}
    assert {k: data["layers"][1][k] for k in old_keys} == old_keys  # the keys readers had stay as they were
    assert data["layers"][1]["ybroad_ci"] is None and data["layers"][1]["above_baseline"] is None
    lo, hi = res.curve_ci
    assert data["layers"][4]["ybroad_ci"] == pytest.approx([lo[4], hi[4]])
    assert data["layers"][4]["morf_mean"] == pytest.approx(float(res.morf[:, 4].mean()))
    assert data["score_label"] == "Δ logit"
    best = res.ybroad_max
    assert data["ybroad_max"] == {"value": best.value, "index": best.index, "name": best.name}
    assert data["ybroad_mean"] == pytest.approx(res.ybroad_mean)
    assert data["layers"][4]["lerf"] == pytest.approx(res.lerf[:, 4].mean(0).tolist())

    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["index", "name", "defined", "morf_25", "lerf_25", "combined_25", "morf_62.5",
                             "lerf_62.5", "combined_62.5", "ybroad", "ybroad_std", "ybroad_ci_low", "ybroad_ci_high",
                             "morf_mean", "lerf_mean", "above_baseline", "baseline_band_low", "baseline_band_high",
                             "same_as", "note"]
    assert float(rows[4]["ybroad_ci_low"]) == pytest.approx(lo[4]) and rows[1]["ybroad_ci_low"] == ""
    assert rows[1]["defined"] == "False" and rows[1]["ybroad"] == ""
    for i in (0, 2, 3, 4):
        assert float(rows[i]["combined_62.5"]) == pytest.approx(float(res.combined[:, i, 1].mean()))
        assert float(rows[i]["ybroad"]) == pytest.approx(float(res.curve_mean[i]))
        assert float(rows[i]["ybroad_std"]) == pytest.approx(float(res.curve_std[i]))

    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_png_with_hundreds_of_layers_and_one_trial(tmp_path) -> None:
    paths = write_ybroad(tmp_path, _fake(300, trials=1))
    assert json.loads(paths["json"].read_text())["layers"][0]["ybroad_std"] is None  # one trial: no spread
    assert paths["png"].stat().st_size > 10_000


def test_tick_labels_are_thinned() -> None:
    assert tick_positions(10).tolist() == list(range(10))
    ticks = tick_positions(300)
    assert ticks[0] == 0 and len(ticks) <= 40 and np.all(np.diff(ticks) == 8)


def _with_baseline(res: YbRoad, seed: int = 5) -> YbRoad:
    g = torch.Generator().manual_seed(seed)
    res.baseline_morf = torch.randn(res.trials, len(res.percentiles), generator=g, dtype=torch.float64) * 0.01
    res.baseline_lerf = torch.randn(res.trials, len(res.percentiles), generator=g, dtype=torch.float64) * 0.01
    return res


@pytest.mark.parametrize(("n", "trials"), [(5, 3), (300, 1)])
def test_png_labels_are_inside_the_figure(n: int, trials: int) -> None:
    """No clipped text: every label, tick label, title and legend lies inside the saved figure; the y axes
    name the score used, and the top panel has the chance band and the two curves are in the bottom one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (the figure's canvas)
    from matplotlib.text import Text

    from camanim.road.files import ybroad_figure

    res = _with_baseline(_fake(n, trials=trials))
    res.layer_names = [f"blocks.{i}.0.bn2.drop_with_a_rather_long_name" for i in range(n)]
    fig = ybroad_figure(res)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 20
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, \
            t.get_text()
    top, bottom = fig.axes[:2]
    assert "Δ logit" in top.get_ylabel() and "Δ logit" in bottom.get_ylabel()
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert any(text.startswith("chance:") and "95% band" in text for text in labels) or trials == 1
    assert {"C_MoRF: most relevant removed first", "C_LeRF: least relevant removed first",
            "MORF of random rankings", "LERF of random rankings"} == {t.get_text() for t in bottom.get_legend().get_texts()}


def test_chance_baseline_is_the_roads_of_seeded_random_rankings(net: nn.Module, x: torch.Tensor) -> None:
    """Trial t's baseline removes pixels in the order of the permutation drawn from (seed, t, BASELINE_STREAM);
    its scores equal scoring those imputed images by hand (noise 0), and do not change the layers' scores."""
    from camanim.road.metric import baseline_orders

    cams = _tie_free_cams(2)
    res = ybroad(net, x, cams, 1, noise=0.0, seed=4, trials=2, score="logit")
    orders = baseline_orders(H * W, 4, 2)
    assert np.array_equal(orders[1], np.random.default_rng((4, 1, 0x62617365)).permutation(H * W))
    with torch.no_grad():
        base = float(net(x)[0, 1])
        for t in range(2):
            ranking = torch.empty(H * W)
            ranking[torch.from_numpy(orders[t])] = torch.arange(H * W, 0, -1).float()  # first = most relevant
            morf, lerf = removal_masks(ranking.reshape(H, W), PCTS)
            for direction, masks in enumerate((morf, lerf)):
                scores = net(linear_imputation(x[0], masks))[:, 1] - base
                got = (res.baseline_morf if direction == 0 else res.baseline_lerf)[t]
                torch.testing.assert_close(got, scores.double(), atol=1e-5, rtol=0)
    alone = ybroad(net, x, cams, 1, noise=0.0, seed=4, trials=1, score="logit")
    torch.testing.assert_close(alone.combined[0], res.combined[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone.baseline_morf[0], res.baseline_morf[0], atol=1e-6, rtol=0)
    band = res.baseline_band
    curve = res.baseline_curve
    assert band is not None and curve is not None and band[1] < curve.mean() < band[2]


def test_same_seed_same_numbers_other_seed_other_baseline(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(2)
    a = ybroad(net, x, cams, 0, seed=9, trials=2)
    b = ybroad(net, x, cams, 0, seed=9, trials=2, batch_size=3)
    assert a.to_json_dict() == b.to_json_dict()
    c = ybroad(net, x, cams, 0, seed=10, trials=2)
    assert (c.baseline_morf - a.baseline_morf).abs().max() > 1e-6


def test_layers_give_aliases_notes_and_the_target_probability(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(3)
    cams[2] = cams[1]  # layer 2 shares layer 1's output
    layers = [
        {"name": "b.conv", "module": "b.conv", "type": "Conv2d", "same_as": None},
        {"name": "b.bn.drop", "module": "b.bn.drop", "type": "Identity", "same_as": None},
        {"name": "b.bn", "module": "b.bn", "type": "BatchNormAct2d", "same_as": 1},
    ]
    res = ybroad(net, x, cams, 2, layers=layers, trials=2)
    with torch.no_grad():
        prob = float(net(x).softmax(1)[0, 2])
    assert res.target_probability == pytest.approx(prob, abs=1e-6) and res.num_classes == 5
    data = res.to_json_dict()
    assert [e["name"] for e in data["layers"]] == ["b.conv", "b.bn.drop", "b.bn"]
    assert data["layers"][1]["aliases"] == ["b.bn"] and data["layers"][2]["same_as"] == 1
    assert data["layers"][1]["note"] == "BatchNorm output"
    assert data["target"]["probability"] == pytest.approx(prob, abs=1e-6)
    assert data["target"]["chance_threshold"] == pytest.approx(2 / 5)
    names = [c["name"] for c in data["candidates"]]
    assert "b.bn" not in names and set(names) == {"b.conv", "b.bn.drop"}
    assert data["best"]["name"] == res.ybroad_max.name and data["ybroad_max"]["name"] != "b.bn"
    # the warning follows the model's confidence: under 2/5 here or not, it says so exactly then
    assert any(w.startswith("low confidence") for w in data["warnings"]) == (prob < 0.4)


def test_no_noise_trials_are_one_draw_and_give_no_interval(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(2)
    yb = ybroad(net, x, cams, 0, seed=3, trials=3, noise=0.0)
    # every trial imputes the same images: the per-trial scores are equal...
    torch.testing.assert_close(yb.curve[0], yb.curve[1])
    judged = yb.verdict()
    # ...so no interval, no separability and the reason in words
    assert all(c["ci"] is None for c in judged["candidates"])
    assert judged["best"]["separable_from_runner_up"] is None
    assert any("--road-noise 0 makes the 3 trials one draw repeated" in w for w in judged["warnings"])


def test_table_and_plot_of_a_ybroad(net: nn.Module, x: torch.Tensor) -> None:
    cams = _tie_free_cams(4)
    cams[1] = 0.5  # undefined: no ranking
    res = ybroad(net, x, cams, 1, noise=0.05, trials=3, layer_names=["a", "b", "c", "d"])
    rows = res.to_rows()
    data = res.to_json_dict()["layers"]
    assert [r["name"] for r in rows] == ["a", "b", "c", "d"] and [r["index"] for r in rows] == [0, 1, 2, 3]
    for row, layer in zip(rows, data):
        assert row["ybroad"] == (None if layer["ybroad"] is None else pytest.approx(layer["ybroad"]))
        assert row["above_baseline"] == layer["above_baseline"]
    assert rows[1]["ybroad"] is None and rows[1]["ci_low"] is None
    assert rows[0]["ci_low"] <= rows[0]["ybroad"] <= rows[0]["ci_high"]
    ax = res.plot()
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == [1, 2, 3, 4]  # layers count from 1
    np.testing.assert_allclose(ys, res.curve_mean.numpy())
    best = ax.lines[1].get_data()
    assert best[0][0] == res.ybroad_max.index + 1 and best[1][0] == pytest.approx(res.ybroad_max.value)


def test_plot_has_whole_layer_ticks_a_visible_label_and_no_star_when_not_trusted(net: nn.Module, x: torch.Tensor
                                                                                ) -> None:
    """(review) The x axis counts layers in whole numbers, its label is inside the figure, and a best layer
    the verdict warns about is drawn as a hollow ring saying so, as ybroad.png and the report do."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    cams = _tie_free_cams(5)
    warned = ybroad(net, x, cams, 1, noise=0.0, trials=3, layer_names=list("abcde"))
    assert warned.verdict()["warnings"]
    trusted = ybroad(net, x, cams, 1, noise=0.05, trials=3, layer_names=list("abcde"))
    for res in (warned, trusted):
        ax = res.plot()
        fig = ax.figure
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        label = ax.xaxis.label.get_window_extent(canvas.get_renderer())
        assert label.y0 >= 0 and label.x1 <= fig.bbox.width, label
        best = ax.lines[1]
        if res.verdict()["warnings"]:
            assert best.get_marker() == "o" and best.get_markerfacecolor() == "none"
            assert "not trusted" in best.get_label()
        else:
            assert best.get_marker() == "*" and best.get_label().startswith("best: layer")


def test_ybroad_repr_is_one_short_line(net: nn.Module, x: torch.Tensor) -> None:
    from camanim.road import ybroad_across

    res = ybroad(net, x, _tie_free_cams(3), 1, noise=0.05, trials=2, layer_names=["a", "b", "c"])
    text = repr(res)
    assert "\n" not in text and len(text) < 300 and "tensor" not in text, text
    best = res.ybroad_max
    assert text.startswith("YbRoad(3 layers") and f"max={best.value:.3g} at layer {best.index + 1} ({best.name})" in text
    across = ybroad_across([res, res], ["one.png", "two.png"])
    text = repr(across)
    assert "\n" not in text and len(text) < 300 and "tensor" not in text, text
    assert text.startswith("YbRoadAcross(2 images, 3 layers")


def test_to_pandas_is_optional(net: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    res = ybroad(net, x, _tie_free_cams(2), 1, noise=0.0, layer_names=["a", "b"])
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match="to_rows"):
        res.to_pandas()
    monkeypatch.undo()
    pd = pytest.importorskip("pandas")
    frame = res.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == ["a", "b"]
    assert frame.loc["a", "ybroad"] == pytest.approx(res.to_rows()[0]["ybroad"])


class _Concurrency(nn.Module):
    """Records how many perturbed batches are scored at the same time (each forward waits a little)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.lock = threading.Lock()
        self.now = self.most = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.02)
            return self.inner(images)
        finally:
            with self.lock:
                self.now -= 1


def test_forward_streams_follow_the_callers_torch_threads(net: nn.Module, x: torch.Tensor) -> None:
    """A sweep worker's budget (``torch.set_num_threads``, its ``--threads``) bounds ROAD's forward streams,
    whatever the machine's core count: workers x threads stays the cores."""
    threads = torch.get_num_threads()
    model = _Concurrency(net)
    try:
        torch.set_num_threads(1)
        ybroad(model, x, _tie_free_cams(4), 0, noise=0.0, batch_size=2)
        assert model.most == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
