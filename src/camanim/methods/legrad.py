"""LeGrad (Bousselham et al. 2024): a ViT block's map from the gradient of its own prediction to its attention.

LeGrad is defined on a vision transformer's blocks only: the map of block l needs that block's
output tokens and its self-attention map. Any other layer (a CNN's, or a transformer's sub-module
such as ``blocks.3.attn`` or the head) gets an empty map and ``flags["legrad"]`` saying why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..trace import eval_mode, logits_of
from ..trace.layouts import TOKENS, parse_layout, to_nchw
from .base import CamMethod, LayerJob, MethodContext, Progress, warn_flagged
from .registry import register_method

#: the flag key a layer gets where LeGrad does not apply
LEGRAD_FLAG = "legrad"

Key = tuple[str, int]


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                        is_causal: bool = False, scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scale + mask) v`` written out, and the attention probabilities (..., Nq, Nk)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)
    nq, nk = q.shape[-2], k.shape[-2]
    if is_causal:
        keep = torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    probs = logits.softmax(dim=-1)
    return probs @ v, probs


class _AttentionCapture(TorchFunctionMode):
    """Runs each self-attention with its probabilities written out, and keeps them (B, heads, N, N).

    ``F.scaled_dot_product_attention`` (timm's ViTs, anything fused) is computed explicitly;
    ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``, torchvision's ViT) is asked for its
    per-head weights and the softmax they are a view of, (B * heads, N, N), is kept. Every module call on ``stack`` at
    that moment is credited with the map.
    """

    def __init__(self, stack: list[Key], found: dict[Key, list[torch.Tensor]]) -> None:
        super().__init__()
        self.stack, self.found = stack, found

    def _keep(self, probs: torch.Tensor) -> None:
        for key in self.stack:
            self.found.setdefault(key, []).append(probs)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
            bound = dict(zip(names, args)) | kwargs
            if bound.get("enable_gqa"):
                return func(*args, **kwargs)
            out, probs = _explicit_attention(bound["query"], bound["key"], bound["value"], bound.get("attn_mask"),
                                             bool(bound.get("is_causal", False)), bound.get("scale"))
            self._keep(probs)
            return out
        if func is F.multi_head_attention_forward:
            wanted = kwargs.get("need_weights", True)
            kwargs["need_weights"], kwargs["average_attn_weights"] = True, False
            out, weights = func(*args, **kwargs)
            base = weights._base if weights._base is not None else weights
            if base.numel() == weights.numel():
                self._keep(base)  # the softmax itself, (B * heads, N, N): the tensor the output was made from
            return out, (weights if wanted else None)
        return func(*args, **kwargs)


def _blocks(outputs: dict[Key, torch.Tensor], attention: dict[Key, list[torch.Tensor]],
            parents: dict[str, nn.Module]) -> tuple[list[Key], str]:
    """The transformer's blocks in execution order, and the container they are children of.

    A block is a child of an ``nn.Sequential``/``nn.ModuleList`` whose call ran exactly one
    self-attention over its own tokens (B, N, D -> a (B, heads, N, N) map) and returned (B, N, D).
    The container with the most such children holds the transformer's blocks.
    """
    by_parent: dict[str, list[Key]] = {}
    for key, out in outputs.items():
        maps = attention.get(key, [])
        if len(maps) != 1 or out.ndim != 3:
            continue
        probs = maps[0]
        if probs.ndim not in (3, 4) or probs.shape[-1] != probs.shape[-2] or probs.shape[-1] != out.shape[1]:
            continue
        parent = key[0].rpartition(".")[0]
        if isinstance(parents.get(parent), (nn.Sequential, nn.ModuleList)):
            by_parent.setdefault(parent, []).append(key)
    if not by_parent:
        return [], ""
    parent = max(by_parent, key=lambda p: len(by_parent[p]))
    return by_parent[parent], parent


@register_method
class LeGrad(CamMethod):
    """LeGrad (Bousselham et al. 2024): per ViT block, ReLU(d s^l / d A^l) averaged over heads and queries.

    For block l with output tokens z^l and self-attention probabilities A^l (heads x N x N), the
    block's own prediction is ``s^l = score(head(norm(z^l)))``: the model's final norm, pooling and
    classifier applied to z^l (camanim runs the model's own computation after its last block on
    z^l). The map is ``E^l = (1 / (h N)) sum_heads sum_queries ReLU(d s^l / d A^l)`` over the key
    tokens, the prefix (class, register) tokens left out, on the patch grid (the paper's Section 3).
    The paper's final explanation is the min-max normalised mean of E^l over layers; CAManim shows
    each E^l. The score is camanim's (the target's logit by default, ``--score``).

    Applies to the blocks of a vision transformer only: children of one ``nn.Sequential`` /
    ``nn.ModuleList`` that each run one self-attention (``F.scaled_dot_product_attention`` or
    ``nn.MultiheadAttention``) over the tokens they return. Every other layer gets an empty map and
    ``flags["legrad"]`` with the reason, named in one ``RuntimeWarning``. Cost: two extra forwards
    (one recording, one running the model's tail on every block's tokens at once) and one backward
    per block.

    Paper: W. Bousselham, A. Boggust, S. Chaybouti, H. Strobelt, H. Kuehne, "LeGrad: An
    Explainability Method for Vision Transformers via Feature Formation Sensitivity", 2024,
    https://arxiv.org/abs/2404.03214
    """

    name = "legrad"
    uses_gradients = False
    needs_model = True
    per_layer = False

    def cam_batch(self, jobs: Sequence[LayerJob], ctx: MethodContext,
                  progress: Progress | None = None) -> list[torch.Tensor]:
        """The raw maps (B, h, w) of every layer in ``jobs``: LeGrad's at each ViT block, zeros (flagged) elsewhere.

        Args:
            jobs: the layers to compute (their records' module, call and layout are read).
            ctx: must carry ``model``, ``input_tensor`` (B, C, H, W) and ``targets`` (B,).
            progress: called as ``progress(layers done, layers)``.

        Returns:
            One (B, h, w) map per job (the job's own grid), in order.

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets.
        """
        if ctx.model is None or ctx.input_tensor is None or ctx.targets is None:
            raise ValueError("legrad runs the model again: pass MethodContext(model=..., input_tensor=..., "
                             "targets=...)")
        model, targets = ctx.model, ctx.targets.view(-1)
        out = [job.acts.new_zeros((job.acts.shape[0], *job.acts.shape[2:])) for job in jobs]
        with eval_mode(model), torch.enable_grad():
            outputs, attention, order = self._record(model, ctx)
            blocks, parent = _blocks(outputs, attention, dict(model.named_modules()))
            last = max(blocks, key=order.index) if blocks else None
            shape = outputs[last].shape if last is not None else None
            todo = [n for n, job in enumerate(jobs)
                    if self._applies(job, blocks, parent, outputs, shape)]
            if todo:
                keys = [(jobs[n].record.module, jobs[n].record.call) for n in todo]
                scores = self._tail_scores(model, ctx, last, [outputs[k] for k in keys], targets)
                b = targets.shape[0]
                for i, (n, key) in enumerate(zip(todo, keys)):
                    grad = torch.autograd.grad(scores[i * b:(i + 1) * b].sum(), attention[key][0],
                                               retain_graph=i + 1 < len(todo))[0]
                    grad = grad.reshape(b, -1, *grad.shape[-2:])  # (B, heads, N, N)
                    relevance = grad.clamp(min=0).mean(dim=1).mean(dim=1)  # (B, N): heads, then queries
                    grid = to_nchw(relevance[..., None].detach(), jobs[n].record.layout)
                    out[n] = grid[:, 0].to(out[n].dtype)
                    if progress is not None:
                        progress(i + 1, len(todo))
        warn_flagged(jobs, LEGRAD_FLAG, "LeGrad", "it needs a vision transformer block's tokens and self-attention",
                     "choose a vision transformer's blocks (e.g. --layers 'blocks.*'), or another method for this "
                     "model")
        return out

    @staticmethod
    def _applies(job: LayerJob, blocks: list[Key], parent: str, outputs: dict[Key, torch.Tensor],
                 shape: torch.Size | None) -> bool:
        rec = job.record
        if not blocks:
            reason = ("no block of this model runs one self-attention over the (B, N, D) tokens it returns "
                      "(LeGrad is defined for ViT-style token blocks)")
        elif (rec.module, rec.call) not in blocks:
            reason = (f"LeGrad reads a transformer block's output tokens and its self-attention map; this layer "
                      f"is not one of the blocks of '{parent or 'the model'}'")
        elif outputs[(rec.module, rec.call)].shape != shape:
            reason = "this block's tokens differ in shape from the last block's, which the model's head reads"
        elif parse_layout(rec.layout).kind != TOKENS:
            reason = "LeGrad maps tokens onto their patch grid, and this block's output is not read as tokens"
        else:
            return True
        rec.flags[LEGRAD_FLAG] = f"not applicable: {reason}"
        return False

    @staticmethod
    def _record(model: nn.Module, ctx: MethodContext
                ) -> tuple[dict[Key, torch.Tensor], dict[Key, list[torch.Tensor]], list[Key]]:
        """One forward: every module call's 3-D output and the attention maps run inside it."""
        stack: list[Key] = []
        calls: dict[str, int] = {}
        outputs: dict[Key, torch.Tensor] = {}
        attention: dict[Key, list[torch.Tensor]] = {}
        order: list[Key] = []

        def pre(name: str):
            def hook(mod, args):
                calls[name] = calls.get(name, 0) + 1
                stack.append((name, calls[name]))
            return hook

        def post(name: str):
            def hook(mod, args, output):
                key = stack.pop()
                order.append(key)
                if isinstance(output, torch.Tensor) and output.ndim == 3:
                    outputs[key] = output
            return hook

        handles = []
        try:
            for name, mod in model.named_modules():
                if name:
                    handles.append(mod.register_forward_pre_hook(pre(name)))
                    handles.append(mod.register_forward_hook(post(name)))
            x = ctx.input_tensor.detach().requires_grad_(True)  # no fused inference path: attention is seen
            with _AttentionCapture(stack, attention):
                logits_of(model(x), ctx.output_key)
            ctx.forwards += 1
            ctx.forward_rows += x.shape[0]
        finally:
            for h in handles:
                h.remove()
        return outputs, attention, order

    @staticmethod
    def _tail_scores(model: nn.Module, ctx: MethodContext, last: Key, tokens: list[torch.Tensor],
                     targets: torch.Tensor) -> torch.Tensor:
        """``score(tail(z^l))`` for every block's tokens at once: (L * B,), layer-major.

        The model runs again with its last block's output replaced by every block's tokens stacked
        on the batch axis, so what follows the last block (final norm, pooling, classifier) is the
        model's own.
        """
        name, call = last
        module = dict(model.named_modules())[name]
        seen = [0]
        stacked = torch.cat(tokens, dim=0)

        def swap(mod, args, output):
            seen[0] += 1
            return stacked if seen[0] == call else None

        handle = module.register_forward_hook(swap)
        try:
            logits = logits_of(model(ctx.input_tensor.detach()), ctx.output_key)
        finally:
            handle.remove()
        ctx.forwards += 1
        ctx.forward_rows += ctx.input_tensor.shape[0]
        return ctx.score_fn(logits, targets.repeat(len(tokens)))
