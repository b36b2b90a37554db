"""The best layer stated honestly: aliases, pass-through notes, chance band, separability, warnings."""

from __future__ import annotations

import numpy as np
import pytest

from camanim.road.verdict import TOP, chance_threshold, chance_warning, pass_through_notes, verdict

# timm's BatchNormAct2d: the norm runs functionally, then `drop` (Identity) and `act` (ReLU6) are called;
# the container returns act's output, so it records the same tensor as act (same_as).
TIMM_BLOCK = [
    {"name": "blocks.2.0.conv_dw", "module": "blocks.2.0.conv_dw", "type": "Conv2dSame", "same_as": None},
    {"name": "blocks.2.0.bn2.drop", "module": "blocks.2.0.bn2.drop", "type": "Identity", "same_as": None},
    {"name": "blocks.2.0.bn2.act", "module": "blocks.2.0.bn2.act", "type": "ReLU6", "same_as": None},
    {"name": "blocks.2.0.bn2", "module": "blocks.2.0.bn2", "type": "BatchNormAct2d", "same_as": 2},
    {"name": "blocks.2.0.drop_path", "module": "blocks.2.0.drop_path", "type": "Identity", "same_as": 2},
]


def test_pass_through_notes_name_what_timm_bn_drop_carries() -> None:
    notes = pass_through_notes(TIMM_BLOCK)
    # only bn2.drop carries a value nobody else recorded; drop_path passes on act's output (same_as)
    assert notes == [None, "BatchNorm output, before activation", None, None, None]


def test_pass_through_note_when_the_act_is_an_identity() -> None:
    # timm's bn3 has no activation: its act is an Identity that passes drop's tensor on (same_as)
    layers = [
        {"name": "b.bn3.drop", "module": "b.bn3.drop", "type": "Identity", "same_as": None},
        {"name": "b.bn3.act", "module": "b.bn3.act", "type": "Identity", "same_as": 0},
        {"name": "b.bn3", "module": "b.bn3", "type": "BatchNormAct2d", "same_as": 0},
    ]
    assert pass_through_notes(layers) == ["BatchNorm output (no activation follows)", None, None]


def test_pass_through_notes_other_parents() -> None:
    layers = [
        {"name": "enc.ln.drop", "module": "enc.ln.drop", "type": "Dropout"},
        {"name": "enc.ln", "module": "enc.ln", "type": "LayerNormAct"},
        {"name": "head.drop", "module": "head.drop", "type": "Identity"},
        {"name": "head", "module": "head", "type": "ClassifierHead"},
        {"name": "lonely", "module": "lonely", "type": "Identity"},
    ]
    assert pass_through_notes(layers) == [
        "LayerNorm output",
        None,
        "value computed inside ClassifierHead 'head', passed on unchanged",
        None,
        "input of this Identity, passed on unchanged",
    ]


def _names(n: int) -> list[str]:
    return [f"l{i}" for i in range(n)]


def test_aliases_are_one_candidate_named_by_the_first_layer() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(0, 0.001, (4, 5)) + np.array([0.1, 0.02, 0.1, 0.05, 0.1])
    draws[:, 2] = draws[:, 0]  # layer 2 shares layer 0's output: the very same scores
    draws[:, 4] = draws[:, 0]
    same_as = [None, None, 0, None, 0]
    out = verdict(draws, [True] * 5, _names(5), same_as, [None] * 5, (0.0, -0.01, 0.01))
    best = out["best"]
    assert best["index"] == 0 and best["name"] == "l0" and best["aliases"] == ["l2", "l4"]
    assert [c["index"] for c in out["candidates"]] == [0, 3, 1]  # aliases are not candidates of their own
    assert best["runner_up"]["name"] == "l3" and best["separable_from_runner_up"] is True
    assert best["separable_from_baseline"] is True and out["warnings"] == []
    assert "best layer 1 (l0; same CAM as l2, l4)" in out["statement"]
    assert out["above_baseline"] == [True, True, True, True, True]


