"""A trace records only its own pass: checkpointing, threads, TorchScript, never zero layers."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

import camanim
from camanim import InputError
from camanim.trace import run_trace


def _densenets():
    plain = torchvision.models.densenet121(weights=None, num_classes=3).eval()
    efficient = torchvision.models.densenet121(weights=None, num_classes=3, memory_efficient=True).eval()
    efficient.load_state_dict(plain.state_dict())
    return plain, efficient


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++"])
def test_densenet_memory_efficient_gives_the_plain_models_cams(method):
    # (case_gradient_checkpointing.py) densenet checkpoints each bottleneck when its input requires
    # grad: the segment runs again during the backward, which must be neither recorded nor changed
    torch.manual_seed(0)
    plain, efficient = _densenets()
    x = torch.rand(1, 3, 48, 48)
    layers = "features.denseblock1.denselayer1*,features.denseblock1.denselayer2*"
    want = camanim.animate(plain, x, layers=layers, method=method)
    got = camanim.animate(efficient, x, layers=layers, method=method)
    assert [r.name for r in got.layers] == [r.name for r in want.layers]
    assert len(got.layers) == 14
    assert float(want.cams.amax()) > 0
    torch.testing.assert_close(got.cams, want.cams, rtol=1e-4, atol=1e-9)


class Segmented(nn.Module):
    """Two conv blocks, the first wrapped in torch.utils.checkpoint (non-reentrant) when ``ckpt``."""

    def __init__(self, ckpt: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(inplace=True),
                                   nn.Conv2d(5, 6, 3, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))
        self.fc = nn.Linear(4, 3)
        self.ckpt = ckpt

    def forward(self, x):
        y = checkpoint(self.block, x, use_reentrant=False) if self.ckpt else self.block(x)
        return self.fc(self.head(y).mean((2, 3)))


def test_checkpointed_segment_gives_the_gradients_of_the_plain_model():
    torch.manual_seed(0)
    plain, ckpt = Segmented(False).eval(), Segmented(True).eval()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    want, got = run_trace(plain, x, "all"), run_trace(ckpt, x, "all")
    assert [r.name for r in got.records] == [r.name for r in want.records]
    for i, rec in enumerate(want.records):
        torch.testing.assert_close(got.activations[i], want.activations[i])
        torch.testing.assert_close(got.gradients[i], want.gradients[i], rtol=1e-5, atol=1e-8)
        assert rec.flags == {} and got.records[i].flags == {}


def test_timm_grad_checkpointing_gives_the_plain_models_cams():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    plain = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    ckpt = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True)
    x = torch.rand(1, 3, 32, 32)
    want = camanim.animate(plain, x, layers="layer1*,layer2*")
    got = camanim.animate(ckpt, x, layers="layer1*,layer2*")
    # timm's checkpoint_seq calls a stage's blocks one by one, never the stage's own forward: the
    # two stage containers are not called, so not recorded (their maps are their last block's)
    names = [r.name for r in want.layers if r.name not in ("layer1", "layer2")]
    assert [r.name for r in got.layers] == names and len(names) > 10
    keep = [r.index for r in want.layers if r.name in names]
    assert float(want.cams.amax()) > 0
    torch.testing.assert_close(got.cams, want.cams[keep], rtol=1e-4, atol=1e-9)


def test_threads_explaining_one_model_each_get_their_solo_result():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    inputs = [torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    solo = [camanim.animate(model, x, layers="layer1*,layer2*", method="gradcam", target=s % 5)
            for s, x in enumerate(inputs)]
    got: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(inputs) + 1)

    def explain(s: int) -> None:
        try:
            start.wait()
            got[s] = camanim.animate(model, inputs[s], layers="layer1*,layer2*", method="gradcam", target=s % 5)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    def plain_forwards() -> None:
        # another user of the same model object, meanwhile: plain predictions
        start.wait()
        with torch.no_grad():
            for _ in range(6):
                model(inputs[0])

    threads = [threading.Thread(target=explain, args=(s,)) for s in range(len(inputs))]
    threads.append(threading.Thread(target=plain_forwards))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for s, want in enumerate(solo):
        assert [r.name for r in got[s].layers] == [r.name for r in want.layers]
        assert float(want.cams.amax()) > 0
        # (a mixed-up pass gives another image's or class's maps: far off, not a rounding apart)
        torch.testing.assert_close(got[s].cams, want.cams, rtol=1e-5, atol=1e-6 * float(want.cams.amax()))
    # nothing of the passes is left on the model
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert not model.training and not any(m.training for m in model.modules())


def test_threads_leave_a_training_model_in_training_mode():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).train()
    threads = [threading.Thread(target=run_trace, args=(model, torch.rand(1, 3, 32, 32), "layer1")) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m.training for m in model.modules())


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_model_is_refused_with_one_line(kind):
    # (case_torchscript_model.py) a ScriptModule never calls the Python forward of its layers
    model, x = _small(), torch.rand(1, 3, 16, 16)
    scripted = torch.jit.script(model) if kind == "script" else torch.jit.trace(model, x)
    with pytest.raises(InputError, match="TorchScript") as err:
        camanim.animate(scripted, x)
    assert "\n" not in str(err.value) and "pass the nn.Module" in str(err.value)
    with pytest.raises(InputError, match="TorchScript"):
        camanim.trace_layers(scripted, image=x)


class HalfScripted(nn.Module):
    """Only a scripted submodule: the layers the pattern selects never run in Python."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.jit.script(_small())

    def forward(self, x):
        return self.body(x)


