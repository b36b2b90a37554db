"""Methods built on the first principal component of a layer's (weighted) activations."""

from __future__ import annotations

from .base import CamMethod, first_component
from .registry import register_method


@register_method
class EigenCAM(CamMethod):
    """EigenCAM (Muhammad & Yeasin 2020): first principal component of the activations (no gradients).

    ``map = (A - mean(A)) v_1`` per image, with A the (h*w, C) activation matrix and v_1 its first
    right singular vector after centring each channel: class-agnostic (the target plays no part).
    Same maths as pytorch-grad-cam's ``EigenCAM`` (``get_2d_projection``), which also ignores
    ``eigen_smooth``.

    Paper: M. B. Muhammad, M. Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020, https://arxiv.org/abs/2008.00299
    """

    name = "eigencam"
    volumes = True
    uses_gradients = False

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w): the activations (B, C, h, w) projected on their first component."""
        return first_component(acts)


@register_method
class EigenGradCAM(CamMethod):
    """EigenGradCAM: first principal component of gradients x activations.

    ``map = (G - mean(G)) v_1`` per image, with G = dS/dA * A as an (h*w, C) matrix and v_1 its
    first right singular vector: EigenCAM made class-discriminative by the gradient. Same maths as
    pytorch-grad-cam's ``EigenGradCAM``.

    No paper of its own: a variant from pytorch-grad-cam (https://github.com/jacobgil/pytorch-grad-cam)
    of Eigen-CAM (Muhammad & Yeasin 2020, https://arxiv.org/abs/2008.00299).
    """

    name = "eigengradcam"
    volumes = True

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w) from activations and gradients (B, C, h, w).

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        if grads is None:
            raise ValueError("eigengradcam needs gradients")
        return first_component(grads * acts)
