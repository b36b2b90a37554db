"""Gradient-based methods: all but Smooth Grad-CAM++ computed from the single backward pass.

The per-layer maths follows pytorch-grad-cam (``get_cam_weights`` /
``get_cam_image`` of each class), written in torch so nothing leaves the device.
"""

from __future__ import annotations

import torch

from ..trace import run_trace
from ..trace.layouts import to_nchw
from .base import CamMethod, MethodContext, first_component, weighted_map
from .registry import register_method


def _need(grads: torch.Tensor | None, name: str) -> torch.Tensor:
    if grads is None:
        raise ValueError(f"{name} needs gradients")
    return grads


@register_method
class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017): alpha_k = mean over space of dS/dA_k.

    For activations A (B, C, h, w) and the target's score S, ``alpha_k = mean_ij dS/dA_k,ij`` and
    the map (B, h, w) is ``sum_k alpha_k A_k`` (ReLU afterwards). Same maths as pytorch-grad-cam's
    ``GradCAM``.

    Paper: R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra, "Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization", ICCV 2017,
    https://arxiv.org/abs/1610.02391
    """

    name = "gradcam"
    volumes = True

    def weights(self, acts, grads, ctx):
        """Channel weights (B, C): the spatial mean of the gradients ``grads`` (B, C, h, w).

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        return _need(grads, self.name).mean(dim=(2, 3))


