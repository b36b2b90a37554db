"""Activation layouts: how a layer's output tensor maps onto the image plane.

A layout names how to read a (B, ...) activation as (B, C, h, w), the form every CAM method
takes. Gradients go through the same :func:`to_nchw`, so weights and maps stay aligned.

========================  =====================  =============================================
layout                    tensor                 seen in
========================  =====================  =============================================
``NCHW``                  (B, C, H, W)           convolutional networks
``NHWC``                  (B, H, W, C)           ConvNeXt's and Swin's permuted blocks
``NWHC``                  (B, W, H, C)           channels last by ``x.transpose(1, 3)``
``TOKENS:P+HxW``          (B, P + H*W, C)        ViT, DeiT: P class/register tokens first
``WINDOWS:THxTW@S``       (B, TH*TW, S*S, C)     MaxViT block attention: TH x TW tiles of S x S
``WINDOWS_T:THxTW@S``     (B, S*S, TH*TW, C)     MaxViT grid attention (the same, axes swapped)
``NCDHW``                 (B, C, D, H, W)        3-D convolutional networks (volumes)
``non_spatial``           anything else          pooling, flatten, Linear, the classifier
========================  =====================  =============================================

A volume (``NCDHW``) is read by :func:`to_nchw` as (B, C, D, H*W): every method camanim runs on
volumes makes its map position by position or from sums and means over all positions, so the
flattened reading gives the 3-D numbers; :func:`volume_size` gives the (D, H, W) to put the map
back in. Only ``*3d`` modules (``Conv3d``, ``BatchNorm3d``, ``MaxPool3d``), the input volume and
the ops that keep its spatial dims place a tensor as ``NCDHW``; a 5-D tensor without such evidence
is ``non_spatial``, never a guess from its shape.

Detection (:class:`LayoutContext`) goes from the surest evidence to the weakest, and what it
cannot place is ``non_spatial``, never a guess:

1. the very tensor was seen before (a container returning its last child's output, an in-place
   op, ``Identity``): its layout;
2. modules that define a layout: ``*2d`` classes (``Conv2d``, ``BatchNorm2d``, ``LayerNorm2d``)
   are NCHW; ``Permute``, ``SwapAxes``, ``WindowPartition``/``WindowDepartition`` turn their
   input's layout into another;
3. the ops that made the tensor from a placed one, tensor methods included, seen during the
   forward by :class:`LayoutEvidence` (:meth:`LayoutContext.follow`): ``x.permute(0, 2, 3, 1)``
   of an NCHW tensor is NHWC, ``x.flatten(2).transpose(1, 2)`` is TOKENS, an elementwise op
   keeps its input's layout;
4. the placed layout of the module's input, when the output's shape fits it (elementwise ops,
   residual blocks, attention and MLPs keep it);
5. without evidence: the layout of the latest layer output of the very shape (of the input, or
   of the output), a channels-last ``LayerNorm``/``Linear`` on a 4-D tensor whose middle dims
   have the input image's aspect (NHWC: it acts on the last dim), or the shape alone: 4-D whose
   last two dims have the input image's aspect is NCHW; 4-D whose middle dims do and whose last
   dim is a channel count of the model's ``LayerNorm``/``Linear`` layers is NHWC; 3-D whose
   length is a token grid seen earlier in the pass (the patch embedding's output) or a square,
   plus at most 16 prefix tokens, is TOKENS. Such a guess stands only where the shape reads
   one way: (B, 16, 16, 16) reads as NCHW and as NHWC, (B, 16, 16) as tokens and as channels
   first, and is then ``non_spatial``, with the reason (:attr:`LayoutContext.reason`, the
   layer's ``flags["layout"]``).

A tensor whose batch dimension differs from the input's (windows folded into the batch) is
``non_spatial``, and so is a map of a single cell.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import InputError

logger = logging.getLogger(__name__)

NCHW = "NCHW"
NHWC = "NHWC"
NWHC = "NWHC"
TOKENS = "TOKENS"
WINDOWS = "WINDOWS"
WINDOWS_T = "WINDOWS_T"
NCDHW = "NCDHW"
NON_SPATIAL = "non_spatial"
KINDS = (NCHW, NHWC, NWHC, TOKENS, WINDOWS, WINDOWS_T, NCDHW, NON_SPATIAL)

#: most class/register/distillation tokens a token sequence may carry before its grid
MAX_PREFIX_TOKENS = 16

_AXES = {NCHW: "NCHW", NHWC: "NHWC", NWHC: "NWHC"}
_TOKENS_RX = re.compile(r"(?:(\d+)\+)?(\d+)x(\d+)")
_WINDOWS_RX = re.compile(r"(\d+)x(\d+)@(\d+)")


@dataclass(frozen=True)
class Layout:
    """A parsed layout: its kind and, for tokens and windows, the geometry.

    Attributes:
        kind: one of :data:`KINDS`.
        prefix: TOKENS: number of tokens before the grid (class, distillation, register tokens).
        grid: TOKENS: the token grid (h, w); WINDOWS: the tiles (rows, columns); None when inferred.
        size: WINDOWS: a tile's side in pixels.
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None
    size: int | None = None

    def __str__(self) -> str:
        if self.kind == TOKENS and self.grid is not None:
            return f"{TOKENS}:{self.prefix}+{self.grid[0]}x{self.grid[1]}"
        if self.kind in (WINDOWS, WINDOWS_T) and self.grid is not None:
            return f"{self.kind}:{self.grid[0]}x{self.grid[1]}@{self.size}"
        return self.kind

    @property
    def spatial(self) -> bool:
        """Whether the layout reads as a map, 2-D or a volume (every kind but non-spatial)."""
        return self.kind != NON_SPATIAL