def test_zero_recorded_layers_is_an_error_never_an_empty_result():
    model, x = HalfScripted(), torch.rand(1, 3, 16, 16)
    with pytest.raises(InputError, match="none of the 7 selected layers ran"):
        camanim.animate(model, x, layers="body.*")
    with pytest.raises(InputError, match="ran in the model's forward"):
        run_trace(model, x, "body.*")


class Unused(nn.Module):
    """``spare`` is a layer of the model that its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.spare = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_layers_the_forward_never_calls_are_an_error_not_an_empty_result():
    model, x = Unused().eval(), torch.rand(1, 3, 8, 8)
    with pytest.raises(InputError, match="none of the 1 selected layers ran"):
        camanim.animate(model, x, layers="spare")
    with pytest.raises(InputError, match="none of the 1 selected layers ran"):
        camanim.trace_layers(model, "spare", image=x)
    assert [r.name for r in camanim.trace_layers(model, "conv,spare", image=x)] == ["conv"]


class ReentrantSegmented(Segmented):
    """The same, with the reentrant checkpoint: the segment runs under no_grad in the forward."""

    def forward(self, x):
        y = checkpoint(self.block, x, use_reentrant=True) if self.ckpt else self.block(x)
        return self.fc(self.head(y).mean((2, 3)))


def test_reentrant_checkpoint_flags_the_segment_and_keeps_the_rest_exact():
    torch.manual_seed(0)
    plain, ckpt = ReentrantSegmented(False).eval(), ReentrantSegmented(True).eval()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    want = run_trace(plain, x, "all")
    with pytest.warns(RuntimeWarning, match="block.0"):
        got = run_trace(ckpt, x, "all")
    inside = {"block.0", "block.1", "block.2", "block.3", "block"}
    for i, rec in enumerate(got.records):
        torch.testing.assert_close(got.activations[i], want.activations[i])
        if rec.name in inside:
            # the segment ran without autograd: no gradient reaches it, and it says so
            assert "without autograd" in rec.flags["gradient"]
        else:
            assert rec.flags == {}
            torch.testing.assert_close(got.gradients[i], want.gradients[i], rtol=1e-5, atol=1e-8)


def test_skipping_every_selected_layer_is_an_error_not_an_empty_result():
    model, x = Unused().eval(), torch.rand(1, 3, 8, 8)
    with pytest.raises(InputError, match="all 1 selected layers are non-spatial"):
        camanim.animate(model, x, layers="fc", skip_non_spatial=True)
    assert len(camanim.animate(model, x, layers="conv,fc", skip_non_spatial=True).layers) == 1


class _CkptBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)) + x


class TwoReentrantSegments(nn.Module):
    """A stem, two blocks each in a reentrant checkpoint, a head: the stem's gradient crosses both segments."""

    def __init__(self, ckpt: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.b1, self.b2 = _CkptBlock(), _CkptBlock()
        self.mid = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)
        self.ckpt = ckpt

    def forward(self, x):
        x = self.stem(x)
        x = checkpoint(self.b1, x, use_reentrant=True) if self.ckpt else self.b1(x)
        x = self.mid(x)
        x = checkpoint(self.b2, x, use_reentrant=True) if self.ckpt else self.b2(x)
        return self.fc(x.mean((2, 3)))