@register_method
class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin 2020): sum_k dS/dA_k * A_k, element-wise.

    ``map_ij = sum_k dS/dA_k,ij * A_k,ij``: Grad-CAM without the spatial averaging of the
    gradients. When only pooling/flattening and one fully-connected layer follow the layer, the
    map's entries sum to the score less the head's bias (the paper's faithfulness). Same maths as
    pytorch-grad-cam's ``HiResCAM``, which also prints a warning when ``eigen_smooth`` is set; here
    nothing is printed.

    Paper: R. L. Draelos, L. Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", 2020, https://arxiv.org/abs/2011.08891
    """

    name = "hirescam"
    volumes = True

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w) from activations and gradients (B, C, h, w).

        With ``ctx.eigen_smooth``, the first principal component of ``dS/dA * A`` instead of its
        channel sum (the faithfulness guarantee then no longer holds).

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        prod = _need(grads, self.name) * acts
        if ctx.eigen_smooth:

            return first_component(prod)
        return prod.sum(dim=1)


@register_method
class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018), Eq. 19 with the ReLU of Eq. 7.

    With g = dS/dA, ``alpha_k = sum_ij ReLU(g_k,ij) * a_k,ij`` where
    ``a_k,ij = g^2 / (2 g^2 + sum_ij(A_k) * g^3 + 1e-6)`` (0 where g = 0): the paper's closed form for
    an exponential score, with its higher derivatives written as powers of the first. The map is
    ``sum_k alpha_k A_k``. Same maths as pytorch-grad-cam's ``GradCAMPlusPlus``.

    Paper: A. Chattopadhay, A. Sarkar, P. Howlader, V. N. Balasubramanian, "Grad-CAM++: Improved
    Visual Explanations for Deep Convolutional Networks", WACV 2018, https://arxiv.org/abs/1710.11063
    """

    name = "gradcam++"
    volumes = True

    def weights(self, acts, grads, ctx):
        """Channel weights (B, C) from activations and gradients (B, C, h, w), Eq. 19 of the paper.

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        g = _need(grads, self.name)
        g2 = g * g
        g3 = g2 * g
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        return (g.clamp(min=0) * aij).sum(dim=(2, 3))


@register_method
class XGradCAM(CamMethod):
    """XGrad-CAM (Fu et al. 2020): alpha_k = sum(dS/dA_k * A_k) / sum(A_k).

    ``alpha_k = sum_ij (dS/dA_k,ij * A_k,ij) / (sum_ij A_k,ij + 1e-7)`` and the map is
    ``sum_k alpha_k A_k``. Same maths (and epsilon) as pytorch-grad-cam's ``XGradCAM``.

    Paper: R. Fu, Q. Hu, X. Dong, Y. Guo, Y. Gao, B. Li, "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC 2020, https://arxiv.org/abs/2008.02312
    """

    name = "xgradcam"
    volumes = True

    def weights(self, acts, grads, ctx):
        """Channel weights (B, C): gradient-times-activation sums over each channel's activation sum.

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        g = _need(grads, self.name)
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        return (g * acts / (sum_a + 1e-7)).sum(dim=(2, 3))


@register_method
class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al. 2021): sum_k ReLU(dS/dA_k) * A_k.

    ``map_ij = sum_k ReLU(dS/dA_k,ij) * A_k,ij``: each position weighted by its own positive
    gradient, which keeps the fine detail of early layers. Same maths as pytorch-grad-cam's
    ``LayerCAM``.

    Paper: P.-T. Jiang, C.-B. Zhang, Q. Hou, M.-M. Cheng, Y. Wei, "LayerCAM: Exploring Hierarchical
    Class Activation Maps for Localization", IEEE Transactions on Image Processing 2021,
    https://ieeexplore.ieee.org/document/9462463 (the link in pytorch-grad-cam's ``layer_cam.py``; its
    README links the PDF, http://mftp.mmcheng.net/Papers/21TIP_LayerCAM.pdf).
    """

    name = "layercam"
    volumes = True

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w) from activations and gradients (B, C, h, w).

        With ``ctx.eigen_smooth``, the first principal component of ``ReLU(dS/dA) * A`` instead of
        its channel sum.

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        prod = _need(grads, self.name).clamp(min=0) * acts
        if ctx.eigen_smooth:

            return first_component(prod)
        return prod.sum(dim=1)


@register_method
class GradCAMElementWise(CamMethod):
    """Grad-CAM element-wise: sum_k ReLU(dS/dA_k * A_k).

    ``map_ij = sum_k ReLU(dS/dA_k,ij * A_k,ij)``: HiResCAM's product with a ReLU before the channel
    sum, so no channel's negative evidence cancels another's positive evidence. Same maths as
    pytorch-grad-cam's ``GradCAMElementWise``.

    No paper of its own: a variant from pytorch-grad-cam (https://github.com/jacobgil/pytorch-grad-cam) of Grad-CAM
    (https://arxiv.org/abs/1610.02391) and HiResCAM (https://arxiv.org/abs/2011.08891).
    """

    name = "gradcamelementwise"
    volumes = True

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w) from activations and gradients (B, C, h, w).

        With ``ctx.eigen_smooth``, the first principal component of ``ReLU(dS/dA * A)`` instead of
        its channel sum.

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        prod = (_need(grads, self.name) * acts).clamp(min=0)
        if ctx.eigen_smooth:

            return first_component(prod)
        return prod.sum(dim=1)


@register_method
class RandomCAM(CamMethod):
    """RandomCAM: uniform random channel weights in [-1, 1] (a sanity baseline), seeded.

    ``alpha_k ~ U(-1, 1)``, independent of the model's gradients, and the map is
    ``sum_k alpha_k A_k``: what a real method's maps should clearly beat.
    Unlike pytorch-grad-cam's ``RandomCAM`` (NumPy's global, unseeded generator), the weights come
    from ``ctx.generator`` on the CPU, drawn layer after layer in execution order, so a run repeats.

    No paper of its own: a baseline from pytorch-grad-cam (https://github.com/jacobgil/pytorch-grad-cam) for Grad-CAM's weighted sum
    (https://arxiv.org/abs/1610.02391).
    """

    name = "randomcam"
    volumes = True
    per_layer = False  # one seeded generator draws the weights layer after layer, in execution order

    def weights(self, acts, grads, ctx: MethodContext):
        """Channel weights (B, C) drawn uniformly from [-1, 1] with ``ctx.generator``; ``grads`` is unused."""
        return torch.rand(acts.shape[:2], generator=ctx.generator, dtype=acts.dtype,
                          device="cpu").to(acts.device) * 2 - 1


@register_method
class SmoothGradCAMpp(CamMethod):
    """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with gradients averaged over noisy inputs.

    n = ``samples`` (4) copies ``x + N(0, std^2)`` (``std`` = 0.3) each run one forward and one backward
    for *all* layers together (n passes in total, not n per layer), recording every layer of the run.
    With ``D_p`` the mean over the copies of ``(dS/dA)^p`` and A the clean input's activations,
    ``alpha = D_2 / (2 D_2 + sum_ab(A * D_3) + 1e-8)`` per position and the weights are
    ``w_k = sum_ij alpha_kij * ReLU(D_1)_kij`` (the paper's smoothed first derivative, the mean
    gradient), and the map is ``sum_k w_k A_k`` on the clean input's activations. torchcam's
    ``SmoothGradCAMpp`` differs twice: it takes ``ReLU`` of the *last* copy's gradient, and its map
    multiplies the weights by the *last noisy copy's* activations (its hooks stay on during the noisy
    passes); camanim follows the paper (tests/methods/test_gradient_torchcam.py shows both). As in
    torchcam, alpha's numerator is ``D_2`` (the paper prints ``D_1``, against its own Grad-CAM++
    derivation). The noise is drawn, copy after copy, from a generator seeded with the run's seed
    (``ctx.generator``), as torchcam draws it from the global generator.

    Paper: D. Omeiza, S. Speakman, C. Cintas, K. Weldemariam, "Smooth Grad-CAM++: An Enhanced
    Inference Level Visualization Technique for Deep Convolutional Neural Network Models", 2019,
    https://arxiv.org/abs/1908.01224
    """

    name = "smoothgradcam++"
    uses_gradients = False  # the clean pass gives the activations; the noisy passes give the gradients
    needs_model = True
    per_layer = False
    samples = 4
    std = 0.3
    eps = 1e-8

    def noisy_gradients(self, jobs, ctx):
        """Per job, the means over the noisy copies of dS/dA, its square and its cube, each (B, C, h, w).

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets.
        """
        if ctx.model is None or ctx.input_tensor is None or ctx.targets is None:
            raise ValueError(f"{self.name} runs the model again: pass MethodContext(model=..., input_tensor=..., "
                             "targets=...)")
        x = ctx.input_tensor
        seed = ctx.generator.initial_seed() if ctx.generator is not None else 0
        gen = torch.Generator(device=x.device).manual_seed(int(seed))
        where = {(job.record.module, job.record.call): n for n, job in enumerate(jobs)}
        modules = sorted({job.record.module for job in jobs})
        sums = [[torch.zeros_like(job.acts) for _ in range(3)] for job in jobs]
        for _ in range(self.samples):
            noisy = x + torch.normal(0.0, self.std, x.shape, generator=gen, device=x.device, dtype=x.dtype)
            tr = run_trace(ctx.model, noisy.detach(), modules, targets=ctx.targets, output_key=ctx.output_key,
                           score=ctx.score_fn)
            ctx.forwards += 1
            ctx.forward_rows += int(x.shape[0])
            for rec, grad in zip(tr.records, tr.gradients):
                n = where.get((rec.module, rec.call))
                if n is None or grad is None:
                    continue
                g = to_nchw(grad, jobs[n].record.layout)
                if g is None:
                    continue
                g = g.detach().float()
                sums[n][0] += g
                sums[n][1] += g.pow(2)
                sums[n][2] += g.pow(3)
            del tr
        return [[s / self.samples for s in three] for three in sums]

    def cam_batch(self, jobs, ctx, progress=None):
        """Every layer's raw map (B, h, w) from the clean activations and the noisy passes' gradients.

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets.
        """
        out = []
        means = self.noisy_gradients(jobs, ctx)
        for n, (job, (d1, d2, d3)) in enumerate(zip(jobs, means), 1):
            acts = torch.nan_to_num(job.acts)
            alpha = d2 / (2 * d2 + (d3 * acts).sum(dim=(2, 3), keepdim=True) + self.eps)
            weights = (alpha * d1.clamp(min=0)).sum(dim=(2, 3))
            ctx.layer_name, ctx.record = job.record.name, job.record
            out.append(weighted_map(weights, acts, ctx))
            if progress is not None:
                progress(n, len(jobs))
        return out
