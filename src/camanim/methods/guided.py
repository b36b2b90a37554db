"""Guided Backpropagation (Springenberg et al. 2015), for Guided Grad-CAM frames (``--guided``).

Guided Backpropagation is a pixel-level gradient, not a layer's CAM (so not a registry method):
it is computed once per (image, target) and multiplied by each layer's normalised CAM, as
pytorch-grad-cam's ``GuidedBackpropReLUModel`` and ``deprocess_image(cam * gb)`` do for one layer.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..trace import eval_mode, logits_of


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes a gradient only where both the input and the gradient are positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype) * (grad > 0).to(grad.dtype)


def _guide(module, args, output):
    # an in-place ReLU has already written relu(x) into its input: the masks (x > 0) are the same
    return _GuidedReLU.apply(output if module.inplace else args[0])


def guided_relus(model: nn.Module) -> int:
    """How many ``nn.ReLU`` modules ``model`` has: the ones guided backpropagation rewrites (0: none, and the
    "guided" image is the plain input gradient)."""
    return sum(isinstance(m, nn.ReLU) for m in model.modules())


def guided_backprop(model: nn.Module, input_tensor: torch.Tensor, targets: torch.Tensor,
                    output_key: str | int | None = None) -> torch.Tensor:
    """Guided Backpropagation of each row's target logit to the input: (R, C, H, W) float32.

    Every ``nn.ReLU`` module of the model (the ones pytorch-grad-cam's ``GuidedBackpropReLUModel``
    replaces) passes back only positive gradients where its input was positive; ReLUs called as
    functions (``F.relu``) stay plain, as in pytorch-grad-cam. Nothing of the model is swapped: each
    ReLU gets a forward hook for this one pass, removed on every path (errors included), and no
    parameter's ``.grad`` is touched (the gradient is taken for the input alone). A model without
    ``nn.ReLU`` modules (ReLU6, GELU, SiLU, ``F.relu``) has no guided rule to apply: its result is the
    plain input gradient, which one ``RuntimeWarning`` says (as pytorch-grad-cam, whose
    ``GuidedBackpropReLUModel`` then gives the plain gradient too).

    Paper: J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for Simplicity: The
    All Convolutional Net", ICLR 2015 workshop, https://arxiv.org/abs/1412.6806; Guided Grad-CAM:
    Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391

    Args:
        model: the model.
        input_tensor: (R, C, H, W) model input, one row per (image, target).
        targets: (R,) class index per row; the row's logit is differentiated.
        output_key: where the logits are in a tuple/dict model output.

    Returns:
        d logit / d input with guided ReLUs, (R, C, H, W) float32, on the input's device.
    """
    if not guided_relus(model):
        warnings.warn(f"camanim: --guided: {type(model).__name__} has no nn.ReLU module, so no guided "
                      "backpropagation rule applies: the guided image is the plain input gradient (guided_relus: 0 in the "
                      "result's options and its manifest)", RuntimeWarning, stacklevel=2)
    handles = [m.register_forward_hook(_guide) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with eval_mode(model), torch.enable_grad():
            x = input_tensor.detach().clone().requires_grad_(True)
            logits = logits_of(model(x), output_key)
            picked = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
            (grad,) = torch.autograd.grad(picked, x)
    finally:
        for h in handles:
            h.remove()
    return grad.detach().float()