def parse_layout(text: str | Layout) -> Layout:
    """Parse a layout name such as ``NHWC``, ``TOKENS``, ``TOKENS:1+14x14`` or ``WINDOWS:8x8@7``.

    Raises:
        InputError: the text names no layout.
    """
    if isinstance(text, Layout):
        return text
    return _parse_layout(str(text))


@functools.lru_cache(maxsize=256)
def _parse_layout(raw: str) -> Layout:
    raw = raw.strip()
    kind, _, params = raw.partition(":")
    kind = kind.upper()
    if kind in ("NON_SPATIAL", "NONE"):
        kind = NON_SPATIAL
    hint = ("use NCHW, NHWC, NWHC, NCDHW, TOKENS, TOKENS:P+HxW (P prefix tokens), WINDOWS:THxTW@S, WINDOWS_T:THxTW@S "
            "or non_spatial")
    if kind not in KINDS:
        raise InputError(f"layout '{raw}' is unknown: {hint}")
    if kind in (NCHW, NHWC, NWHC, NCDHW, NON_SPATIAL):
        if params:
            raise InputError(f"layout '{raw}' takes no parameters: {hint}")
        return Layout(kind)
    if kind == TOKENS:
        if not params:
            return Layout(TOKENS)
        m = _TOKENS_RX.fullmatch(params)
        if not m:
            raise InputError(f"layout '{raw}': write the token grid as TOKENS:P+HxW, e.g. TOKENS:1+14x14")
        return Layout(TOKENS, prefix=int(m.group(1) or 0), grid=(int(m.group(2)), int(m.group(3))))
    m = _WINDOWS_RX.fullmatch(params)
    if not m:
        raise InputError(f"layout '{raw}': write windows as {kind}:THxTW@S (tiles, tile side), e.g. {kind}:8x8@7")
    return Layout(kind, grid=(int(m.group(1)), int(m.group(2))), size=int(m.group(3)))


# -- tensor <-> (B, C, h, w) ---------------------------------------------------------------

def _square_tokens(n: int) -> Layout | None:
    """The smallest prefix that leaves a square grid of at least 2x2 tokens."""
    for prefix in range(0, min(MAX_PREFIX_TOKENS, n) + 1):
        side = math.isqrt(n - prefix)
        if side >= 2 and side * side == n - prefix and prefix < side * side:
            return Layout(TOKENS, prefix=prefix, grid=(side, side))
    return None


def fits(layout: Layout, shape: Sequence[int]) -> bool:
    """Whether a tensor of ``shape`` can be read in ``layout`` (a bare TOKENS fits any square grid)."""
    kind = layout.kind
    if kind == NON_SPATIAL:
        return True
    if kind in _AXES:
        return len(shape) == 4
    if kind == NCDHW:
        return len(shape) == 5
    if kind == TOKENS:
        if len(shape) != 3:
            return False
        if layout.grid is None:
            return _square_tokens(shape[1]) is not None
        return shape[1] == layout.prefix + layout.grid[0] * layout.grid[1]
    if len(shape) != 4 or layout.grid is None or layout.size is None:
        return False
    tiles, pixels = layout.grid[0] * layout.grid[1], layout.size * layout.size
    return tuple(shape[1:3]) == ((tiles, pixels) if kind == WINDOWS else (pixels, tiles))


def to_nchw(tensor: torch.Tensor, layout: str | Layout) -> torch.Tensor | None:
    """``tensor`` as (B, C, h, w) for a spatial layout, else None; a volume (NCDHW) as (B, C, D, H*W).

    Raises:
        ValueError: the tensor's shape does not fit the layout.
    """
    if layout == NCHW and tensor.ndim == 4:
        return tensor  # the common case, without parsing
    lay = parse_layout(layout)
    if lay.kind == NON_SPATIAL:
        return None
    if not fits(lay, tensor.shape):
        raise ValueError(f"a tensor of shape {tuple(tensor.shape)} is not in layout {lay}")
    if lay.kind == NCHW:
        return tensor
    if lay.kind == NCDHW:
        return tensor.flatten(3)
    if lay.kind == NHWC:
        return tensor.permute(0, 3, 1, 2).contiguous()
    if lay.kind == NWHC:
        return tensor.permute(0, 3, 2, 1).contiguous()
    b = tensor.shape[0]
    c = tensor.shape[-1]
    if lay.kind == TOKENS:
        if lay.grid is None:
            lay = _square_tokens(tensor.shape[1])  # fits() made sure there is one
        gh, gw = lay.grid
        grid = tensor[:, lay.prefix:, :].reshape(b, gh, gw, c)
        return grid.permute(0, 3, 1, 2).contiguous()
    th, tw = lay.grid
    s = lay.size
    x = tensor if lay.kind == WINDOWS else tensor.transpose(1, 2)
    # (B, tiles, pixels, C) -> (B, C, rows of tiles, tile row, columns of tiles, tile column), as
    # torchvision's WindowDepartition undoes WindowPartition.
    x = x.reshape(b, th, tw, s, s, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, th * s, tw * s).contiguous()


