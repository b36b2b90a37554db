"""ScoreCAM, AblationCAM, KPCA-CAM, FEM, Seg-Eigen-CAM, ShapleyCAM and FinerCAM over all layers.

Each method's raw per-layer map (before pytorch-grad-cam's min-max scaling, after its ReLU)
equals pytorch-grad-cam's for that layer computed on its own, on small seeded models; so do
``eigen_smooth`` and ``aug_smooth``. Also: same_as layers reuse the expensive computation without
changing it, dead channels give zeros (never NaN), several methods share one pass, and the
registry refuses methods that have no per-layer CAM and accepts plugins.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from conftest import no_inplace, out_of_place_resnet, small_net, spy_raw_maps
from pytorch_grad_cam import (
    FEM,
    KPCA_CAM,
    AblationCAM,
    EigenGradCAM,
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    SegEigenCAM,
    ShapleyCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

from camanim import InputError, get_method
from camanim.compute import CamOptions
from camanim.compute.engine import compute_cams
from camanim.compute.maps import layer_cams
from camanim.draw.normalise import normalise
from camanim.methods import CamMethod, MethodContext, get_methods, list_methods, logit_score
from camanim.methods.perturbation import ScoreCAM as OurScoreCAM
from camanim.trace import run_trace

# eigen projections: the reference with camanim's documented sign rule (see first_component)
pytestmark = pytest.mark.usefixtures("oriented_reference")


def image(seed: int = 1, size: int = 20) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_raw(make, model, x, module, target, spy_on=None, **call):
    """pytorch-grad-cam's map for one layer alone, before min-max scaling, after its ReLU."""
    cam = make(model, [module])
    inner = cam.base_cam if spy_on == "base" else cam
    captured = spy_raw_maps(inner)
    if "targets" not in call and "target_idx" not in call:
        call["targets"] = [ClassifierOutputTarget(target)]
    with cam:
        cam(input_tensor=x, **call)
    return captured[0][0]


def assert_map(ours: torch.Tensor, ref: np.ndarray, what: str, rtol: float = 1e-4) -> None:
    scale = max(float(np.abs(ref).max()), 1e-6)
    np.testing.assert_allclose(ours.detach().cpu().numpy(), ref, rtol=rtol, atol=rtol * scale, err_msg=what)


def ours_per_layer(model, x, method, layers="all", **ctx):
    m = get_method(method)
    tr = run_trace(model, x, layers, gradients=m.uses_gradients, score=m.target_score(ctx.get("score") or logit_score))
    c = MethodContext(model=model, input_tensor=x, targets=tr.targets, **ctx)
    return tr, layer_cams(tr, m, c), c