def test_top_candidates_have_intervals_and_ties_are_not_separable() -> None:
    rng = np.random.default_rng(1)
    base = np.linspace(0.3, 0.0, 8)
    base[1] = base[0]  # the runner-up is as good as the best
    draws = base + rng.normal(0, 0.01, (5, 8))
    out = verdict(draws, [True] * 8, _names(8), [None] * 8, [None] * 8, (0.0, -0.05, 0.05))
    assert len(out["candidates"]) == TOP
    for c in out["candidates"]:
        lo, hi = c["ci"]
        assert lo < c["ybroad"] < hi
        assert c["ybroad"] == pytest.approx(draws[:, c["index"]].mean())
    assert out["best"]["separable_from_runner_up"] is False
    lo, hi = out["best"]["difference_ci"]
    assert lo < 0 < hi
    runner = out["best"]["runner_up"]
    assert f"separable from the runner-up, layer {runner['index'] + 1} ({runner['name']}, " in out["statement"]
    assert ": no;" in out["statement"]
    # layers at or below the band's upper end are marked
    assert out["above_baseline"][-1] is False and out["above_baseline"][0] is True


def test_no_layer_beats_the_baseline_is_said_in_words() -> None:
    draws = np.full((3, 4), 0.001) + np.arange(3)[:, None] * 1e-4
    out = verdict(draws, [True, True, False, True], _names(4), [None] * 4, [None] * 4, (0.0, -0.01, 0.01))
    assert out["above_baseline"] == [False, False, None, False]
    assert any("no layer beats the chance baseline" in w for w in out["warnings"])
    assert out["best"]["separable_from_baseline"] is False


def test_one_trial_gives_no_interval_and_says_so() -> None:
    draws = np.array([[0.2, 0.1, 0.15]])
    out = verdict(draws, [True] * 3, _names(3), [None] * 3, [None] * 3, (0.0, 0.0, 0.0))
    best = out["best"]
    assert best["index"] == 0 and best["ci"] is None and best["separable_from_runner_up"] is None
    assert "one trial: no interval can be given; repeat with --road-trials 2 or more" in out["warnings"]
    # a band from one random ranking is one value: no layer is called above (or below) it
    assert out["above_baseline"] == [None, None, None]
    assert not any("no layer beats" in w for w in out["warnings"])
    one_image = verdict(draws, [True] * 3, _names(3), [None] * 3, [None] * 3, (0.0, 0.0, 0.0), unit="images")
    assert "one image: no interval can be given; score 2 or more images" in one_image["warnings"]


def test_chance_warning_below_two_over_num_classes() -> None:
    text = chance_warning(0.001, 1000)
    assert text is not None and "0.100%" in text and "2/1000 classes = 0.200%" in text
    assert chance_warning(0.0021, 1000) is None
    assert chance_warning(None, 1000) is None and chance_warning(0.1, None) is None


@pytest.mark.parametrize(("classes", "kind", "threshold"), [
    (1000, "softmax", 0.002), (5, "softmax", 0.4), (4, "softmax", 0.5), (3, "softmax", 1 / 3),
    (2, "softmax", 0.5), (2, "sigmoid", 0.5), (14, "sigmoid", 0.5)])
def test_chance_threshold_by_number_of_classes_and_probability(classes, kind, threshold) -> None:
    assert chance_threshold(classes, kind) == pytest.approx(threshold)


def test_a_predicted_class_of_a_three_class_model_is_not_low_confidence() -> None:
    # 45% on the argmax of three classes is above chance (1/3): no warning
    assert chance_warning(0.45, 3) is None
    text = chance_warning(0.30, 3)
    assert text is not None and "below chance, 1/3 classes = 33.333%" in text and "(softmax)" in text
    sig = chance_warning(0.27, 2, "sigmoid")
    assert sig is not None and "sigmoid's 1/2" in sig and chance_warning(0.73, 2, "sigmoid") is None


def test_a_mean_above_the_band_whose_interval_is_not_is_said_in_words_that_agree() -> None:
    """(review) ``above_baseline`` (the mean above the band's top) was True while the statement said
    "above the chance band: no" (its interval was not): the statement names the interval."""
    draws = np.array([[0.30, 0.0], [0.00, 0.0], [0.15, 0.0]])  # mean 0.15, 95% t interval about -0.22 to +0.52
    out = verdict(draws, [True, True], _names(2), [None, None], [None, None], (0.0, -0.01, 0.05), unit="images")
    assert out["above_baseline"] == [True, False]
    assert out["best"]["separable_from_baseline"] is False
    assert "interval above the chance band (up to +0.05): no" in out["statement"]
    assert "; above the chance band" not in out["statement"]
