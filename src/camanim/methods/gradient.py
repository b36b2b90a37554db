"""Gradient-based methods: all computed from the single backward pass.

The per-layer maths follows pytorch-grad-cam (``get_cam_weights`` /
``get_cam_image`` of each class), written in torch so nothing leaves the device.
"""

from __future__ import annotations

import torch

from .core import CamMethod, MethodContext, register_method


def _need(grads: torch.Tensor | None, name: str) -> torch.Tensor:
    if grads is None:
        raise ValueError(f"{name} needs gradients")
    return grads


@register_method
class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017): alpha_k = mean over space of dS/dA_k."""

    name = "gradcam"

    def weights(self, acts, grads, ctx):
        return _need(grads, self.name).mean(dim=(2, 3))


@register_method
class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin 2020): sum_k dS/dA_k * A_k, element-wise."""

    name = "hirescam"

    def cam(self, acts, grads, ctx):
        prod = _need(grads, self.name) * acts
        if ctx.eigen_smooth:
            from .activation import first_component

            return first_component(prod)
        return prod.sum(dim=1)


@register_method
class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018), Eq. 19 with the ReLU of Eq. 7."""

    name = "gradcam++"

    def weights(self, acts, grads, ctx):
        g = _need(grads, self.name)
        g2 = g * g
        g3 = g2 * g
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        return (g.clamp(min=0) * aij).sum(dim=(2, 3))


@register_method
class XGradCAM(CamMethod):
    """XGrad-CAM (Fu et al. 2020): alpha_k = sum(dS/dA_k * A_k) / sum(A_k)."""

    name = "xgradcam"

    def weights(self, acts, grads, ctx):
        g = _need(grads, self.name)
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        return (g * acts / (sum_a + 1e-7)).sum(dim=(2, 3))


@register_method
class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al. 2021): sum_k ReLU(dS/dA_k) * A_k."""

    name = "layercam"

    def cam(self, acts, grads, ctx):
        prod = _need(grads, self.name).clamp(min=0) * acts
        if ctx.eigen_smooth:
            from .activation import first_component

            return first_component(prod)
        return prod.sum(dim=1)


@register_method
class GradCAMElementWise(CamMethod):
    """Grad-CAM element-wise: sum_k ReLU(dS/dA_k * A_k)."""

    name = "gradcamelementwise"

    def cam(self, acts, grads, ctx):
        prod = (_need(grads, self.name) * acts).clamp(min=0)
        if ctx.eigen_smooth:
            from .activation import first_component

            return first_component(prod)
        return prod.sum(dim=1)


@register_method
class RandomCAM(CamMethod):
    """RandomCAM: uniform random channel weights in [-1, 1] (a sanity baseline), seeded."""

    name = "randomcam"
    per_layer = False  # one seeded generator draws the weights layer after layer, in execution order

    def weights(self, acts, grads, ctx: MethodContext):
        return torch.rand(acts.shape[:2], generator=ctx.generator, dtype=acts.dtype,
                          device="cpu").to(acts.device) * 2 - 1