REFERENCE = {
    "scorecam": ScoreCAM,
    "ablationcam": lambda model, layers: AblationCAM(model, layers, batch_size=1),
    "kpcacam": KPCA_CAM,
    "fem": FEM,
    "segeigencam": SegEigenCAM,
    "shapleycam": ShapleyCAM,
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_new_methods_equal_reference_on_every_layer(name):
    model, x = small_net(), image()
    tr, ours, _ = ours_per_layer(model, x, name)
    target = int(tr.targets[0])
    modules = dict(model.named_modules())
    checked = 0
    for i, rec in enumerate(tr.records):
        if rec.non_spatial or rec.same_as is not None:
            continue
        ref = reference_raw(REFERENCE[name], model, x, modules[rec.module], target)
        assert_map(ours[i][0], ref, f"{name} {rec.name}")
        checked += 1
    assert checked == 8


def test_finercam_equals_reference():
    model, x = small_net(), image()
    tr, ours, _ = ours_per_layer(model, x, "finercam")
    target = int(tr.targets[0])
    modules = dict(model.named_modules())
    for i in (0, 4, 7):
        rec = tr.records[i]
        ref = reference_raw(FinerCAM, model, x, modules[rec.module], target, spy_on="base", target_idx=target)
        assert_map(ours[i][0], ref, f"finercam {rec.name}")
    grad = ours_per_layer(model, x, "gradcam")[1]
    assert not torch.allclose(grad[7], ours[7]), "Finer-CAM explains a margin, not the logit"


def test_shapleycam_differs_from_gradcam_only_through_the_hessian():
    model, x = small_net(), image()
    shap = ours_per_layer(model, x, "shapleycam")[1]
    grad = ours_per_layer(model, x, "gradcam")[1]
    # after the SiLU the network is piecewise linear: no curvature, the same map as Grad-CAM
    torch.testing.assert_close(shap[7], grad[7], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(shap[0], grad[0], rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_perturbation_methods_equal_reference_on_resnet18(monkeypatch):
    out_of_place_resnet(monkeypatch)
    torch.manual_seed(0)
    model = no_inplace(torchvision.models.resnet18(weights=None, num_classes=7)).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    modules = dict(model.named_modules())
    cases = (("scorecam", ScoreCAM, "layer1.1.bn2,layer2.0.downsample.0,layer3.1.conv1", 64 + 128 + 256),
             ("ablationcam", lambda m, t: AblationCAM(m, t, batch_size=1), "relu,layer2.0.conv2", 64 + 128))
    for name, make, layers, channels in cases:
        tr, ours, ctx = ours_per_layer(model, x, name, layers=layers, batch_size=40)
        assert ctx.forwards == math.ceil(channels / 40), "channels of all layers packed together"
        for i, rec in enumerate(tr.records):
            ref = reference_raw(make, model, x, modules[rec.module], int(tr.targets[0]))
            # ablating to (min - 1e7) makes scores of ~1e5: float32 rounding shows at 1e-4
            assert_map(ours[i][0], ref, f"{name} {rec.name}", rtol=1e-3 if name == "ablationcam" else 1e-4)


def test_ablation_of_relu_layers_equals_reference_with_its_default_batch():
    """After a ReLU the ablation value is 0 for every copy, so pytorch-grad-cam's batch of 32 agrees too."""
    model, x = small_net(), image()
    tr, ours, _ = ours_per_layer(model, x, "ablationcam", layers="features.2,features.7")
    modules = dict(model.named_modules())
    for i, rec in enumerate(tr.records):
        ref = reference_raw(AblationCAM, model, x, modules[rec.module], int(tr.targets[0]))
        assert_map(ours[i][0], ref, rec.name)


def test_softmax_score_equals_reference_softmax_target():
    model, x = small_net(), image()
    soft = lambda lg, t: lg.softmax(1).gather(1, t.view(-1, 1)).squeeze(1)  # noqa: E731
    modules = dict(model.named_modules())
    for name, ref_cls in (("gradcam", GradCAM), ("scorecam", ScoreCAM)):
        m = get_method(name)
        tr = run_trace(model, x, "features.3,features.5", gradients=m.uses_gradients, score=soft)
        ours = layer_cams(tr, m, MethodContext(model=model, input_tensor=x, score=soft))
        for i, rec in enumerate(tr.records):
            ref = reference_raw(ref_cls, model, x, modules[rec.module], 0,
                                targets=[ClassifierOutputSoftmaxTarget(int(tr.targets[0]))])
            assert_map(ours[i][0], ref, f"softmax {name} {rec.name}")


EIGEN = {"gradcam": GradCAM, "hirescam": HiResCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
         "layercam": LayerCAM, "gradcamelementwise": GradCAMElementWise, "eigengradcam": EigenGradCAM,
         "scorecam": ScoreCAM, "ablationcam": REFERENCE["ablationcam"], "shapleycam": ShapleyCAM,
         "segeigencam": SegEigenCAM}


@pytest.mark.parametrize("name", list(EIGEN))
def test_eigen_smooth_equals_reference(name):
    model, x = small_net(), image()
    layers = "features.1,features.5,features.6"
    tr, ours, _ = ours_per_layer(model, x, name, layers=layers, eigen_smooth=True)
    modules = dict(model.named_modules())
    for i, rec in enumerate(tr.records):
        ref = reference_raw(EIGEN[name], model, x, modules[rec.module], int(tr.targets[0]), eigen_smooth=True)
        assert_map(ours[i][0], ref, f"eigen-smooth {name} {rec.name}", rtol=2e-4)
    plain = ours_per_layer(model, x, name, layers=layers)[1]
    if name in ("eigengradcam", "segeigencam"):
        # already a principal component: pytorch-grad-cam ignores eigen_smooth for these, and so do we
        for a, b in zip(ours, plain):
            torch.testing.assert_close(a, b)
    else:
        # the smoothing changed something, so the comparison above was not of the plain maps
        assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(ours, plain))


@pytest.mark.parametrize("name", ["gradcam", "layercam", "scorecam"])
def test_aug_smooth_equals_reference_per_layer(name):
    """Six augmented passes per layer; after min-max scaling, pytorch-grad-cam's smoothed CAM."""
    model, x = small_net(), image(size=24)
    target = 2
    comp = compute_cams(model, x, [get_method(name)], CamOptions(layers="features.2,features.4,features.6", aug_smooth=True), targets=[target])
    assert comp.forwards["trace"] == 6
    modules = dict(model.named_modules())
    ours = normalise(comp.cams[name][:, 0], "local")
    for i, rec in enumerate(comp.records):
        cam = EIGEN.get(name, LayerCAM)(model, [modules[rec.module]])
        with cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)], aug_smooth=True)[0]
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=2e-4, err_msg=f"aug-smooth {name} {rec.name}")
    plain = compute_cams(model, x, [get_method(name)], CamOptions(layers="features.2,features.4,features.6"), targets=[target])
    assert not torch.allclose(normalise(plain.cams[name][:, 0]), ours, atol=1e-3)


