"""Methods built on the first principal component of a layer's (weighted) activations."""

from __future__ import annotations

import numpy as np
import torch

from .core import CamMethod, register_method


def first_component(acts: torch.Tensor) -> torch.Tensor:
    """Project each image's centred (h*w, C) activation matrix on its first right singular vector.

    The same quantity as pytorch-grad-cam's ``get_2d_projection``, without its full (h*w)^2 U
    matrix. A singular vector's sign is arbitrary and decides the map after ReLU, so the SVD runs
    in NumPy's LAPACK (reduced form), which picks the same sign as the reference does.
    """
    acts = torch.nan_to_num(acts)
    b, c, h, w = acts.shape
    out = acts.new_empty((b, h, w))
    for i in range(b):
        x = acts[i].reshape(c, h * w).T
        x = x - x.mean(dim=0)
        _, _, vt = np.linalg.svd(x.detach().cpu().numpy(), full_matrices=False)
        v = torch.from_numpy(vt[0]).to(device=x.device, dtype=x.dtype)
        out[i] = (x @ v).reshape(h, w)
    return out


@register_method
class EigenCAM(CamMethod):
    """EigenCAM (Muhammad & Yeasin 2020): first principal component of the activations (no gradients)."""

    name = "eigencam"
    uses_gradients = False

    def cam(self, acts, grads, ctx):
        return first_component(acts)


@register_method
class EigenGradCAM(CamMethod):
    """EigenGradCAM: first principal component of gradients x activations."""

    name = "eigengradcam"

    def cam(self, acts, grads, ctx):
        if grads is None:
            raise ValueError("eigengradcam needs gradients")
        return first_component(grads * acts)
