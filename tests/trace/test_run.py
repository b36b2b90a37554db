"""The single pass: records, order, repeated calls, gradients, hooks, in-place safety."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from camanim import InputError
from camanim.trace import WRITES_IN_PLACE, eval_mode, logits_of, run_trace, select_layers


def _hook_count(model: nn.Module) -> int:
    """Hooks on the model's modules, forwards set on module instances, and the process-wide module hooks."""
    from torch.nn.modules import module as nn_module

    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + ("forward" in m.__dict__)  # the trace's forward wrappers
               for m in model.modules()) + len(nn_module._global_forward_hooks) + len(
        nn_module._global_forward_pre_hooks) + len(nn_module._global_backward_hooks)


def test_records_in_execution_order_with_repeated_module(tiny, tiny_input):
    tr = run_trace(tiny, tiny_input, "all")
    names = [r.name for r in tr.records]
    # block.0 / block.1 finish before their container; the shared relu gives two records.
    assert names == ["conv1", "relu", "block.0", "block.1", "block", "relu#2", "pool", "fc"]
    assert [r.call for r in tr.records if r.module == "relu"] == [1, 2]
    assert tr.records[1].shape == (1, 4, 16, 16) and tr.records[5].shape == (1, 6, 16, 16)
    assert [r.layout for r in tr.records][-2:] == ["non_spatial", "non_spatial"]
    # the container's output is the very tensor of its last child: shared, not recomputed
    assert tr.records[4].same_as == 3
    assert tr.records[3].params == 6 * 2 and tr.records[4].params == 4 * 6 * 9 + 6 + 12


def test_gradients_equal_autograd_of_each_layer(tiny, tiny_input):
    tr = run_trace(tiny, tiny_input, "all")
    target = int(tr.targets[0])
    # Recompute d logit / d (conv1 output) by hand with a plain forward.
    x = tiny_input.clone()
    a1 = tiny.conv1(x)
    a1.retain_grad()
    h = torch.relu(a1)
    out = tiny.fc(tiny.pool(torch.relu(tiny.block(h))).flatten(1))
    out[0, target].backward()
    torch.testing.assert_close(tr.activations[0], a1.detach())
    torch.testing.assert_close(tr.gradients[0], a1.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tr.logits, out.detach())


def test_one_forward_and_one_backward(tiny, tiny_input):
    calls = {"fwd": 0, "bwd": 0}

    class Count(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            calls["fwd"] += 1
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            calls["bwd"] += 1
            return g

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return Count.apply(self.inner(x))

    run_trace(Wrapped(tiny), tiny_input, "all")
    assert calls == {"fwd": 1, "bwd": 1}


class _Boom(Exception):
    pass


def _trace_failing_at(model: nn.Module, module: nn.Module, x: torch.Tensor, before: bool = False) -> None:
    """Run a trace whose forward raises when ``module`` finishes (or, ``before``, when it starts)."""

    def explode(mod, *args):
        raise _Boom

    h = module.register_forward_pre_hook(explode) if before else module.register_forward_hook(explode)
    try:
        with pytest.raises(_Boom):
            run_trace(model, x, "all")
    finally:
        h.remove()


def test_hooks_removed_after_success_and_after_error(tiny, tiny_input):
    before = _hook_count(tiny)
    run_trace(tiny, tiny_input, "all")
    assert _hook_count(tiny) == before == 0
    _trace_failing_at(tiny, tiny.fc, tiny_input)
    assert _hook_count(tiny) == 0


def test_train_flags_restored(tiny, tiny_input):
    tiny.train()
    tiny.block[1].eval()
    run_trace(tiny, tiny_input, "all")
    assert tiny.training and tiny.conv1.training and not tiny.block[1].training


def test_inplace_ops_do_not_alias_records():
    """ResNet's in-place ReLU and ``out += identity`` must not change what bn layers recorded."""
    torch.manual_seed(0)
    a = torchvision.models.resnet18(weights=None).eval()
    b = torchvision.models.resnet18(weights=None).eval()
    b.load_state_dict(a.state_dict())
    for m in b.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ta, tb = run_trace(a, x, "all"), run_trace(b, x, "all")
    assert [r.name for r in ta.records] == [r.name for r in tb.records]
    # every bn output the in-place ReLU or ``+=`` overwrote is recomputed from its input (no copy)
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in a.modules()) - 3  # the downsample bns are read, not written
    assert ta.activations.recomputed() == bns
    assert a not in WRITES_IN_PLACE  # one pass: nothing needed watching write by write
    assert tb.activations.recomputed() == 8  # its modules run out of place; BasicBlock's ``out += identity`` stays
    i = [r.name for r in ta.records].index("layer1.0.bn1")
    assert (ta.activations[i] < 0).any(), "bn1 output must keep its negative values (pre-ReLU)"
    for u, v in zip(ta.activations, tb.activations):
        if u is not None:
            torch.testing.assert_close(u, v)
    for u, v in zip(ta.gradients, tb.gradients):
        if u is not None:
            torch.testing.assert_close(u, v)


