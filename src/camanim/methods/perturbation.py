"""Perturbation methods: ScoreCAM and AblationCAM, with their extra forwards batched.

Both score one perturbed copy of the input per channel of every layer. Every copy has the
input's shape whatever its layer, so copies of *all* layers are packed into the same batches of
``ctx.batch_size`` images (across channels and across layers), and rows of the run that show the
same image (``--target topk:3``) share each copy: one forward, one score per target read off its
logits. Layers that share one output tensor (``same_as``) never reach a method: they are computed
once by :func:`camanim.compute.layer_cams`.

The per-layer maths is pytorch-grad-cam's (``score_cam.py``, ``ablation_cam.py``,
``ablation_layer.py``), in torch on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..trace import eval_mode, logits_of
from .base import CamMethod, LayerJob, MethodContext, Progress, weighted_map
from .registry import register_method

#: AblationCAM's value for an ablated channel of a layer whose output can be negative: the layer's
#: minimum minus this (pytorch-grad-cam's ``ABLATION_VALUE``).
ABLATION_OFFSET = 1e7


@dataclass
class _Segment:
    """The channels of one layer, for one image, that need a perturbed forward."""

    job: int
    group: int
    channels: torch.Tensor  # (n,) long, channel indices
    offset: int  # unit id of channel 0 of this (layer, image); unit id = offset + channel


@dataclass
class _Piece:
    segment: _Segment
    channels: torch.Tensor


def _need_model(method: CamMethod, ctx: MethodContext) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    if ctx.model is None or ctx.input_tensor is None or ctx.targets is None:
        raise ValueError(f"{method.name} runs the model again: pass MethodContext(model=..., input_tensor=..., "
                         "targets=...)")
    return ctx.model, ctx.input_tensor, ctx.targets.view(-1)


def image_groups(ctx: MethodContext, rows: int) -> list[torch.Tensor]:
    """Rows of the run grouped by the image they show (``ctx.image_index``), each group's first row first."""
    if ctx.image_index is None:
        return [torch.tensor([r]) for r in range(rows)]
    index = ctx.image_index.view(-1).cpu()
    order: dict[int, list[int]] = {}
    for r, i in enumerate(index.tolist()):
        order.setdefault(int(i), []).append(r)
    return [torch.tensor(v) for v in order.values()]


class _Forwards:
    """Runs batches of perturbed inputs through the model and reads every row's score off the logits."""

    def __init__(self, method: CamMethod, ctx: MethodContext, n_units: int) -> None:
        self.ctx = ctx
        self.model, self.x, self.targets = _need_model(method, ctx)
        self.groups = image_groups(ctx, self.x.shape[0])
        self.score = ctx.score_fn
        self.scores = torch.zeros((self.x.shape[0], n_units), dtype=torch.float32, device=self.x.device)
        cl = ctx.channels_last
        self.channels_last = (self.x.device.type == "cpu") if cl is None else bool(cl)
        self.channels_last = self.channels_last and self.x.ndim == 4

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``batch`` (channels-last on CPU: the same maths, faster convolutions)."""
        self.ctx.forwards += 1
        self.ctx.forward_rows += batch.shape[0]
        if self.channels_last:
            try:
                return logits_of(self.model(batch.contiguous(memory_format=torch.channels_last)), self.ctx.output_key)
            except RuntimeError:
                # A model that .view()s a channels-last tensor: run it as it was written, from now on.
                self.channels_last = False
        return logits_of(self.model(batch.contiguous()), self.ctx.output_key)

    def record(self, logits: torch.Tensor, units: torch.Tensor, groups: torch.Tensor) -> None:
        """Store ``score(logits[i], target of row m)`` for every row m showing unit i's image."""
        for g in groups.unique().tolist():
            pos = (groups == g).nonzero().view(-1)
            for m in self.groups[g].tolist():
                tgt = self.targets[m].expand(pos.numel())
                self.scores[m, units[pos.to(units.device)]] = self.score(logits[pos], tgt).float()


def _batches(segments: Sequence[_Segment], size: int) -> Iterator[list[_Piece]]:
    """Consecutive pieces of the segments, ``size`` channels per batch, across segment boundaries."""
    batch: list[_Piece] = []
    n = 0
    for seg in segments:
        pos = 0
        while pos < seg.channels.numel():
            take = min(size - n, seg.channels.numel() - pos)
            batch.append(_Piece(seg, seg.channels[pos:pos + take]))
            n += take
            pos += take
            if n == size:
                yield batch
                batch, n = [], 0
    if batch:
        yield batch


