"""More per-layer methods from pytorch-grad-cam: KPCA-CAM, FEM, Seg-Eigen-CAM, ShapleyCAM, FinerCAM.

Each raw map equals pytorch-grad-cam's for the layer computed on its own (tests/methods/test_extra.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..trace import class_logits, eval_mode, logits_of
from ..trace.layouts import to_nchw
from .base import (
    CamMethod,
    LayerJob,
    MethodContext,
    Progress,
    ScoreFn,
    first_component,
    weighted_map,
)
from .gradient import GradCAM
from .registry import register_method


@register_method
class KPCACAM(CamMethod):
    """KPCA-CAM (Karmani et al. 2024): the first kernel principal component of the activations.

    The (h*w, C) activation matrix, centred per channel, is projected on the first component of a
    kernel PCA (``kernel='sigmoid'``, ``gamma=None``: 1/C), through scikit-learn as pytorch-grad-cam
    does (``get_2d_projection_kernel``). No gradients. The kernel matrix has (h*w)^2 entries, so
    early, large layers cost memory and time (a 112x112 map: 1.3 GB).

    Paper: S. Karmani, T. Sivakaran, G. Prasad, M. Ali, W. Yang, S. Tang, "KPCA-CAM: Visual
    Explainability of Deep Computer Vision Models using Kernel PCA", 2024, https://arxiv.org/abs/2410.00267
    """

    name = "kpcacam"
    volumes = True
    uses_gradients = False
    kernel = "sigmoid"
    gamma: float | None = None

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w): the activations (B, C, h, w) projected on their first kernel component."""
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

        proj = get_2d_projection_kernel(acts.detach().float().cpu().numpy(), self.kernel, self.gamma)
        return torch.from_numpy(np.ascontiguousarray(proj)).to(acts.device)