def volume_size(layout: str | Layout, shape: Sequence[int]) -> tuple[int, int, int] | None:
    """The (D, H, W) a tensor of ``shape`` covers in a volume layout (NCDHW), or None for any other."""
    lay = parse_layout(layout)
    if lay.kind == NCDHW and len(shape) == 5:
        return int(shape[2]), int(shape[3]), int(shape[4])
    return None


def spatial_size(layout: Layout, shape: Sequence[int]) -> tuple[int, int] | None:
    """The (h, w) a tensor of ``shape`` covers in a 2-D ``layout``, or None for non-spatial and volumes."""
    if layout.kind == NCHW:
        return int(shape[2]), int(shape[3])
    if layout.kind == NHWC:
        return int(shape[1]), int(shape[2])
    if layout.kind == NWHC:
        return int(shape[2]), int(shape[1])
    if layout.kind == TOKENS and layout.grid is not None:
        return layout.grid
    if layout.kind in (WINDOWS, WINDOWS_T) and layout.grid is not None and layout.size is not None:
        return layout.grid[0] * layout.size, layout.grid[1] * layout.size
    return None


# -- detection --------------------------------------------------------------------------------

def _same_aspect(hw: Sequence[int], ref: Sequence[int]) -> bool:
    """Whether (h, w) can be ``ref`` scaled by one factor: a strided, pooled or upsampled map of it."""
    h, w = int(hw[0]), int(hw[1])
    rh, rw = int(ref[0]), int(ref[1])
    if min(h, w, rh, rw) <= 0:
        return False
    sh, sw = rh / h, rw / w
    if max(sh, sw) / min(sh, sw) <= 1.25:
        return True
    # Small maps round a lot (valid convolutions, odd sizes): allow one cell of slack.
    return abs(h - rh / sw) <= 1 or abs(w - rw / sh) <= 1


def _positive_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


_NCHW = Layout(NCHW)


@functools.lru_cache(maxsize=512)
def _is_plain_2d(module_type: type) -> bool:
    """A module type that :meth:`LayoutContext._by_type` reads as NCHW from its name alone ("...2d")."""
    kind = module_type.__name__
    special = "Permute" in kind or kind in ("SwapAxes", "WindowPartition", "WindowDepartition")
    return not special and "2d" in kind.lower()