def _job_progress(jobs: Sequence[LayerJob], segments: Sequence[_Segment],
                  progress: Progress | None) -> Callable[[int], None]:
    """A callback taking 'units done' that reports layers done (a layer is done when its last unit is)."""
    if progress is None:
        return lambda done: None
    last_unit_of: dict[int, int] = {}
    total = 0
    for seg in segments:
        total += seg.channels.numel()
        last_unit_of[seg.job] = total
    ends = sorted(last_unit_of.values())

    def report(done: int) -> None:
        progress(sum(e <= done for e in ends) + (len(jobs) - len(last_unit_of)), len(jobs))

    return report


@register_method
class ScoreCAM(CamMethod):
    """Score-CAM (Wang et al. 2020): channel weights from the score of the input masked by each channel.

    For layer activations A (C, h, w) and input x, each channel's map is upsampled to the input
    size (bilinear, corners aligned) and min-max scaled, ``M_k = (up(A_k) - min) / (max - min + 1e-8)``;
    the weights are ``alpha = softmax_k(S(x * M_k))`` (S: the target's logit, or its probability with
    ``--score softmax``) and the map is ``sum_k alpha_k A_k``. A channel that is constant (a dead
    ReLU channel) has the zero mask, never 0/0: its masked input is all zero, scored once per run.

    Cost: one forward per channel of every layer, batched ``ctx.batch_size`` at a time across layers,
    less the channels whose mask another channel already has. Min-max scaling removes any positive
    per-channel affine map, so a BatchNorm (eval mode, positive gamma) after a convolution, or a
    DenseNet ``norm1`` re-normalising earlier features, yields the very masks of its input: a channel
    whose scaled map matches an earlier channel's at the same resolution within ``share_tolerance``
    (1e-5, max abs) takes that channel's score instead of a forward of its own. The masks then
    differ by float rounding only; ``share_tolerance = None`` runs every channel (pytorch-grad-cam's
    ``ScoreCAM`` always does).

    Paper: H. Wang, Z. Wang, M. Du, F. Yang, Z. Zhang, S. Ding, P. Mardziel, X. Hu, "Score-CAM:
    Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020,
    https://arxiv.org/abs/1910.01279
    """

    name = "scorecam"
    uses_gradients = False
    needs_model = True

    #: added to max - min in the mask scaling, as pytorch-grad-cam does
    eps = 1e-8
    #: a channel whose min-max scaled map is within this (max abs) of an earlier channel's, at the
    #: same resolution, has the same mask and takes that channel's score (0 or None: never)
    share_tolerance: float | None = 1e-5

    def masks(self, acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Upsampled, min-max scaled channel maps (n, H, W) of ``acts`` (n, h, w)."""
        up = F.interpolate(acts[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        lo = up.amin(dim=(1, 2), keepdim=True)
        hi = up.amax(dim=(1, 2), keepdim=True)
        return (up - lo) / (hi - lo + self.eps)

    def cam_batch(self, jobs: Sequence[LayerJob], ctx: MethodContext,
                  progress: Progress | None = None) -> list[torch.Tensor]:
        """The raw maps (B, h, w) of every layer in ``jobs``, from batched forwards of masked inputs.

        Args:
            jobs: the layers to compute; ``job.acts`` (B, C, h, w) give the masks and the map.
            ctx: must carry ``model``, ``input_tensor`` (B, C, H, W) and ``targets`` (B,); counts the
                forwards it runs in ``ctx.forwards`` / ``ctx.forward_rows`` and the shared masks in
                ``ctx.extra["scorecam_shared_masks"]``.
            progress: called as ``progress(layers done, layers)``.

        Returns:
            One (B, h, w) map per job, in order.

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets.
        """
        model, x, _ = _need_model(self, ctx)
        groups = image_groups(ctx, x.shape[0])
        acts = [torch.nan_to_num(job.acts) for job in jobs]
        segments: list[_Segment] = []
        constant: list[tuple[int, int, torch.Tensor]] = []  # (job, group, channel ids) with a constant map
        shared = SameMaps(acts, groups, self.share_tolerance)
        aliases: list[tuple[int, int, int]] = []  # (group, unit, unit whose score it takes)
        offset = 0
        for j, a in enumerate(acts):
            for g, rows in enumerate(groups):
                flat = a[int(rows[0])].flatten(1)
                const = (flat.amax(dim=1) == flat.amin(dim=1)).cpu()
                if const.any():
                    constant.append((j, g, torch.nonzero(const).view(-1)))
                own = []
                for c, same in shared.match(j, g, flat, const, offset):
                    if same is None:
                        own.append(c)
                    else:
                        aliases.append((g, offset + c, same))
                segments.append(_Segment(j, g, torch.tensor(own, dtype=torch.long), offset))
                offset += a.shape[1]
        ctx.extra[f"{self.name}_shared_masks"] = ctx.extra.get(f"{self.name}_shared_masks", 0) + len(aliases)
        fw = _Forwards(self, ctx, offset)
        report = _job_progress(jobs, segments, progress)
        size = tuple(x.shape[-2:])
        done = 0
        with eval_mode(model), torch.inference_mode():
            if constant:
                # Every constant channel masks the input to zero: one forward serves them all.
                zero_logits = fw.logits(torch.zeros_like(x[:1]))
                for j, g, ch in constant:
                    seg = segments[j * len(groups) + g]
                    units = seg.offset + ch.to(x.device)
                    for m in groups[g].tolist():
                        fw.scores[m, units] = fw.score(zero_logits, fw.targets[m].view(1)).float()
            for batch in _batches(segments, max(1, int(ctx.batch_size))):
                inputs, units, owner = [], [], []
                for piece in batch:
                    seg = piece.segment
                    rep = int(groups[seg.group][0])
                    ch = piece.channels.to(x.device)
                    m = self.masks(acts[seg.job][rep, ch], size).to(x.dtype)
                    inputs.append(x[rep][None] * m[:, None])
                    units.append(seg.offset + ch)
                    owner.append(torch.full((ch.numel(),), seg.group, dtype=torch.long))
                logits = fw.logits(torch.cat(inputs))
                fw.record(logits, torch.cat(units), torch.cat(owner))
                done += sum(p.channels.numel() for p in batch)
                report(done)
        for g, unit, same in aliases:
            for m in groups[g].tolist():
                fw.scores[m, unit] = fw.scores[m, same]
        out = []
        for j, (job, a) in enumerate(zip(jobs, acts)):
            c = a.shape[1]
            rows = []
            for g, members in enumerate(groups):
                start = segments[j * len(groups) + g].offset
                for m in members.tolist():
                    rows.append((m, fw.scores[m, start:start + c]))
            scores = torch.stack([s for _, s in sorted(rows, key=lambda t: t[0])])
            ctx.layer_name, ctx.record = job.record.name, job.record
            out.append(weighted_map(torch.softmax(scores, dim=1), a, ctx))
        report(done)
        return out


class SameMaps:
    """Finds channels whose min-max scaled map equals an earlier channel's (same image and resolution).

    Candidates are found by a seeded random projection of the scaled map, rounded (a hash), and
    confirmed by the maximum absolute difference; a near-tie at a rounding edge only costs a forward.
    With ``recent`` > 0 each channel is also compared directly (max abs difference, no hash) with
    the same channel of the last ``recent`` layers of the same shape (C, h, w): a BatchNorm after its
    convolution is found whatever the rounding. With ``same_channel`` only those direct matches count
    (a channel's masked copies carry draws of their own per channel index, as SS-CAM's noise does).
    A match always names the unit that owns the forward (never a unit that itself took another's).
    """

    def __init__(self, acts: Sequence[torch.Tensor], groups: Sequence[torch.Tensor], tolerance: float | None,
                 *, same_channel: bool = False, recent: int = 0) -> None:
        self.acts, self.groups, self.tol = acts, groups, tolerance or 0.0
        self.same_channel, self.recent = same_channel, int(recent)
        self.index: dict[tuple[int, ...], tuple[int, int, int]] = {}
        self.proj: dict[int, torch.Tensor] = {}
        self.root: dict[int, int] = {}  # unit -> the unit whose score it takes
        self.past: dict[tuple[int, ...], list[tuple[torch.Tensor, int]]] = {}  # (group, C, h, w) -> (scaled, offset)

    @staticmethod
    def scaled(flat: torch.Tensor) -> torch.Tensor:
        """Each row of ``flat`` (..., N) min-max scaled to [0, 1] (a constant row becomes zeros)."""
        lo = flat.amin(dim=-1, keepdim=True)
        span = flat.amax(dim=-1, keepdim=True) - lo
        return (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))

    def direct(self, group: int, flat_shape: tuple[int, int], hw: tuple[int, int], scaled: torch.Tensor,
               live: list[int], offset: int) -> dict[int, int]:
        """{channel: owning unit} for live channels equal to the same channel of a recent same-shape layer."""
        if self.recent <= 0:
            return {}
        past = self.past.setdefault((group, flat_shape[0], *hw), [])
        found: dict[int, int] = {}
        for other, off2 in reversed(past):
            close = ((scaled - other).abs().amax(dim=1) <= self.tol).tolist()
            for c in live:
                if c not in found and close[c]:
                    found[c] = self.root.get(off2 + c, off2 + c)
        past.append((scaled, offset))
        del past[:-self.recent]
        return found

    def match(self, job: int, group: int, flat: torch.Tensor, const: torch.Tensor,
              offset: int) -> Iterator[tuple[int, int | None]]:
        """(channel, unit id of an earlier channel with the same map, or None) for each non-constant channel."""
        live = torch.nonzero(~const).view(-1).tolist()
        if self.tol <= 0 or not live:
            yield from ((c, None) for c in live)
            return
        hw = flat.shape[1]
        scaled = self.scaled(flat.float())
        h, w = self.acts[job].shape[-2:]
        found = self.direct(group, tuple(flat.shape), (int(h), int(w)), scaled, live, offset)
        if self.same_channel:
            for c in live:
                if c in found:
                    self.root[offset + c] = found[c]
                yield c, found.get(c)
            return
        if hw not in self.proj:
            gen = torch.Generator().manual_seed(hw)
            self.proj[hw] = (torch.randn(hw, 2, generator=gen) / hw ** 0.5).to(flat.device)
        keys = torch.round(scaled @ self.proj[hw] * 1000).long().tolist()
        rep = int(self.groups[group][0])
        for c in live:
            if c in found:
                self.root[offset + c] = found[c]
                yield c, found[c]
                continue
            key = (group, h, w, *keys[c])
            hit = self.index.get(key)
            if hit is not None:
                j2, c2, unit2 = hit
                other = self.scaled(self.acts[j2][rep, c2].flatten().float())
                if float((scaled[c] - other).abs().max()) <= self.tol:
                    self.root[offset + c] = unit2
                    yield c, unit2
                    continue
            else:
                self.index[key] = (job, c, offset + c)
            yield c, None


def _channel_axis(layout: str) -> int:
    """Where the channels are in a layer's own output: 1 for NCHW, last for channels-last layouts."""
    return 1 if layout == "NCHW" else -1


def _replace_first(output: object, tensor: torch.Tensor) -> object:
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    if isinstance(output, list):
        return [tensor, *output[1:]]
    raise TypeError(f"cannot replace a layer output of type {type(output).__name__}")


@register_method
class AblationCAM(CamMethod):
    """Ablation-CAM (Desai & Ramaswamy 2020): channel weights from the score drop when a channel is removed.

    ``alpha_k = (S - S_k) / S``, where S is the target's score and S_k the score with channel k of
    the layer ablated; the map is ``sum_k alpha_k A_k``. As in pytorch-grad-cam, a channel is ablated
    to 0 when the layer's smallest activation (for that image) is 0 (after a ReLU), otherwise to that
    minimum minus 1e7. pytorch-grad-cam lowers that value by another 1e7 for each earlier copy in its
    batch of 32; here every copy gets the same value, which equals pytorch-grad-cam with
    ``batch_size=1``. The layer's output is replaced through a forward hook on its module (the k-th
    call, for a module called k times), so one batch can ablate channels of many layers at once.
    Cost: one forward per channel of every layer, batched ``ctx.batch_size`` at a time across layers.

    Paper: S. Desai, H. G. Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization", WACV 2020, pp. 972-980,
    https://ieeexplore.ieee.org/abstract/document/9093360/
    """

    name = "ablationcam"
    uses_gradients = False
    needs_model = True

    def ablation_value(self, native: torch.Tensor) -> float:
        """The value an ablated channel takes, from one image's activation (any layout)."""
        low = float(torch.nan_to_num(native).min())
        return 0.0 if low == 0 else low - ABLATION_OFFSET

    def cam_batch(self, jobs: Sequence[LayerJob], ctx: MethodContext,
                  progress: Progress | None = None) -> list[torch.Tensor]:
        """The raw maps (B, h, w) of every layer in ``jobs``, from batched forwards with channels ablated.

        Args:
            jobs: the layers to compute; each needs ``job.native``, the layer's output in its own layout.
            ctx: must carry ``model``, ``input_tensor`` (B, C, H, W) and ``targets`` (B,); ``ctx.logits``,
                when set, saves the unablated forward.
            progress: called as ``progress(layers done, layers)``.

        Returns:
            One (B, h, w) map per job, in order.

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets, a job has no ``native``
                output, or the model has no module of that name.
            RuntimeError: If an ablated layer did not run in the ablation forward (the model's forward
                differs from the traced one).
        """
        model, x, targets = _need_model(self, ctx)
        groups = image_groups(ctx, x.shape[0])
        modules = dict(model.named_modules())
        segments: list[_Segment] = []
        values: dict[tuple[int, int], float] = {}
        offset = 0
        for j, job in enumerate(jobs):
            if job.native is None:
                raise ValueError(f"{self.name} needs the layer's own output (LayerJob.native) for {job.record.name}")
            for g, rows in enumerate(groups):
                c = job.acts.shape[1]
                segments.append(_Segment(j, g, torch.arange(c), offset))
                values[(j, g)] = self.ablation_value(job.native[int(rows[0])])
                offset += c
        fw = _Forwards(self, ctx, offset)
        report = _job_progress(jobs, segments, progress)
        plan: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]] = {}
        calls: dict[str, int] = {}
        applied: set[tuple[str, int]] = set()

        def make_hook(name: str):
            def hook(mod, args, output):
                k = calls[name] = calls.get(name, 0) + 1
                todo = plan.get((name, k))
                if not todo:
                    return None
                new = output if isinstance(output, torch.Tensor) else output[0]
                new = new.clone()
                for rows, chans, vals, axis in todo:
                    view = new.movedim(axis, 1)
                    view[rows, chans] = vals.view(-1, *([1] * (view.ndim - 2))).to(view.dtype)
                applied.add((name, k))
                return _replace_first(output, new)

            return hook

        names = sorted({job.record.module for job in jobs})
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"{self.name}: the model has no module named {missing[0]}")
        if ctx.logits is not None:
            base_logits = ctx.logits
        else:
            with eval_mode(model), torch.inference_mode():
                base_logits = fw.logits(x)
        original = fw.score(base_logits, targets).float()
        handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
        done = 0
        try:
            with eval_mode(model), torch.inference_mode():
                for batch in _batches(segments, max(1, int(ctx.batch_size))):
                    plan.clear()
                    calls.clear()
                    applied.clear()
                    inputs, units, owner = [], [], []
                    row = 0
                    for piece in batch:
                        seg = piece.segment
                        rec = jobs[seg.job].record
                        n = piece.channels.numel()
                        rows = torch.arange(row, row + n, device=x.device)
                        vals = torch.full((n,), values[(seg.job, seg.group)], device=x.device)
                        axis = _channel_axis(rec.layout)
                        plan.setdefault((rec.module, rec.call), []).append(
                            (rows, piece.channels.to(x.device), vals, axis))
                        inputs.append(x[int(groups[seg.group][0])][None].expand(n, *x.shape[1:]))
                        units.append(seg.offset + piece.channels.to(x.device))
                        owner.append(torch.full((n,), seg.group, dtype=torch.long))
                        row += n
                    logits = fw.logits(torch.cat(inputs))
                    if applied != set(plan):
                        lost = sorted(set(plan) - applied)[0]
                        raise RuntimeError(f"{self.name}: layer {lost[0]} (call {lost[1]}) did not run in the "
                                           "ablation pass; the model's forward differs from the traced one")
                    fw.record(logits, torch.cat(units), torch.cat(owner))
                    done += row
                    report(done)
        finally:
            for h in handles:
                h.remove()
        out = []
        for j, job in enumerate(jobs):
            c = job.acts.shape[1]
            weights = torch.zeros((x.shape[0], c), dtype=torch.float32, device=x.device)
            for g, members in enumerate(groups):
                start = segments[j * len(groups) + g].offset
                for m in members.tolist():
                    s = original[m]
                    drop = (s - fw.scores[m, start:start + c]) / s
                    weights[m] = torch.where(s != 0, drop, torch.zeros_like(drop))
            ctx.layer_name, ctx.record = job.record.name, job.record
            out.append(weighted_map(weights, torch.nan_to_num(job.acts), ctx))
        return out