def test_same_as_layers_reuse_the_expensive_computation_unchanged():
    """``features`` returns the very tensor of ``features.7``: computed once, equal to a fresh computation."""
    model, x = small_net(), image()
    for name in ("scorecam", "ablationcam", "shapleycam"):
        tr, ours, ctx = ours_per_layer(model, x, name)
        rec = next(r for r in tr.records if r.name == "features")
        assert tr.records[rec.same_as].name == "features.7" and ours[rec.index] is ours[rec.same_as]
        fresh_tr, fresh, _ = ours_per_layer(model, x, name, layers="features")
        assert fresh_tr.records[0].same_as is None
        torch.testing.assert_close(ours[rec.index], fresh[0], rtol=1e-5, atol=1e-7)


class EveryChannel(OurScoreCAM):
    """ScoreCAM without sharing masks between channels: one forward per channel."""

    name = "test-scorecam-every-channel"
    share_tolerance = None


def test_scorecam_shares_the_masks_of_affinely_related_channels():
    """BatchNorm after a convolution (positive gamma) has its input's masks: one forward serves both."""
    model, x = small_net(), image()
    tr = run_trace(model, x, "all", gradients=False)
    ctx_all = MethodContext(model=model, input_tensor=x)
    every = layer_cams(tr, EveryChannel(), ctx_all)
    ctx = MethodContext(model=model, input_tensor=x)
    shared = layer_cams(tr, get_method("scorecam"), ctx)
    n_shared = ctx.extra["scorecam_shared_masks"]
    channels = sum(r.shape[1] for r in tr.records if not r.non_spatial and r.same_as is None)
    assert channels == 6 * 3 + 8 * 3 + 10 * 2 and ctx_all.forward_rows == channels
    assert ctx.forward_rows + n_shared == channels
    # BN channels with a positive gamma (4 of 6, 5 of 8) share the mask of the conv channel before them
    assert n_shared >= 4 + 5
    for a, b in zip(every, shared):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-8)