def test_reentrant_segments_with_layers_before_them_give_exact_maps_outside_and_flags_inside():
    torch.manual_seed(0)
    plain, ckpt = TwoReentrantSegments(False).eval(), TwoReentrantSegments(True).eval()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 10, 10)
    # Grad-CAM of the stem and of mid by hand, on the plain model
    xx = x.clone().requires_grad_(True)
    s = plain.stem(xx)
    m = plain.mid(plain.b1(s))
    out = plain.fc(plain.b2(m).mean((2, 3)))
    target = int(out.argmax())
    gs, gm = torch.autograd.grad(out[0, target], [s, m])
    hand = {n: F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))[0].detach()
            for n, a, g in (("stem", s, gs), ("mid", m, gm))}
    inside = {"b1", "b1.conv", "b1.act", "b2", "b2.conv", "b2.act"}
    want = run_trace(plain, x, "all")
    with pytest.warns(RuntimeWarning, match="b1.conv"):
        got = run_trace(ckpt, x, "all")
    assert [r.name for r in got.records] == [r.name for r in want.records]
    for i, rec in enumerate(got.records):
        if rec.name in inside:
            assert "without autograd" in rec.flags["gradient"]
        else:
            assert rec.flags == {}, rec.name
            torch.testing.assert_close(got.gradients[i], want.gradients[i], rtol=1e-5, atol=1e-8)
    grads_before = [p.grad for p in ckpt.parameters()]
    with pytest.warns(RuntimeWarning, match="b1.conv"):
        result = camanim.animate(ckpt, x, target=target)
    assert [p.grad for p in ckpt.parameters()] == grads_before  # the model's .grad left as it was
    by_name = {r.name: i for i, r in enumerate(result.layers)}
    for n in ("stem", "mid"):
        torch.testing.assert_close(torch.as_tensor(result.cams[by_name[n]]), hand[n], rtol=1e-4, atol=1e-8)
        assert result.layers[by_name[n]].flags == {}
    for n in inside:
        assert "gradient" in result.layers[by_name[n]].flags


class _WithCompiledChild(nn.Module):
    """A Python model whose ``body`` is a torch.jit.trace'd or torch.jit.script'ed submodule."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.body = torch.jit.script(body) if kind == "script" else torch.jit.trace(body, torch.rand(1, 3, 8, 8))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_submodule_is_one_opaque_layer_and_its_children_are_named(kind):
    model, x = _WithCompiledChild(kind).eval(), torch.rand(1, 3, 8, 8)
    own_forward = model.body.__dict__.get("forward")
    with pytest.warns(RuntimeWarning, match=r"2 selected layer\(s\) inside TorchScript submodule\(s\) \(body.0, body.1\)"):
        result = camanim.animate(model, x)
    assert [r.name for r in result.layers] == ["body", "fc"]
    # the opaque layer's map is the Grad-CAM of its own output
    xx = x.clone().requires_grad_(True)
    a = model.body(xx)
    out = model.fc(a.mean((2, 3)))
    target = int(out.argmax())
    g, = torch.autograd.grad(out[0, target], a)
    hand = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))[0].detach()
    assert result.layers[0].layout == "NCHW"
    torch.testing.assert_close(torch.as_tensor(result.cams[0]), hand, rtol=1e-4, atol=1e-8)
    with pytest.raises(InputError, match="inside TorchScript submodules") as err:
        camanim.animate(model, x, layers="body.*")
    assert "\n" not in str(err.value)
    assert model(x).shape == (1, 3) and model.body.__dict__.get("forward") is own_forward  # nothing left behind


def test_a_mode_change_made_during_the_pass_is_not_overwritten():
    # another thread (here: a hook, deterministically mid-pass) puts the model in train mode during
    # the pass: the pass restores only the flags it changed and that still hold its value
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    hook = model[2].register_forward_pre_hook(lambda m, i: [model.train(), None][1])
    run_trace(model, torch.rand(1, 3, 8, 8), "all")
    hook.remove()
    assert all(m.training for m in model.modules())
    # a model half in train mode: the pass changes the training ones, and puts back only those
    model.eval()
    model[1].train()
    hook = model[2].register_forward_pre_hook(lambda m, i: [model[0].train(), None][1])
    run_trace(model, torch.rand(1, 3, 8, 8), "all")
    hook.remove()
    assert [m.training for m in model] == [True, True, False, False, False, False]


@pytest.mark.parametrize("training", [False, True])
def test_another_threads_forward_during_a_pass_is_undisturbed_or_warned(training):
    # A pass holds its model mid-forward while another thread predicts with it. An eval-mode model
    # (a web demo) is not touched: that forward gives its plain output, with no warning. A model
    # left in training mode is switched to eval for the pass: that forward is told, not silently
    # run in another mode.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.train(training)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(x)
    model.train(training)
    paused, resume = threading.Event(), threading.Event()
    pass_thread: list[threading.Thread] = []

    def hold(mod, args):
        if threading.current_thread() is pass_thread[0]:
            paused.set()
            resume.wait(30)

    handle = model[2].register_forward_pre_hook(hold)
    pass_thread.append(threading.Thread(target=run_trace, args=(model, x[:1], "all")))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pass_thread[0].start()
        try:
            assert paused.wait(30)
            with torch.no_grad():
                other = model(x)
        finally:
            resume.set()
            pass_thread[0].join()
            handle.remove()
    told = [w for w in seen if "ran in eval mode" in str(w.message)]
    if training:
        assert told and issubclass(told[0].category, RuntimeWarning)
    else:
        assert not told
        torch.testing.assert_close(other, plain, rtol=0, atol=0)
    assert all(m.training == training for m in model.modules())
