"""Multi-label models (one sigmoid per finding): a finding's label as the target, ``topk:K`` ranked by
sigmoid, and every score the sigmoid of the finding's own logit, not a softmax across findings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camanim
from camanim import InputError

FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Nodule", "Pneumothorax"]


def _multilabel() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, len(FINDINGS))).eval()


@pytest.fixture(scope="module")
def case():
    model = _multilabel()
    x = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = torch.sigmoid(model(x))[0]
    return model, x, probs


def test_target_by_finding_label_scores_its_sigmoid(case):
    model, x, probs = case
    res = camanim.animate(model, x, labels=FINDINGS, target="effusion", score="sigmoid", layers="2")
    assert (res.target.index, res.target.label) == (2, "Effusion")
    assert res.target.score == pytest.approx(float(probs[2]), abs=1e-6)
    assert res.options["probability"] == "sigmoid"
    # the sigmoid probabilities of a multi-label model do not sum to 1 (they are not a softmax)
    assert abs(float(probs.sum()) - 1.0) > 0.1


def test_topk_ranks_findings_by_sigmoid(case):
    model, x, probs = case
    out = camanim.animate(model, x, labels=FINDINGS, target="topk:3", score="sigmoid", layers="2")
    ranked = torch.argsort(probs, descending=True)[:3].tolist()
    assert [r.target.index for r in out] == ranked
    assert [r.target.label for r in out] == [FINDINGS[k] for k in ranked]
    assert [r.target.score for r in out] == pytest.approx([float(probs[k]) for k in ranked], abs=1e-6)


def test_unknown_finding_is_one_line(case):
    model, x, _ = case
    with pytest.raises(InputError, match=r"target 'Fracture' is not a class label of this model") as err:
        camanim.animate(model, x, labels=FINDINGS, target="Fracture", score="sigmoid", layers="2")
    assert "\n" not in str(err.value)
