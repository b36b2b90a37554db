"""CAM (Zhou et al. 2016): equal to torchcam's where a layer feeds the classifier, flagged elsewhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import no_inplace, small_net
from torchcam.methods import CAM

from camanim import InputError, get_method
from camanim.cli import main
from camanim.compute.maps import layer_cams
from camanim.methods import MethodContext
from camanim.methods.activation import CAM_FLAG, classifier_weights
from camanim.trace import run_trace


def ours(model, x, layers="all", targets=None):
    tr = run_trace(model, x, layers, gradients=False, targets=targets)
    ctx = MethodContext(model=model, input_tensor=x)
    with pytest.warns(RuntimeWarning, match="CAM does not apply"):
        cams = layer_cams(tr, get_method("cam"), ctx)
    return tr, cams


def torchcam_raw(model, x, layer, fc, target):
    with CAM(model, layer, fc, input_shape=tuple(x.shape[1:])) as extractor:
        with torch.no_grad():
            model(x)
        return F.relu(extractor(class_idx=target, normalized=False)[0])


def test_cam_equals_torchcam_on_the_layer_that_feeds_the_classifier_and_is_flagged_elsewhere():
    model = small_net()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    tr, cams = ours(model, x, targets=[1, 3])
    by_name = {r.name: i for i, r in enumerate(tr.records)}
    last = by_name["features.7"]
    torch.testing.assert_close(cams[last], torchcam_raw(model, x, "features.7", "fc", [1, 3]), rtol=1e-5, atol=1e-6)
    assert CAM_FLAG not in tr.records[last].flags
    # features.6 (the conv before the last ReLU) has the classifier's channel count: torchcam gives it
    # a map; its spatial mean does not give the logits, so camanim flags it and leaves it empty
    conv = by_name["features.6"]
    assert torchcam_raw(model, x, "features.6", "fc", [1, 3]).abs().sum() > 0
    assert "not applicable" in tr.records[conv].flags[CAM_FLAG]
    assert float(cams[conv].abs().sum()) == 0.0
    flagged = {r.name for r in tr.records if CAM_FLAG in r.flags}
    assert flagged == {r.name for r in tr.records
                       if not r.non_spatial and r.same_as is None and r.name != "features.7"}


def test_resnet18_cam_applies_to_the_last_block_only():
    torch.manual_seed(0)
    model = no_inplace(torchvision.models.resnet18(weights=None, num_classes=5)).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tr, cams = ours(model, x, layers="layer4.1.conv2,layer4.1.bn2,layer4.1,layer4")
    assert not any(r.non_spatial for r in tr.records)
    applies = [r.name for r in tr.records if CAM_FLAG not in r.flags and r.same_as is None]
    assert applies == ["layer4.1"]
    i = [r.name for r in tr.records].index("layer4.1")
    torch.testing.assert_close(cams[i], torchcam_raw(model, x, "layer4.1", "fc", int(tr.targets[0])),
                               rtol=1e-5, atol=1e-6)


def test_classifier_weights_one_logit_and_no_match():
    fc = torch.nn.Linear(3, 1)
    pooled = torch.randn(2, 3)
    logits = fc(pooled).detach()
    w = classifier_weights(torch.nn.Sequential(fc), pooled, logits)
    torch.testing.assert_close(w, fc.weight.detach())
    assert classifier_weights(torch.nn.Sequential(fc), pooled + 1, logits) is None


class SharedOutputs(torch.nn.Module):
    """A conv whose output a Dropout (eval: the same tensor) hands on, and the last ReLU wrapped in an Identity."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.act = torch.nn.ReLU()
        self.same = torch.nn.Identity()
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.same(self.act(self.drop(self.conv(x)))).mean(dim=(2, 3)))


def test_layers_sharing_an_output_carry_the_cam_flag_of_the_layer_they_share_it_with():
    model = SharedOutputs().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    tr, cams = ours(model, x, targets=[2])
    by_name = {r.name: r for r in tr.records}
    assert by_name["drop"].same_as is not None and by_name["same"].same_as is not None
    # conv and the dropout sharing its output: not applicable, both flagged, both empty
    assert "not applicable" in by_name["conv"].flags[CAM_FLAG]
    assert by_name["drop"].flags[CAM_FLAG] == by_name["conv"].flags[CAM_FLAG]
    # the ReLU feeds the classifier; the Identity sharing its output is not flagged either, same map
    assert CAM_FLAG not in by_name["act"].flags and CAM_FLAG not in by_name["same"].flags
    i_act, i_same = (list(by_name).index(n) for n in ("act", "same"))
    assert float(cams[i_act].sum()) > 0 and torch.equal(cams[i_act], cams[i_same])


def test_cam_applying_to_none_of_the_chosen_layers_is_refused_in_one_line(tmp_path, capsys):
    """(review) CAM where no chosen layer feeds the classifier: one line naming why and what to choose, the
    layers still flagged, and on the CLI exit 2 with nothing written (not a whole run of empty maps)."""
    model = small_net()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    tr = run_trace(model, x, "features.6,features.3", gradients=False, targets=[1])
    with pytest.raises(InputError, match=r"^CAM applies to none of the 2 chosen layers \(their spatial mean") as err:
        layer_cams(tr, get_method("cam"), MethodContext(model=model, input_tensor=x))
    assert "\n" not in str(err.value) and "another method" in str(err.value)
    assert all("not applicable" in r.flags[CAM_FLAG] for r in tr.records)
    out = tmp_path / "new" / "out"
    capsys.readouterr()
    assert main(["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--input-size", "64", "--no-video",
                 "--quiet", "--layers", "layer4.1.conv2", "--method", "cam", "--out", str(out)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("camanim: error: CAM does not apply to the chosen layer ")
    assert not (tmp_path / "new").exists()