def noise_seed(ctx: MethodContext) -> int:
    """The seed of every layer's random draws: the run's seed (``ctx.generator``), 0 without one.

    Every layer starts from it, as torchcam called layer by layer after ``torch.manual_seed(seed)``
    does: a layer's noise depends on nothing else (not on the other layers selected, nor their
    order, nor its name, nor the other images of the batch: each image's maps are those of its solo
    run), and two layers with as many channels draw the same noise.
    """
    return int(ctx.generator.initial_seed()) % (2 ** 63) if ctx.generator is not None else 0


class SampledScoreCAM(CamMethod):
    """Score-CAM with several masked copies per channel, their scores averaged (SS-CAM, IS-CAM).

    Each channel's map is min-max scaled at layer resolution, ``(A_k - min) / (max - min + 1e-8)``,
    then upsampled to the input size (bilinear, pixel centres aligned) as torchcam does; a subclass
    turns it into ``samples`` masks (:meth:`sample_masks`). The weights are ``softmax_k`` of the mean
    score of the copies ``x * mask`` (torchcam subtracts the unmasked score first: the softmax is the
    same). The copies of every channel, sample and layer go through the model in shared batches of
    ``ctx.batch_size``; rows of the run that show one image share them.

    Shared copies: min-max scaling removes any positive per-channel affine map, so a BatchNorm (eval
    mode, positive gamma) after its convolution has the very scaled maps of its input. A channel
    whose scaled map (at layer resolution, before upsampling) is within ``share_tolerance`` (max abs)
    of an earlier channel's whose copies are the same (:class:`SameMaps`) takes that channel's mean
    score instead of forwards of its own: for IS-CAM any channel of the same resolution, for SS-CAM
    the same channel of a layer with as many channels (every layer draws its noise from the run's
    seed, :func:`noise_seed`, so those copies carry the same noise). IS-CAM's constant channels have
    the zero mask in every copy: one zero-image forward scores all of them. ``share_tolerance = None``
    runs every channel, as torchcam does.
    """

    uses_gradients = False
    needs_model = True
    per_layer = False
    eps = 1e-8
    samples = 1
    #: a channel whose scaled map is within this (max abs) of a channel with the same copies takes
    #: its score (0 or None: every channel runs its own forwards)
    share_tolerance: float | None = 1e-6
    #: whether each copy's mask carries draws of its own per channel (SS-CAM's noise): then only the
    #: same channel of a layer with as many channels has the same copies, and a constant channel's
    #: copies are not the zero image
    channel_noise = False
    #: how many earlier layers of the same shape each layer's channels are compared with directly
    recent = 4

    def upsampled(self, acts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Min-max scaled channel maps (C, h, w) upsampled to ``size``: (C, H, W)."""
        lo = acts.amin(dim=(1, 2), keepdim=True)
        scaled = acts - lo
        scaled = scaled / (scaled.amax(dim=(1, 2), keepdim=True) + self.eps)
        return F.interpolate(scaled[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]

    def sample_masks(self, up: torch.Tensor, sample: int, gen: torch.Generator) -> torch.Tensor:
        """The masks (C, H, W) of copy ``sample`` (0-based) from the upsampled maps ``up`` (C, H, W)."""
        raise NotImplementedError

    def plan(self, acts: Sequence[torch.Tensor], groups: Sequence[torch.Tensor],
             offsets: Sequence[int]) -> tuple[dict[tuple[int, int], torch.Tensor], list[tuple[int, int, int]],
                                              list[tuple[int, torch.Tensor]]]:
        """Which channels run their own copies: ({(job, group): channels}, aliases, zero units).

        ``aliases`` are (group, unit, unit whose mean score it takes); ``zero units`` (group, units)
        are constant channels whose every copy is the zero image (IS-CAM only). Unit id of channel
        ``c`` of job ``j``, group ``g``: ``offsets[j] + g * C + c``.
        """
        same = SameMaps(acts, groups, self.share_tolerance, same_channel=self.channel_noise, recent=self.recent)
        own: dict[tuple[int, int], torch.Tensor] = {}
        aliases: list[tuple[int, int, int]] = []
        zero: list[tuple[int, torch.Tensor]] = []
        for j, a in enumerate(acts):
            c = a.shape[1]
            for g, rows in enumerate(groups):
                flat = a[int(rows[0])].flatten(1)
                base = offsets[j] + g * c
                if self.channel_noise or not self.share_tolerance:
                    const = torch.zeros(c, dtype=torch.bool)
                else:
                    const = (flat.amax(dim=1) == flat.amin(dim=1)).cpu()
                    if const.any():
                        zero.append((g, base + torch.nonzero(const).view(-1)))
                mine = []
                for ch, unit in same.match(j, g, flat, const, base):
                    if unit is None:
                        mine.append(ch)
                    else:
                        aliases.append((g, base + ch, unit))
                own[(j, g)] = torch.tensor(mine, dtype=torch.long)
        return own, aliases, zero

    def cam_batch(self, jobs: Sequence[LayerJob], ctx: MethodContext,
                  progress: Progress | None = None) -> list[torch.Tensor]:
        """The raw maps (B, h, w) of every layer in ``jobs``, from batched forwards of masked copies.

        Args:
            jobs: the layers to compute; ``job.acts`` (B, C, h, w).
            ctx: must carry ``model``, ``input_tensor`` (B, C, H, W) and ``targets`` (B,); its
                ``generator``'s seed seeds every layer's noise (:func:`noise_seed`); counts the
                forwards in ``ctx.forwards`` / ``ctx.forward_rows`` and the channels that ran no copies of
                their own (another channel's scores, or the zero image's) in ``ctx.extra["<name>_shared_masks"]``.
            progress: called as ``progress(layers done, layers)``.

        Returns:
            One (B, h, w) map per job, in order.

        Raises:
            ValueError: If ``ctx`` lacks the model, the input or the targets.
        """
        model, x, _ = _need_model(self, ctx)
        groups = image_groups(ctx, x.shape[0])
        acts = [torch.nan_to_num(job.acts) for job in jobs]
        offsets, total = [], 0
        for a in acts:
            offsets.append(total)
            total += a.shape[1] * len(groups)
        own, aliases, zero = self.plan(acts, groups, offsets)
        key = f"{self.name}_shared_masks"
        ctx.extra[key] = ctx.extra.get(key, 0) + len(aliases) + sum(int(u.numel()) for _, u in zero)
        fw = _Forwards(self, ctx, total)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        limit = max(1, int(ctx.batch_size))
        pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (inputs, units, groups)

        def flush(force: bool) -> None:
            while pending and (force or sum(p[0].shape[0] for p in pending) >= limit):
                inputs = torch.cat([p[0] for p in pending])
                units = torch.cat([p[1] for p in pending])
                owner = torch.cat([p[2] for p in pending])
                pending.clear()
                if inputs.shape[0] > limit:
                    pending.append((inputs[limit:], units[limit:], owner[limit:]))
                    inputs, units, owner = inputs[:limit], units[:limit], owner[:limit]
                logits = fw.logits(inputs)
                for g in owner.unique().tolist():
                    pos = (owner == g).nonzero().view(-1)
                    for m in groups[g].tolist():
                        s = fw.score(logits[pos], fw.targets[m].expand(pos.numel())).float()
                        fw.scores[m].index_add_(0, units[pos.to(units.device)], s / self.samples)
                if not force:
                    return

        with eval_mode(model), torch.inference_mode():
            if zero:
                # Every copy of a constant channel is the zero image: one forward scores them all.
                zero_logits = fw.logits(torch.zeros_like(x[:1]))
                for g, units in zero:
                    for m in groups[g].tolist():
                        fw.scores[m, units.to(x.device)] = fw.score(zero_logits, fw.targets[m].view(1)).float()
            for j, a in enumerate(acts):
                c = a.shape[1]
                for g, rows in enumerate(groups):
                    ch = own[(j, g)].to(x.device)
                    if ch.numel() == 0:
                        continue
                    rep = int(rows[0])
                    up = self.upsampled(a[rep], size).to(x.dtype)
                    gen = torch.Generator(device=x.device).manual_seed(noise_seed(ctx))
                    units = offsets[j] + g * c + ch
                    owner = torch.full((ch.numel(),), g, dtype=torch.long)
                    for s in range(self.samples):
                        masked = self.sample_masks(up, s, gen)[ch][:, None] * x[rep][None]
                        for start in range(0, ch.numel(), limit):
                            stop = min(ch.numel(), start + limit)
                            pending.append((masked[start:stop], units[start:stop], owner[start:stop]))
                            flush(False)
                if progress is not None:
                    progress(j + 1, len(jobs))
            flush(True)
        for g, unit, same in aliases:
            for m in groups[g].tolist():
                fw.scores[m, unit] = fw.scores[m, same]
        out = []
        for j, (job, a) in enumerate(zip(jobs, acts)):
            c = a.shape[1]
            scores = torch.empty((x.shape[0], c), dtype=torch.float32, device=x.device)
            for g, members in enumerate(groups):
                start = offsets[j] + g * c
                for m in members.tolist():
                    scores[m] = fw.scores[m, start:start + c]
            ctx.layer_name, ctx.record = job.record.name, job.record
            out.append(weighted_map(torch.softmax(scores, dim=1), a, ctx))
        return out


@register_method
class SSCAM(SampledScoreCAM):
    """SS-CAM (Wang et al. 2020): Score-CAM weights averaged over masks with Gaussian noise added.

    Copy i of channel k is ``x * (M_k + delta_i)``, with ``M_k`` the min-max scaled channel map
    upsampled to the input and ``delta_i ~ N(0, std^2)`` drawn per pixel and channel (``samples`` = 35,
    ``std`` = 2, torchcam's defaults); ``alpha = softmax_k(mean_i S(x * (M_k + delta_i)))`` and the map
    is ``sum_k alpha_k A_k``. Every layer's noise starts from the run's seed (:func:`noise_seed`) and is
    drawn copy after copy as (C, H, W) tensors, as torchcam's ``SSCAM`` draws it from the global
    generator after ``torch.manual_seed(seed)``; a BatchNorm's channel that has its convolution's
    scaled map therefore has its very copies, and takes its scores (see :class:`SampledScoreCAM`).
    Cost: ``samples`` forwards per channel of every layer, batched across channels and layers.

    Paper: H. Wang, R. Naidu, J. Michael, S. S. Kundu, "SS-CAM: Smoothed Score-CAM for Sharper Visual
    Feature Localization", 2020, https://arxiv.org/abs/2006.14255
    """

    name = "sscam"
    samples = 35
    std = 2.0
    channel_noise = True

    def sample_masks(self, up, sample, gen):
        """``up + N(0, std^2)`` noise (C, H, W), drawn with ``gen``."""
        return up + torch.normal(0.0, self.std, up.shape, generator=gen, device=up.device, dtype=up.dtype)


@register_method
class ISCAM(SampledScoreCAM):
    """IS-CAM (Naidu et al. 2020): Score-CAM weights integrated over scaled copies of the masks.

    Copy i (1..N) of channel k is ``x * c_i M_k`` with ``c_i = sum_{j=1..i} j / N`` (torchcam's
    ``ISCAM``; N = ``samples`` = 10), ``alpha = softmax_k(mean_i S(x * c_i M_k))`` and the map is
    ``sum_k alpha_k A_k``. No randomness. Cost: ``samples`` forwards per channel of every layer,
    batched across channels and layers.

    Paper: R. Naidu, A. Ghosh, Y. Maurya, S. R. Nayak K, S. S. Kundu, "IS-CAM: Integrated Score-CAM
    for axiomatic-based explanations", 2020, https://arxiv.org/abs/2010.03023
    """

    name = "iscam"
    samples = 10

    def sample_masks(self, up, sample, gen):
        """``c_i * up`` (C, H, W), ``c_i = sum_{j=1..i} j / N`` for copy i = ``sample + 1``."""
        coeff = sum((j + 1) / self.samples for j in range(sample + 1))
        return coeff * up