class _WritesAfterUse(nn.Module):
    """Recorded outputs read by one op, then overwritten in place by others (functional and module):
    a BatchNorm output (recomputable from its input) and a convolution output (not)."""

    def __init__(self, inplace: bool, hidden: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.inplace, self.hidden = inplace, hidden
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        t = self.bn(self.conv(x))
        side = t * 0.5  # reads t before it is overwritten
        if not self.inplace:
            t = F.relu(t + 1.0)
        else:
            t += 1.0
            t = F.relu(t, inplace=True)
        t = self.act(t - side)
        u = self.conv2(t)
        side = u * 0.25
        if not self.inplace:
            u = u * 2.0
        elif self.hidden:
            with torch._C.DisableTorchFunction():  # a write no torch-function mode can see
                u.mul_(2.0)
        else:
            u *= 2.0
        return self.head((u - side).mean(dim=(2, 3)))


@pytest.mark.parametrize("hidden", [False, True], ids=["seen", "hidden-write"])
def test_in_place_writes_keep_values_and_all_gradient_paths(hidden, caplog):
    caplog.set_level("INFO", logger="camanim.trace")
    torch.manual_seed(0)
    a = _WritesAfterUse(inplace=True, hidden=hidden).eval()
    b = _WritesAfterUse(inplace=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ta, tb = run_trace(a, x, "all", targets=[1, 2]), run_trace(b, x, "all", targets=[1, 2])
    assert [r.name for r in ta.records] == [r.name for r in tb.records] == ["conv", "bn", "act", "conv2", "head"]
    assert (ta.activations[1] < 0).any(), "bn keeps its pre-ReLU values"
    for u, v in zip(ta.activations, tb.activations):
        torch.testing.assert_close(u, v)
    # d score / d bn output sums the path through ``side`` and the one through the in-place ops
    for u, v in zip(ta.gradients, tb.gradients):
        torch.testing.assert_close(u, v)
    torch.testing.assert_close(ta.logits, tb.logits)
    assert a.act.inplace and _hook_count(a) == 0
    # the write to conv2's output is seen after the fact (version counter): the pass runs again,
    # copying before writes; a write even that cannot see makes it copy every output
    assert "copying before writes" in caplog.text
    assert ("escaped copy-on-write" in caplog.text) == hidden
    caplog.clear()
    tc = run_trace(a, x, "all", targets=[1, 2])  # the model is known now: one pass
    assert ("copying before writes" in caplog.text) is False
    for u, v in zip(tc.activations, tb.activations):
        torch.testing.assert_close(u, v)


def test_inplace_flag_restored_when_the_pass_fails(tiny, tiny_input):
    # the recording pre-hook has just switched the ReLU out of place when the model's own hook fails
    _trace_failing_at(tiny, tiny.relu, tiny_input, before=True)
    assert tiny.relu.inplace is True and _hook_count(tiny) == 0


def test_params_count_a_tied_weight_once_per_module(tiny_input):
    a, b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
    b.weight = a.weight  # tied
    model = nn.Sequential(nn.Sequential(a, b), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    params = {r.name: r.params for r in run_trace(model, tiny_input, "all").records}
    conv = 3 * 3 * 9 + 3
    assert params["0.0"] == params["0.1"] == conv
    assert params["0"] == conv + 3 == sum(p.numel() for p in model[0].parameters())  # the tied weight once


def test_resnet_shared_relu_records():
    m = torchvision.models.resnet18(weights=None).eval()
    tr = run_trace(m, torch.zeros(1, 3, 32, 32), "layer1.0*", gradients=False)
    assert [r.name for r in tr.records] == [
        "layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2", "layer1.0.bn2",
        "layer1.0.relu#2", "layer1.0"]


def test_select_layers_patterns(tiny):
    assert select_layers(tiny, "leaves") == ["conv1", "relu", "block.0", "block.1", "pool", "fc"]
    assert select_layers(tiny, "type:Conv2d") == ["conv1", "block.0"]
    assert select_layers(tiny, "re:^block") == ["block", "block.0", "block.1"]
    assert select_layers(tiny, "block.*,fc") == ["block.0", "block.1", "fc"]
    with pytest.raises(InputError, match="matches no layer"):
        select_layers(tiny, "nothing*")
    with pytest.raises(InputError, match="regular expression"):
        select_layers(tiny, "re:(")


def test_logits_of_containers():
    t = torch.ones(1, 3)
    assert logits_of({"logits": t}) is t
    assert logits_of((t, t * 2), 1)[0, 0] == 2
    with pytest.raises(InputError, match="--output-key"):
        logits_of((t, t))
    with pytest.raises(InputError, match="--output-key"):
        logits_of({"a": t}, "b")


def test_eval_mode_restores_on_error(tiny):
    tiny.train()
    with pytest.raises(RuntimeError):
        with eval_mode(tiny):
            assert not tiny.training
            raise RuntimeError
    assert tiny.training


def test_forward_wrappers_put_back_including_an_instance_forward(tiny, tiny_input):
    own = tiny.fc.forward
    tiny.fc.forward = lambda x: own(x) * 2.0  # a forward set on the instance, as some libraries do
    mine = tiny.fc.__dict__["forward"]
    tr = run_trace(tiny, tiny_input, "all")
    assert tiny.fc.__dict__["forward"] is mine
    assert "fc" in [r.name for r in tr.records]
    with torch.no_grad():
        torch.testing.assert_close(tr.logits, tiny.eval()(tiny_input))  # the instance's forward ran
    _trace_failing_at(tiny, tiny.block[0], tiny_input)
    assert tiny.fc.__dict__["forward"] is mine
    assert sum("forward" in m.__dict__ for m in tiny.modules()) == 1


def test_recomputed_norm_outputs_use_eval_statistics_and_change_nothing():
    """A model in train mode: the trace runs it in eval mode, and so does a recomputation afterwards."""
    torch.manual_seed(0)
    a = torchvision.models.resnet18(weights=None)
    a.train()
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    b = torchvision.models.resnet18(weights=None).eval()
    b.load_state_dict(a.state_dict())
    for m in b.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    stats = {k: v.clone() for k, v in a.state_dict().items()}
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    ta, tb = run_trace(a, x, "all"), run_trace(b, x, "all")
    assert ta.activations.recomputed() > 0
    for u, v in zip(ta.activations, tb.activations):  # reading recomputes
        if u is not None:
            torch.testing.assert_close(u, v)
    assert a.training and all(m.training for m in a.modules())
    for k, v in a.state_dict().items():
        assert torch.equal(v, stats[k]), k