class DeadNet(nn.Module):
    """A ReLU channel that is zero everywhere, and one whose activation is a constant 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight[1].zero_()
            self.conv.bias[1] = -1.0  # dead: ReLU(-1) = 0
            self.conv.weight[2].zero_()
            self.conv.bias[2] = 1.0  # constant 1

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def test_dead_channels_give_zero_not_nan():
    torch.manual_seed(0)
    model, x = DeadNet().eval(), image(size=12)

    class NoEpsScoreCAM(OurScoreCAM):
        """The 0/0 of older pytorch-grad-cam (no eps): constant channels must still not make NaN."""

        name = "test-scorecam-noeps"
        eps = 0.0

    tr, ours, ctx = ours_per_layer(model, x, "scorecam", layers="relu")
    for method in (NoEpsScoreCAM(), get_method("ablationcam"), get_method("kpcacam"), get_method("fem")):
        got = layer_cams(tr, method, MethodContext(model=model, input_tensor=x))[0]
        assert torch.isfinite(got).all(), method.name
    noeps = layer_cams(tr, NoEpsScoreCAM(), MethodContext(model=model, input_tensor=x))[0]
    torch.testing.assert_close(noeps, ours[0])
    # two constant channels: both masked to zero, scored by one forward on the zero image
    assert ctx.forwards == 2 and ctx.forward_rows == 1 + 2
    ref = reference_raw(ScoreCAM, model, x, model.relu, int(tr.targets[0]))
    assert_map(ours[0][0], ref, "dead channel")  # pytorch-grad-cam's eps gives the same zero mask here
    masks = OurScoreCAM().masks(tr.activations[0][0], (12, 12))
    assert torch.isfinite(masks).all() and masks[1].abs().max() == 0


def test_several_methods_share_one_forward_and_one_backward():
    model, x = small_net(), image()
    passes = {"forward": 0, "backward": 0}

    class Count(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.view_as(t)

        @staticmethod
        def backward(ctx, g):
            passes["backward"] += 1
            return g

    class Counted(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            passes["forward"] += 1
            return Count.apply(self.inner(t))

    counted = Counted(model)
    names = ["gradcam", "hirescam", "gradcam++", "layercam", "eigencam"]
    comp = compute_cams(counted, x, get_methods(",".join(names)), CamOptions(layers="all"))
    assert passes == {"forward": 1, "backward": 1}
    comp = compute_cams(counted, x, [get_method("gradcam"), get_method("hirescam"), EveryChannel()], CamOptions(layers="all", batch_size=16))
    tr = run_trace(model, x, "all", gradients=False)
    maps = [a.flatten(2) for a, r in zip(tr.activations, tr.records) if not r.non_spatial and r.same_as is None]
    constant = sum(int((m.amax(2) == m.amin(2)).sum()) for m in maps)  # dead channels: one zero-image forward
    masked = math.ceil((6 * 3 + 8 * 3 + 10 * 2 - constant) / 16) + (constant > 0)
    assert comp.forwards == {"trace": 1, "gradcam": 0, "hirescam": 0, EveryChannel.name: masked}
    assert passes == {"forward": 1 + 1 + masked, "backward": 2}
    solo = compute_cams(counted, x, [get_method("hirescam")], CamOptions(layers="all"))
    torch.testing.assert_close(comp.cams["hirescam"], solo.cams["hirescam"])
    # FinerCAM differentiates its own score: it gets its own pass
    comp = compute_cams(model, x, get_methods("gradcam,finercam"), CamOptions(layers="features.7"))
    assert comp.forwards["trace"] == 2


def test_refused_methods_say_why():
    for name in ("fullgrad", "FullGrad", "refine-cam", "sess"):
        with pytest.raises(InputError, match="not a per-layer method"):
            get_method(name)
    with pytest.raises(InputError, match="bias"):
        get_method("fullgrad")
    assert {"scorecam", "ablationcam", "kpcacam", "fem", "shapleycam", "finercam", "segeigencam"} <= set(list_methods())
    assert get_method("KPCA-CAM").name == "kpcacam" and get_method("Score_CAM").name == "scorecam"
    assert [m.name for m in get_methods("gradcam, hirescam,gradcam")] == ["gradcam", "hirescam"]


def test_plugin_class_and_function_from_python(tmp_path, monkeypatch):
    (tmp_path / "my_cams.py").write_text(
        "from camanim.methods import CamMethod\n"
        "class MaxAct(CamMethod):\n"
        "    '''Channel maximum of the activations.'''\n"
        "    name = 'test-plugin-maxact'\n"
        "    uses_gradients = False\n"
        "    def cam(self, acts, grads, ctx):\n"
        "        return acts.amax(dim=1)\n"
        "def gradnorm(acts, grads, ctx):\n"
        "    '''Gradient magnitude times activation.'''\n"
        "    return (grads.abs() * acts).sum(dim=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, x = small_net(), image()
    tr = run_trace(model, x, "features.2")
    a, g = tr.activations[0], tr.gradients[0]
    for spec in ("my_cams:MaxAct", f"{tmp_path / 'my_cams.py'}:MaxAct"):
        got = layer_cams(tr, get_method(spec))[0]
        torch.testing.assert_close(got, a.amax(1).clamp(min=0))
    got = layer_cams(tr, get_method("my_cams:gradnorm"))[0]
    torch.testing.assert_close(got, (g.abs() * a).sum(1).clamp(min=0))
    assert "test-plugin-maxact" in list_methods() and "gradnorm" in list_methods()
    with pytest.raises(InputError, match="cannot be imported"):
        get_method("my_cams:Nope")
    (tmp_path / "clash.py").write_text("def gradcam(a, g, c):\n    return a.sum(1)\n")
    with pytest.raises(InputError, match="built-in"):
        get_method("clash:gradcam")


def test_a_method_with_its_own_extra_pass_through_cam_batch():
    """The hook for expensive methods: all layers at once, with the model in the context."""

    class Occlude(CamMethod):
        """Score drop when the image is blacked out, spread over the mean activation."""

        name = "test-occlude"
        uses_gradients = False
        needs_model = True

        def cam_batch(self, jobs, ctx, progress=None):
            with torch.no_grad():
                drop = ctx.score_fn(ctx.logits, ctx.targets) - ctx.score_fn(ctx.model(ctx.input_tensor * 0),
                                                                            ctx.targets)
            return [drop[:, None, None] * job.acts.mean(dim=1) for job in jobs]

    model, x = small_net(), image()
    comp = compute_cams(model, x, [Occlude()], CamOptions(layers="all"))
    assert comp.cams["test-occlude"].shape[:2] == (11, 1) and comp.cams["test-occlude"].abs().sum() > 0


class Boom(Exception):
    """The failure a test injects into a forward pass."""


class Tripwire(nn.Module):
    """The identity, until forward number ``fail_from`` (counted from 1): that call and every later one raise."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fail_from: int | None = None

    def forward(self, x):
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise Boom(f"forward {self.calls}")
        return x