class LayoutContext:
    """What layout detection knows about one model and one pass.

    It remembers the layout of every tensor it has placed (weakly, by identity), so a module
    downstream inherits its input's layout, and the token grids seen so far.

    Args:
        batch: the input's batch size; tensors with another leading size are non-spatial.
        image_size: the input's (H, W), for the aspect check on tensors nothing else explains.
        overrides: ``{layer name: layout}``, the user's word over detection (``--layout``).
        channels: channel counts of the model's channels-last layers (LayerNorm, Linear).
        patch_grid: the token grid implied by the input size and a patch embedding's stride.
    """

    def __init__(self, batch: int | None = None, image_size: tuple[int, int] | None = None, *,
                 overrides: Mapping[str, str] | None = None, channels: Sequence[int] = (),
                 patch_grid: tuple[int, int] | None = None) -> None:
        self.batch = batch
        self.image_size = image_size
        self.overrides = {name: parse_layout(text) for name, text in (overrides or {}).items()}
        self.channels = frozenset(int(c) for c in channels)
        self.grids: list[tuple[int, int]] = []
        if patch_grid is not None:
            gh, gw = patch_grid
            self.grids = [(math.ceil(gh / 2**k), math.ceil(gw / 2**k)) for k in range(3, -1, -1)]
        self._seen: dict[int, tuple[weakref.ref, Layout]] = {}
        self._by_shape_seen: dict[tuple[int, ...], Layout] = {}
        # what the ops of the forward made of placed tensors (see follow): tensor id -> layout, and
        # channels-first flat maps (B, C, h*w) -> their grid
        self._ops: dict[int, tuple[weakref.ref, Layout]] = {}
        self._flat: dict[int, tuple[weakref.ref, tuple[int, int]]] = {}
        # 4-D maps whose axes a permute put in an order no layout reads (NHCW): tensor id -> that order
        self._scrambled: dict[int, tuple[weakref.ref, str]] = {}
        # what ops made of placed tensors that no rule reads (attention's q @ k^T, a window partition):
        # tensor id -> the first op that lost the layout; a shape guess never stands for these
        self._derived: dict[int, tuple[weakref.ref, str]] = {}
        # layer outputs made non_spatial with a reason: tensor id -> the reason
        self._why: dict[int, tuple[weakref.ref, str]] = {}
        #: why the latest :meth:`detect` made a spatially shaped output non_spatial ('' when it did not)
        self.reason = ""
        #: the input is a volume (B, C, D, H, W): a 4-D tensor is no image here, its shape says nothing
        self.volume_input = False

    @classmethod
    def for_model(cls, model: nn.Module, input_tensor: torch.Tensor,
                  overrides: Mapping[str, str] | None = None, *,
                  named: Sequence[tuple[str, nn.Module]] | None = None) -> LayoutContext:
        """A context for one pass of ``model`` on ``input_tensor`` (B, C, H, W).

        ``named`` is ``list(model.named_modules())`` when the caller has walked the model already.

        Raises:
            InputError: an override names no layer of the model, or no layout.
        """
        named = list(model.named_modules()) if named is None else named
        names = {n for n, _ in named if n}
        for name in overrides or {}:
            if name.split("#")[0] not in names:
                raise InputError(f"--layout names '{name}', which is no layer of this model: "
                                 "see 'camanim layers' for the names")
        channels: set[int] = set()
        patch_grid = None
        for _, mod in named:
            if isinstance(mod, nn.LayerNorm) and not _is_2d(mod) and len(mod.normalized_shape) == 1:
                channels.add(int(mod.normalized_shape[0]))
            elif isinstance(mod, nn.Linear):
                channels.update((mod.in_features, mod.out_features))
            elif (patch_grid is None and isinstance(mod, nn.Conv2d) and mod.kernel_size == mod.stride
                  and min(mod.kernel_size) > 1 and input_tensor.ndim == 4):
                patch_grid = (input_tensor.shape[-2] // mod.stride[0], input_tensor.shape[-1] // mod.stride[1])
        image = tuple(input_tensor.shape[-2:]) if input_tensor.ndim == 4 else None
        ctx = cls(int(input_tensor.shape[0]), image, overrides=overrides, channels=sorted(channels),
                  patch_grid=patch_grid)
        if input_tensor.ndim == 4:
            ctx.remember(input_tensor, NCHW)
        elif input_tensor.ndim == 5:
            ctx.remember(input_tensor, NCDHW)
            ctx.volume_input = True
        return ctx

    def remember(self, tensor: torch.Tensor, layout: str | Layout) -> None:
        """Note ``tensor``'s layout, so modules that receive or return it can use it."""
        lay = layout if isinstance(layout, Layout) else parse_layout(layout)
        self._seen[id(tensor)] = (weakref.ref(tensor), lay)
        size = spatial_size(lay, tensor.shape)
        if size is not None and size[0] * size[1] > 1:
            self._by_shape_seen[tuple(tensor.shape)] = lay
            if not self.grids or self.grids[-1] != size:
                if size in self.grids:
                    self.grids.remove(size)
                self.grids.append(size)

    def known(self, tensor: object) -> Layout | None:
        """The layout noted for this very tensor object (a layer's output, or what ops made of one), if any."""
        return self._module_output(tensor) or _lookup(self._ops, tensor)

    def _module_output(self, tensor: object) -> Layout | None:
        return _lookup(self._seen, tensor)

    # -- evidence from the ops of the forward ---------------------------------------------

    def follow(self, func: object, args: Sequence[object], kwargs: Mapping[str, object], out: object) -> None:
        """Note the layout of what ``func`` made of a placed tensor (run by :class:`LayoutEvidence`).

        Evidence only, never a guess: permutes and transposes move the axes (NCHW <-> NHWC; a
        channels-first map flattened and transposed is TOKENS, tokens reshaped to a grid NHWC);
        views and reshapes keep a layout only where the shape says exactly how; any other op keeps
        its input's layout where its output keeps the placed dims (elementwise ops, norms, Linear on
        channels-last, channel slices and concatenations, ``*2d`` functions on NCHW). Anything else
        is left unplaced.
        """
        if isinstance(out, torch.Tensor):
            outs: Sequence[object] = (out,)
        elif isinstance(out, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in out):
            outs = out
        else:
            return  # no tensor made (a size, a count, a flag): nothing to place
        name = getattr(func, "__name__", "")
        tensors = _tensors(args)
        found = self._source(name, args, tensors)
        if found is None:
            if self._scrambled:
                self._follow_scrambled(name, args, kwargs, out, tensors)
            if self._derived:
                self._follow_derived(name, tensors, outs)
            return
        t, lay, flat = found
        others: list[torch.Tensor] | None = None
        for o in outs:
            if not isinstance(o, torch.Tensor) or o is t:
                continue
            if self.batch is not None and (o.ndim == 0 or o.shape[0] != self.batch):
                self._lost(o, name, lay)
                continue
            if flat is not None:
                self._from_flat(name, args, t, o, flat)
                continue
            assert lay is not None
            new = self._after_op(name, func, args, kwargs, t, lay, o)
            if new is not None:
                if others is None:
                    others = [a for a in tensors if a is not t]
                if not any(self._conflicts(a, new, o) for a in others):
                    self._ops[id(o)] = (weakref.ref(o), new)
            elif id(o) not in self._flat and id(o) not in self._scrambled:
                self._lost(o, name, lay)

    def _lost(self, o: torch.Tensor, name: str, lay: Layout | None) -> None:
        """Note that ``o`` was made of a placed tensor by an op no rule reads (never shape-guessed later)."""
        if o.is_floating_point():
            self._derived[id(o)] = (weakref.ref(o), f"'{name}' of a {lay or 'flat channels-first'} tensor")

    def _follow_derived(self, name: str, tensors: Sequence[torch.Tensor], outs: Sequence[object]) -> None:
        """What an op makes of a derived tensor is derived too, unless a rule placed it."""
        how = next((h for t in tensors if (h := _lookup(self._derived, t)) is not None), None)
        if how is None:
            return
        for o in outs:
            if (isinstance(o, torch.Tensor) and o.is_floating_point() and self.known(o) is None
                    and _lookup(self._scrambled, o) is None):
                self._derived[id(o)] = (weakref.ref(o), how)

    def _source(self, name: str, args: Sequence[object], tensors: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, Layout | None, tuple[int, int] | None] | None:
        """The placed tensor an op works on: (it, its layout, or its grid if a flat channels-first map).

        ``tensors`` are the call's tensors (:func:`_tensors`); a permute or reshape works on its first argument only.
        """
        candidates = args[:1] if name in _PERMUTES or name in _RESHAPES else tensors
        for t in candidates:
            if not isinstance(t, torch.Tensor):
                continue
            lay = self.known(t)
            if lay is not None and lay.spatial:
                return t, lay, None
            if self._flat:
                flat = _lookup(self._flat, t)
                if flat is not None:
                    return t, None, flat
        return None

    def _conflicts(self, other: object, lay: Layout, out: torch.Tensor) -> bool:
        """An operand of the output's very shape that was placed otherwise (NCHW + NHWC when C = H = W)."""
        if not isinstance(other, torch.Tensor) or other.shape != out.shape:
            return False
        theirs = self.known(other)
        return theirs is not None and theirs.spatial and theirs != lay

    def _after_op(self, name: str, func: object, args: Sequence[object], kwargs: Mapping[str, object],
                  t: torch.Tensor, lay: Layout, o: torch.Tensor) -> Layout | None:
        ts, os_ = tuple(t.shape), tuple(o.shape)
        if lay.kind == NCDHW:
            return self._after_volume_op(name, args, kwargs, t, o)
        if name in _PERMUTES:
            dims = _permutation(name, args, kwargs, t.ndim)
            if dims is None:
                return None
            if lay.kind in _AXES and t.ndim == 4:
                axes = "".join(_AXES[lay.kind][d] for d in dims)
                if axes not in _AXES:
                    self._scrambled[id(o)] = (weakref.ref(o), axes)
                    return None
                return Layout(axes)
            if lay.kind == TOKENS and lay.prefix == 0 and lay.grid is not None and dims == [0, 2, 1]:
                self._flat[id(o)] = (weakref.ref(o), lay.grid)
            return None
        if name in _RESHAPES:
            if os_ == ts:
                return lay
            if lay.kind == NCHW and os_ == (ts[0], ts[1], ts[2] * ts[3]):
                self._flat[id(o)] = (weakref.ref(o), (ts[2], ts[3]))
                return None
            if lay.kind == NHWC and os_ == (ts[0], ts[1] * ts[2], ts[3]):
                return Layout(TOKENS, prefix=0, grid=(ts[1], ts[2]))
            if lay.kind == TOKENS and lay.prefix == 0 and lay.grid is not None and os_ == (ts[0], *lay.grid, ts[2]):
                return Layout(NHWC)
            return None
        if name in _MOVES_CONTENT:
            return None
        if os_ == ts:
            return lay
        if name in ("cat", "concat", "concatenate") and lay.kind == TOKENS and lay.grid is not None:
            # tokens put after class/register tokens: the grid stays last
            parts = args[0] if args and isinstance(args[0], (list, tuple)) else ()
            dim = _positive_dim(int(args[1] if len(args) > 1 else kwargs.get("dim", 0)), 3)
            if parts and parts[-1] is t and dim == 1 and len(os_) == 3 and os_[2] == ts[2]:
                return Layout(TOKENS, prefix=lay.prefix + os_[1] - ts[1], grid=lay.grid)
            return None
        if lay.kind == NCHW and len(os_) == 4 and (os_[2:] == ts[2:] or _is_2d_function(name)):
            return lay
        if lay.kind in (NHWC, NWHC) and len(os_) == 4 and os_[1:3] == ts[1:3]:
            return lay
        if lay.kind == TOKENS and len(os_) == 3 and os_[1] == ts[1]:
            return lay
        return None

    def _after_volume_op(self, name: str, args: Sequence[object], kwargs: Mapping[str, object],
                         t: torch.Tensor, o: torch.Tensor) -> Layout | None:
        """What an op makes of a volume (NCDHW): the same layout while the output keeps the spatial
        dims (elementwise ops, norms, channel concatenations) or a ``*3d`` function made it; a
        permute to another axes order is followed as unreadable (never read from its shape)."""
        ts, os_ = tuple(t.shape), tuple(o.shape)
        if name in _PERMUTES:
            dims = _permutation(name, args, kwargs, t.ndim)
            if dims is not None and t.ndim == 5:
                axes = "".join(NCDHW[d] for d in dims)
                if axes == NCDHW:
                    return Layout(NCDHW)
                self._scrambled[id(o)] = (weakref.ref(o), axes)
            return None
        if name in _RESHAPES:
            return Layout(NCDHW) if os_ == ts else None
        if name in _MOVES_CONTENT:
            return None
        if len(os_) == 5 and (os_[2:] == ts[2:] or _is_3d_function(name)):
            return Layout(NCDHW)
        return None

    def _follow_scrambled(self, name: str, args: Sequence[object], kwargs: Mapping[str, object],
                          out: object, tensors: Sequence[torch.Tensor]) -> None:
        """What an op makes of a map in an axes order no layout reads: a permute may put it back in
        order; an op whose output keeps four dims keeps it unreadable (never a guess from its shape)."""
        candidates = args[:1] if name in _PERMUTES or name in _RESHAPES else tensors
        for t in candidates:
            axes = _lookup(self._scrambled, t) if isinstance(t, torch.Tensor) else None
            if axes is None:
                continue
            for o in out if isinstance(out, (list, tuple)) else (out,):
                if not isinstance(o, torch.Tensor) or o is t or o.ndim != len(axes):
                    continue
                if name in _PERMUTES:
                    dims = _permutation(name, args, kwargs, o.ndim)
                    if dims is None:
                        continue
                    new = "".join(axes[d] for d in dims)
                    if new in _AXES or new == NCDHW:
                        self._ops[id(o)] = (weakref.ref(o), Layout(new))
                    else:
                        self._scrambled[id(o)] = (weakref.ref(o), new)
                elif name not in _RESHAPES or o.shape == t.shape:
                    self._scrambled[id(o)] = (weakref.ref(o), axes)
            return

    def _from_flat(self, name: str, args: Sequence[object], t: torch.Tensor, o: torch.Tensor,
                   grid: tuple[int, int]) -> None:
        ts, os_ = tuple(t.shape), tuple(o.shape)
        if name in _PERMUTES and _permutation(name, args, {}, t.ndim) == [0, 2, 1]:
            self._ops[id(o)] = (weakref.ref(o), Layout(TOKENS, prefix=0, grid=grid))
        elif name in _RESHAPES and os_ == (ts[0], ts[1], *grid):
            self._ops[id(o)] = (weakref.ref(o), Layout(NCHW))
        elif name not in _PERMUTES and name not in _RESHAPES and name not in _MOVES_CONTENT and os_ == ts:
            self._flat[id(o)] = (weakref.ref(o), grid)

    def known_shape(self, shape: Sequence[int]) -> Layout | None:
        """The layout of the latest spatial layer output of exactly this shape, if any."""
        return self._by_shape_seen.get(tuple(shape))

    def detect(self, module: nn.Module, tensor: torch.Tensor | None, inputs: Sequence[object] = (),
               name: str | None = None) -> str:
        """The layout of ``module``'s output ``tensor``, given the module's ``inputs``; remembered.

        Raises:
            InputError: an override for ``name`` does not fit the tensor's shape.
        """
        self.reason = ""
        if tensor is None or not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            return NON_SPATIAL
        if not self.overrides and _is_plain_2d(type(module)):
            # the common case, quickly: a "...2d" module's 4-D output that no earlier step placed otherwise
            shape = tensor.shape
            if (len(shape) == 4 and (self.batch is None or shape[0] == self.batch) and shape[2] * shape[3] > 1
                    and self._module_output(tensor) in (None, _NCHW)):
                self.remember(tensor, _NCHW)
                return NCHW
        override = self._override(name)
        if override is not None:
            lay = self._resolve_override(override, tensor, name)
        else:
            lay = self._detect(module, tensor, inputs, name)
            if not lay.spatial and not self.reason and tensor.ndim >= 3:
                # made from a layer that is not read as an image, for that layer's reason
                self.reason = next((w for x in _tensors(inputs) if (w := _lookup(self._why, x)) is not None), "")
        if self.reason:
            self._why[id(tensor)] = (weakref.ref(tensor), self.reason)
        self.remember(tensor, lay)
        return str(lay)

    # -- the steps ----------------------------------------------------------------------

    def _override(self, name: str | None) -> Layout | None:
        if name is None or not self.overrides:
            return None
        return self.overrides.get(name, self.overrides.get(name.split("#")[0]))

    def _resolve_override(self, lay: Layout, tensor: torch.Tensor, name: str | None) -> Layout:
        shape = tuple(tensor.shape)
        if lay.kind == TOKENS and lay.grid is None and len(shape) == 3:
            lay = self._tokens(shape) or lay
        if not fits(lay, shape) or (lay.spatial and self.batch is not None and shape[0] != self.batch):
            raise InputError(f"--layout {name}={lay} does not fit that layer's output shape {list(shape)}: "
                             "see 'camanim layers' for the shapes")
        return lay

    def _detect(self, module: nn.Module, tensor: torch.Tensor, inputs: Sequence[object],
                name: str | None = None) -> Layout:
        shape = tuple(tensor.shape)
        if self.batch is not None and shape[0] != self.batch:
            return Layout(NON_SPATIAL)
        # evidence, surest first: this very tensor, the module's kind, the ops that made the
        # tensor, its input's placed layout
        lay = self._module_output(tensor) or self._by_type(module, shape, inputs) or _lookup(self._ops, tensor)
        scrambled = _lookup(self._scrambled, tensor) if lay is None else None
        if scrambled is not None:
            self.reason = (f"its output is a map whose axes a permute of the forward put in the order {scrambled} "
                           f"(N batch, C channels, {'D, H and W the volume' if len(scrambled) == 5 else 'H and W the image'}'s), "
                           "which no layout reads")
            return Layout(NON_SPATIAL)
        lay = lay or self._inherited(shape, inputs)
        if lay is None:
            # no evidence on the tensor: a layout seen on the same shape, the module's convention
            # (a LayerNorm/Linear on the last dim of a 4-D tensor: channels last), the shape alone;
            # a guess from the shape only where the shape cannot be read another way
            guess = self._inherited(shape, inputs, by_shape=True) or self.known_shape(shape)
            convention = self._channels_last_type(module, shape)
            # (a module's documented convention still stands: Swin's patch merging slices and
            # concatenates channels-last maps, then LayerNorm reads them channels-last)
            if guess is None and convention is None:
                guess = self._by_shape(shape)
                derived = _lookup(self._derived, tensor) if guess.spatial else None
                if derived is not None:
                    self.reason = (f"its output {list(shape)} was made from the image's layers by ops no layout "
                                   f"rule reads (first {derived}), and no layer had that shape: it is not read as "
                                   f"an image; give --layout {name or 'LAYER'}=LAYOUT if it is one")
                    return Layout(NON_SPATIAL)
            other = self._other_reading(shape, guess) if guess is not None else None
            lay = convention if convention is not None and (guess is None or other is not None) else guess
            if lay is guess and other is not None:
                self.reason = (f"its output {list(shape)} reads as {guess} and as {other}, and no op or module of "
                               f"the forward says which: give --layout {name or 'LAYER'}=LAYOUT if you know it")
                return Layout(NON_SPATIAL)
        if not fits(lay, shape):
            return Layout(NON_SPATIAL)
        if lay.kind == NCDHW:
            return lay if math.prod(shape[2:]) > 1 else Layout(NON_SPATIAL)
        size = spatial_size(lay, shape)
        if size is None or size[0] * size[1] <= 1:
            return Layout(NON_SPATIAL)
        return lay

    def _other_reading(self, shape: tuple[int, ...], lay: Layout) -> str | None:
        """Another way a tensor of ``shape`` reads as well as ``lay`` (a guess from the shape), or None.

        (B, a, b, c) reads as NCHW when (b, c) has the image's aspect, and as NHWC when (a, b) has it
        and c is a channel count of the model's channels-last layers (or a = c); (B, n, c) reads as
        tokens and as channels first, (B, C, tokens), when c is a token count and n a channel count.
        """
        if not lay.spatial:
            return None
        if len(shape) == 4 and lay.kind in _AXES:
            nchw = self.image_size is None or _same_aspect(shape[2:4], self.image_size)
            nhwc = (self.image_size is None or _same_aspect(shape[1:3], self.image_size)) and (
                shape[3] in self.channels or shape[1] == shape[3])
            if nchw and nhwc:
                return NHWC if lay.kind == NCHW else NCHW
            return None
        if len(shape) == 3 and lay.kind == TOKENS:
            swapped = self._tokens((shape[0], shape[2], shape[1]))
            if swapped is not None and (shape[1] in self.channels or shape[1] == shape[2]):
                return "channels first (B, C, tokens)"
        return None

    def _input(self, inputs: Sequence[object], by_shape: bool = True) -> tuple[torch.Tensor | None, Layout | None]:
        """The module's first tensor input and its layout: placed, or (``by_shape``) that of a layer
        output of its very shape."""
        for x in inputs:
            if isinstance(x, torch.Tensor):
                return x, self.known(x) or (self.known_shape(x.shape) if by_shape else None)
        return None, None

    def _by_type(self, module: nn.Module, shape: tuple[int, ...], inputs: Sequence[object]) -> Layout | None:
        kind = type(module).__name__
        x, lay_in = self._input(inputs)
        if "Permute" in kind and isinstance(getattr(module, "dims", None), (list, tuple)) and len(shape) == 4:
            dims = [_positive_dim(int(d), 4) for d in module.dims]
            starts = [lay_in.kind] if lay_in is not None and lay_in.kind in _AXES else list(_AXES)
            for start in starts:
                axes = "".join(_AXES[start][d] for d in dims)
                if axes in _AXES:
                    return Layout(axes)
            return Layout(NON_SPATIAL)
        if kind == "SwapAxes" and lay_in is not None and lay_in.kind in (WINDOWS, WINDOWS_T) and len(shape) == 4:
            pair = {_positive_dim(int(module.a), 4), _positive_dim(int(module.b), 4)}
            if pair == {1, 2}:
                return Layout(WINDOWS_T if lay_in.kind == WINDOWS else WINDOWS, grid=lay_in.grid, size=lay_in.size)
            return Layout(NON_SPATIAL)
        if kind == "WindowPartition" and x is not None and x.ndim == 4 and len(inputs) > 1:
            p = inputs[1]
            if isinstance(p, int) and p > 0:
                return Layout(WINDOWS, grid=(x.shape[-2] // p, x.shape[-1] // p), size=p)
        if kind == "WindowDepartition" and len(shape) == 4:
            return Layout(NCHW)
        low = kind.lower()
        if "2d" in low and len(shape) == 4:
            return Layout(NCHW)
        if "3d" in low and len(shape) == 5:
            return Layout(NCDHW)
        if "1d" in low:
            return Layout(NON_SPATIAL)
        return None

    def _inherited(self, shape: tuple[int, ...], inputs: Sequence[object], by_shape: bool = False) -> Layout | None:
        x, lay = self._input(inputs, by_shape)
        if x is None or lay is None:
            return None
        xs = tuple(x.shape)
        if lay.kind == NON_SPATIAL:
            return lay if xs == shape else None
        if len(shape) != x.ndim:
            return None
        if lay.kind == NCDHW and _same_volume_aspect(shape[2:5], xs[2:5]):
            return lay
        if lay.kind == NCHW and _same_aspect(shape[2:4], xs[2:4]):
            return lay
        if lay.kind in (NHWC, NWHC) and _same_aspect(shape[1:3], xs[1:3]):
            return lay
        if lay.kind == TOKENS and shape[1] == xs[1]:
            return lay
        if lay.kind in (WINDOWS, WINDOWS_T) and shape[1:3] == xs[1:3]:
            return lay
        return None

    def _channels_last_type(self, module: nn.Module, shape: tuple[int, ...]) -> Layout | None:
        if self.volume_input:
            return None  # a 4-D tensor in a 3-D network is no image: no convention places it
        if len(shape) != 4 or (self.image_size is not None and not _same_aspect(shape[1:3], self.image_size)):
            return None
        if isinstance(module, nn.LayerNorm) and not _is_2d(module) and tuple(module.normalized_shape) == shape[-1:]:
            return Layout(NHWC)
        if isinstance(module, nn.Linear) and module.out_features == shape[-1]:
            return Layout(NHWC)
        return None

    def _by_shape(self, shape: tuple[int, ...]) -> Layout:
        if self.volume_input:
            return Layout(NON_SPATIAL)  # in a 3-D network no shape is read as a layout without evidence
        if len(shape) == 4:
            if self.image_size is None or _same_aspect(shape[2:4], self.image_size):
                return Layout(NCHW)
            if _same_aspect(shape[1:3], self.image_size) and shape[3] in self.channels:
                logger.debug("shape %s read as NHWC: %d is a channel count of the model", shape, shape[3])
                return Layout(NHWC)
            return Layout(NON_SPATIAL)
        if len(shape) == 3:
            return self._tokens(shape) or Layout(NON_SPATIAL)
        return Layout(NON_SPATIAL)

    def _tokens(self, shape: tuple[int, ...]) -> Layout | None:
        n = int(shape[1])
        for gh, gw in reversed(self.grids):
            prefix = n - gh * gw
            if 0 <= prefix <= MAX_PREFIX_TOKENS and gh * gw >= 4:
                return Layout(TOKENS, prefix=prefix, grid=(gh, gw))
        return _square_tokens(n)


def _lookup(table: Mapping[int, tuple[weakref.ref, object]], tensor: object):
    entry = table.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        return None
    return entry[1]


def _tensors(args: Sequence[object]) -> list[torch.Tensor]:
    """The tensors among a call's arguments, and in a list argument (``torch.cat``)."""
    found: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, torch.Tensor))
    return found


_PERMUTES = frozenset({"permute", "transpose", "transpose_", "swapaxes", "swapdims", "movedim", "moveaxis"})
_RESHAPES = frozenset({"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "contiguous"})
#: ops that keep a tensor's shape but move its content across positions
_MOVES_CONTENT = frozenset({"roll", "flip", "fliplr", "flipud", "rot90", "t", "sort", "topk", "gather", "index_select",
                            "take", "as_strided", "diagonal", "unfold", "expand", "expand_as", "repeat", "tile",
                            "pixel_shuffle", "pixel_unshuffle", "unsqueeze", "squeeze", "einsum", "tensordot"})


def _permutation(name: str, args: Sequence[object], kwargs: Mapping[str, object], ndim: int) -> list[int] | None:
    """The dims order a permute/transpose/movedim call makes of an ``ndim``-D tensor, or None."""
    try:
        rest = list(args[1:])
        if name == "permute":
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest or kwargs.get("dims")
            return [_positive_dim(int(d), ndim) for d in dims]
        if name in ("movedim", "moveaxis"):
            src, dst = (rest + [kwargs.get("source"), kwargs.get("destination")])[:2]
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            order = [d for d in range(ndim) if d not in {_positive_dim(int(x), ndim) for x in src}]
            for s_, d_ in sorted(zip((_positive_dim(int(x), ndim) for x in src),
                                     (_positive_dim(int(x), ndim) for x in dst)), key=lambda p: p[1]):
                order.insert(d_, s_)
            return order
        a, b = (rest + [kwargs.get("dim0"), kwargs.get("dim1")])[:2]
        a, b = _positive_dim(int(a), ndim), _positive_dim(int(b), ndim)
    except (TypeError, ValueError, IndexError):
        return None
    order = list(range(ndim))
    order[a], order[b] = order[b], order[a]
    return order


def _is_3d_function(name: str) -> bool:
    return "3d" in name or name in ("interpolate", "upsample", "pad", "upsample_trilinear3d", "upsample_nearest3d")


def _same_volume_aspect(dhw: Sequence[int], ref: Sequence[int]) -> bool:
    """Whether (d, h, w) can be ``ref`` scaled by one factor (each pair of axes as :func:`_same_aspect`)."""
    return _same_aspect(dhw[0:2], ref[0:2]) and _same_aspect(dhw[1:3], ref[1:3])


def _is_2d_function(name: str) -> bool:
    return "2d" in name or name in ("interpolate", "upsample", "pad", "upsample_bilinear", "upsample_nearest")


class LayoutEvidence(TorchFunctionMode):
    """During the traced forward: every torch call's output is placed from its input's layout.

    What a tensor method does between two recorded layers (ConvNeXt's ``x.permute(0, 2, 3, 1)``,
    a ViT's ``x.flatten(2).transpose(1, 2)``) is evidence :class:`LayoutContext` could not see
    otherwise; with it, a layer's layout never rests on its shape where an op says more
    (:meth:`LayoutContext.follow`). Thread-local, like every torch-function mode.
    """

    def __init__(self, context: LayoutContext) -> None:
        super().__init__()
        self.context = context

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.context.follow(func, args, kwargs, out)
        return out


def _is_2d(module: nn.Module) -> bool:
    return "2d" in type(module).__name__.lower()


def detect_layout(module: nn.Module, tensor: torch.Tensor | None, context: LayoutContext | None = None,
                  inputs: Sequence[object] = (), name: str | None = None) -> str:
    """The layout of ``module``'s output ``tensor`` (see :class:`LayoutContext` for the rules).

    Without a ``context`` only the module and the tensor's own shape are used.
    """
    return (context or LayoutContext()).detect(module, tensor, inputs, name)
