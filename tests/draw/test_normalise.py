"""Normalisation a run of layers at a time (``normalised_view``): the same numbers, bit for bit, as
scaling the whole stack (``normalise``), local and global, with and without a preview size, NaN and
infinities included, without ever holding the whole stack."""

from __future__ import annotations

import pytest
import torch

from camanim.compute import LayerView, LazyCams
from camanim.draw import global_range, normalise, normalised_view


def _raw(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cams = torch.rand(11, 12, 10, generator=g) * torch.logspace(-3, 2, 11)[:, None, None]
    cams[4] = 0.0  # a constant layer: zeros, never NaN
    return cams


def _counting(cams: torch.Tensor, length: int) -> tuple[LayerView, list[tuple[int, int]]]:
    """A view of ``cams`` that reads ``length`` layers at a time and logs every run it makes."""
    made: list[tuple[int, int]] = []

    def rows(a, b):
        made.append((a, b))
        return cams[a:b].clone()

    view = LayerView(len(cams), cams.shape[1:], rows)
    view.chunk_length = lambda budget=0: length  # type: ignore[method-assign]
    return view, made


@pytest.mark.parametrize("kind", ["local", "global"])
@pytest.mark.parametrize("size", [None, (5, 4)])
@pytest.mark.parametrize("poison", [None, float("nan"), float("inf")])
def test_runs_of_layers_scale_as_the_whole_stack_bit_for_bit(kind, size, poison):
    cams = _raw()
    if poison is not None:
        cams[7, 3, 3] = poison  # replaced by a number, as the whole stack's scaling does
    whole = normalise(cams, kind, size=size)
    view, made = _counting(cams, 3)
    scaled = normalised_view(view, kind, size=size)
    assert scaled.shape == whole.shape
    for a, b in [(0, 3), (3, 6), (6, 11), (2, 9), (10, 11)]:
        assert torch.equal(scaled[a:b], whole[a:b]), (a, b)
    assert max(b - a for a, b in made) <= 7  # never the whole stack at once (the largest read asked for 7)
    assert torch.equal(scaled.tensor(), whole) and torch.isfinite(whole).all()
    assert torch.equal(normalised_view(cams, kind, size=size)[2:5], whole[2:5])  # a tensor is read the same way


def test_global_range_is_the_stacks_min_and_max():
    cams = _raw() + 0.5
    view, made = _counting(cams, 4)
    lo, hi = global_range(view)
    assert lo == cams.min() and hi == cams.max() and lo.ndim == hi.ndim == 0
    assert made == [(0, 4), (4, 8), (8, 11)]
    given = normalised_view(view, "global", bounds=(torch.tensor(0.0), torch.tensor(200.0)))
    assert torch.equal(given[0:2], ((cams[0:2] - 0) / 200).clamp(0, 1))  # bounds given: no pass over the CAMs


def test_lazy_cams_are_normalised_without_upsampling_all_layers_at_once():
    g = torch.Generator().manual_seed(3)
    maps = [torch.rand(7, 7, generator=g) * (i + 1) for i in range(20)]
    lazy = LazyCams(maps, (56, 56))
    for kind in ("local", "global"):
        assert torch.equal(normalised_view(lazy, kind)[5:9], normalise(lazy.tensor(), kind)[5:9])


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="normalisation 'median'"):
        normalised_view(_raw(), "median")


@pytest.mark.parametrize("kind", ["local", "global"])
def test_scale_is_the_min_max_formula_bit_for_bit(kind):
    """``scale`` works in place on one new tensor: the very numbers of ``where(span > 0, (x - lo) / span, 0)``
    clipped to [0, 1], constant layers (span 0) included, and the input left as it was."""
    from camanim.draw.normalise import scale

    x = _raw(1)
    x[2] = -3.0  # a negative constant layer: +0.0 after scaling, as the formula's zeros
    before = x.clone()
    flat = x.reshape(len(x), -1)
    if kind == "local":
        lo, hi = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    else:
        lo, hi = x.min(), x.max()
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    want = torch.where(span > 0, (x - lo) / safe, torch.zeros_like(x)).clamp_(0, 1)
    got = scale(x, lo, hi)
    assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())
    assert torch.equal(x, before)
    flat_lo = torch.tensor(2.0)
    assert torch.equal(scale(x, flat_lo, flat_lo), torch.zeros_like(x))  # one constant scale: all zeros
    assert not scale(x, flat_lo, flat_lo).signbit().any()