@register_method
class FEM(CamMethod):
    """FEM, Feature Explanation Method (Fuad et al. 2020): weights from each channel's k-sigma outliers.

    ``alpha_k = mean_ij [A_k,ij > mean(A_k) + k * std(A_k)]`` (k = 2, population std) and the map is
    ``sum_k alpha_k A_k``. No gradients; like pytorch-grad-cam it ignores ``eigen_smooth``.

    Paper: K. A. A. Fuad, P.-E. Martin, R. Giot, R. Bourqui, J. Benois-Pineau, A. Zemmari, "Features
    Understanding in 3D CNNs for Actions Recognition in Video", IPTA 2020,
    https://hal.science/hal-02963298/document
    """

    name = "fem"
    volumes = True
    uses_gradients = False
    k = 2.0

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w) from the activations (B, C, h, w); ``grads`` is unused."""
        mean = acts.mean(dim=(2, 3), keepdim=True)
        std = acts.std(dim=(2, 3), correction=0, keepdim=True)
        alpha = (acts > mean + self.k * std).to(acts.dtype).mean(dim=(2, 3))
        return (alpha[:, :, None, None] * acts).sum(dim=1)


@register_method
class SegEigenCAM(CamMethod):
    """Seg-Eigen-CAM (Chung & Ying 2025): first principal component of |dS/dA| * A, sign-corrected.

    The projection is flipped where its smallest value is larger in magnitude than its largest
    (the paper's Eq. 13), so salient regions come out positive. Same maths as pytorch-grad-cam's
    ``SegEigenCAM``.

    Paper: C.-T. Chung, J. J.-C. Ying, "Seg-Eigen-CAM: Eigen-Value-Based Visual Explanations for
    Semantic Segmentation Models", Applied Sciences 15(13), 7562, 2025, https://doi.org/10.3390/app15137562
    """

    name = "segeigencam"
    volumes = True

    def cam(self, acts, grads, ctx):
        """The raw map (B, h, w) from activations and gradients (B, C, h, w).

        Raises:
            ValueError: If ``grads`` is None (the pass ran without a backward).
        """
        if grads is None:
            raise ValueError("segeigencam needs gradients")
        proj = first_component(grads.abs() * acts)
        flat = proj.flatten(1)
        flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
        return torch.where(flip[:, None, None], -proj, proj)


@register_method
class ShapleyCAM(CamMethod):
    """ShapleyCAM (Cai 2025): Grad-CAM weights corrected by the Hessian-vector product.

    ``alpha_k = mean_ij (dS/dA - 1/2 * H A)_k,ij`` with ``H A = d(dS/dA . A)/dA`` (A held fixed in the
    product), and the map is ``sum_k alpha_k A_k``. The Hessian needs the gradient's own graph, so
    this method runs one extra forward and one backward with ``create_graph`` for all layers, then
    one Hessian-vector product per layer. For a piecewise-linear network (ReLU, max-pool) explaining
    the logit, H A is 0 and ShapleyCAM equals Grad-CAM; ``--score softmax`` makes them differ.

    Paper: H. Cai, "CAMs as Shapley Value-based Explainers", 2025, https://arxiv.org/abs/2501.06261
    """

    name = "shapleycam"
    volumes = True
    uses_gradients = False
    needs_model = True

    def cam_batch(self, jobs: Sequence[LayerJob], ctx: MethodContext,
                  progress: Progress | None = None) -> list[torch.Tensor]:
        """The raw maps (B, h, w) of every layer in ``jobs``, from one extra forward and backward.

        Args:
            jobs: the layers to compute; ``job.acts`` (B, C, h, w) are the activations weighted.
            ctx: must carry ``model``, ``input_tensor`` (B, C, H, W) and ``targets`` (B,).
            progress: called as ``progress(layers done, layers)`` after each layer.

        Returns:
            One (B, h, w) map per job, in order.

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets.
        """
        if ctx.model is None or ctx.input_tensor is None or ctx.targets is None:
            raise ValueError("shapleycam runs the model again: pass MethodContext(model=..., input_tensor=..., "
                             "targets=...)")
        model = ctx.model
        modules = dict(model.named_modules())
        wanted = {(job.record.module, job.record.call) for job in jobs}
        captured: dict[tuple[str, int], torch.Tensor] = {}
        calls: dict[str, int] = {}

        def make_hook(name: str):
            def hook(mod, args, output):
                k = calls[name] = calls.get(name, 0) + 1
                if (name, k) not in wanted:
                    return None
                tensor = output if isinstance(output, torch.Tensor) else output[0]
                captured[(name, k)] = tensor
                # The model continues on a copy, so later in-place ops cannot change what we differentiate.
                copy = tensor.clone()
                return copy if isinstance(output, torch.Tensor) else (copy, *output[1:])

            return hook

        handles = [modules[n].register_forward_hook(make_hook(n)) for n in sorted({w[0] for w in wanted})]
        out: list[torch.Tensor] = []
        try:
            with eval_mode(model), torch.enable_grad():
                x = ctx.input_tensor.detach().requires_grad_(True)
                logits = logits_of(model(x), ctx.output_key)
                ctx.forwards += 1
                ctx.forward_rows += x.shape[0]
                score = ctx.score_fn(logits, ctx.targets.view(-1)).sum()
                acts = [captured[(job.record.module, job.record.call)] for job in jobs]
                grads = torch.autograd.grad(score, acts, create_graph=True, allow_unused=True)
                for n, (job, a, g) in enumerate(zip(jobs, acts, grads), 1):
                    g = torch.zeros_like(a) if g is None else g
                    hvp = None
                    if g.requires_grad:
                        hvp = torch.autograd.grad(g, a, grad_outputs=a.detach(), retain_graph=True,
                                                  allow_unused=True)[0]
                    g_maps = to_nchw(g.detach(), job.record.layout).float()
                    h_maps = to_nchw(hvp.detach(), job.record.layout).float() if hvp is not None else 0.0
                    alpha = (g_maps - 0.5 * h_maps).mean(dim=(2, 3))
                    ctx.layer_name, ctx.record = job.record.name, job.record
                    out.append(weighted_map(alpha, job.acts, ctx).detach())
                    if progress is not None:
                        progress(n, len(jobs))
        finally:
            for h in handles:
                h.remove()
        return out


@register_method
class FinerCAM(GradCAM):
    """Finer-CAM (Zhang et al. 2025): Grad-CAM of the target's margin over its closest classes.

    The differentiated score is ``sum_j p_j (y_c - alpha * y_j) / (sum_j p_j + 1e-9)`` over the
    three classes j whose logits are closest to the target c's (p: softmax probabilities, alpha = 1),
    as pytorch-grad-cam's ``FinerCAM`` with its default ``GradCAM`` base. It needs its own backward
    (its own score), so in a multi-method run it does not share the single pass's gradients.

    Paper: Z. Zhang, J. Gu, A. Chowdhury, Z. Mai, D. Carlyn, T. Berger-Wolf, Y. Su, W.-L. Chao,
    "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation", 2025,
    https://arxiv.org/abs/2501.11309
    """

    name = "finercam"
    volumes = True
    needs_classes = True
    alpha = 1.0
    comparisons = 3

    def target_score(self, base: ScoreFn) -> ScoreFn:
        """Finer-CAM's score ``score(logits (B, K), targets (B,)) -> (B,)``; ``base`` is not used.

        The nearest classes are picked on detached logits (no gradient through the sort); the
        probability-weighted margin is differentiated as a whole.
        """
        alpha, n_comp = self.alpha, self.comparisons

        def finer_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            logits = class_logits(logits)  # a one-logit model's two classes, -z and z
            targets = targets.view(-1).to(logits.device)
            y = logits.detach()
            dist = (y - y.gather(1, targets.view(-1, 1))).abs()
            dist.scatter_(1, targets.view(-1, 1), -1.0)  # the target itself sorts first, then the nearest
            k = max(0, min(n_comp, logits.shape[1] - 1))
            comp = torch.argsort(dist, dim=1, stable=True)[:, 1:1 + k]
            prob = logits.softmax(dim=1)
            w = prob.gather(1, comp)
            main = logits.gather(1, targets.view(-1, 1))
            num = (w * (main - alpha * logits.gather(1, comp))).sum(dim=1)
            return num / (w.sum(dim=1) + 1e-9)

        return finer_score