def trap_net() -> nn.Sequential:
    """In-place activations, hooked layers before and after the tripwire, and mixed train/eval flags."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), Tripwire(),
        nn.Conv2d(6, 8, 3, padding=1), nn.SiLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    net.train()
    net[1].eval()
    net[4].eval()
    return net


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


# (method, forward of the tripwire that fails): forward 1 is the trace; ScoreCAM and AblationCAM
# fail in their second batch of masked copies, ShapleyCAM in its own forward.
EXTRA_PASS_FAILURES = [("scorecam", 3), ("ablationcam", 3), ("shapleycam", 2)]


@pytest.mark.parametrize(("name", "fail_from"), EXTRA_PASS_FAILURES)
def test_a_failing_extra_pass_propagates_and_leaves_the_model_as_it_was(name, fail_from):
    from torch.nn.modules import module as torch_module

    net, x = trap_net(), image(size=12)
    layers = "0,1,2,4,5"  # hooks before the tripwire (they fire) and after it (never reached)
    trip = net[3]
    training = [m.training for m in net.modules()]
    inplace = [m.inplace for m in net.modules() if hasattr(m, "inplace")]
    assert hook_count(net) == 0 and inplace == [True, True, True]
    global_hooks = (len(torch_module._global_forward_hooks), len(torch_module._global_forward_pre_hooks),
                    len(torch_module._global_backward_hooks))
    trip.fail_from = fail_from
    with pytest.raises(Boom, match=f"forward {fail_from}"):
        compute_cams(net, x, [get_method(name)], CamOptions(layers=layers, batch_size=4))
    assert trip.calls == fail_from, "the failure came from the method's own extra pass"
    assert hook_count(net) == 0
    assert (len(torch_module._global_forward_hooks), len(torch_module._global_forward_pre_hooks),
            len(torch_module._global_backward_hooks)) == global_hooks
    assert [m.training for m in net.modules()] == training
    assert [m.inplace for m in net.modules() if hasattr(m, "inplace")] == inplace
    # nothing left behind changes a later run: the same CAMs as a model that never failed
    trip.fail_from = None
    again = compute_cams(net, x, [get_method(name)], CamOptions(layers=layers, batch_size=4)).cams[name]
    fresh = compute_cams(trap_net(), x, [get_method(name)], CamOptions(layers=layers, batch_size=4)).cams[name]
    torch.testing.assert_close(again, fresh, rtol=1e-5, atol=1e-6)
    assert again.abs().sum() > 0


@pytest.mark.parametrize("name", ["kpcacam", "fem", "segeigencam", "shapleycam", "finercam"])
def test_new_methods_equal_reference_on_volumes(name):
    """On a 3-D network each method's raw 3-D map of every NCDHW layer equals pytorch-grad-cam's 3-D map of
    that layer alone (a method made position by position or from sums over all positions)."""
    from conftest import tiny_net3d, tiny_volume

    model, x = tiny_net3d(), tiny_volume(shape=(6, 8, 10))
    tr, ours, _ = ours_per_layer(model, x, name)
    target = int(tr.targets[0])
    modules = dict(model.named_modules())
    checked = 0
    for i, rec in enumerate(tr.records):
        if rec.layout != "NCDHW":
            continue
        if name == "finercam":
            ref = reference_raw(FinerCAM, model, x, modules[rec.module], target, spy_on="base", target_idx=target)
        else:
            ref = reference_raw(REFERENCE[name], model, x, modules[rec.module], target)
        assert ref.shape == tuple(rec.shape[2:]) == tuple(ours[i].shape[1:])
        assert_map(ours[i][0], ref, f"{name} {rec.name}")
        checked += 1
    assert checked == 7
