"""CAMs kept at layer resolution and upsampled when read (``LazyCams``): every read is bit for bit the
rows of the whole upsampled stack, whatever layers it asks for and in what runs."""

from __future__ import annotations

import pytest
import torch

from camanim.compute import LayerView, LazyCams, upsample
from camanim.compute.maps import upsample_volumes


def _maps(seed: int = 0) -> list[torch.Tensor | None]:
    """Runs of layers at several resolutions, a layer without a map, and two layers sharing one map."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 7)] * 5 + [None] + [(14, 14)] * 4 + [(3, 5), (32, 32), (32, 32)]
    maps = [None if s is None else torch.rand(*s, generator=g) * 10 for s in shapes]
    maps.append(maps[6])  # a same_as layer: the very map of layer 6
    return maps


def _whole(maps: list[torch.Tensor | None], size: tuple[int, ...]) -> torch.Tensor:
    """The whole stack as the engine upsampled it before: all layers in one call, a batch of one row."""
    batched = [None if m is None else m.unsqueeze(0) for m in maps]
    up = upsample_volumes if len(size) == 3 else upsample
    return up(batched, size, batch=1)[:, 0]


def test_every_read_is_the_whole_stacks_rows_bit_for_bit():
    maps = _maps()
    whole = _whole(maps, (32, 48))
    lazy = LazyCams(maps, (32, 48))
    assert lazy.shape == whole.shape == (14, 32, 48) and len(lazy) == 14 and lazy.ndim == 3
    assert torch.equal(lazy.tensor(), whole)
    for i in range(-14, 14):
        assert torch.equal(lazy[i], whole[i]), i
    assert not lazy[5].any()  # the layer without a map: zeros
    for index in (slice(2, 9), slice(None), slice(1, 14, 3), slice(12, 40), [13, 0, 6, 6], torch.tensor([4, 11]),
                  torch.arange(14) % 2 == 0, (3, slice(0, 4), 7)):
        assert torch.equal(lazy[index], whole[index]), index
    for length in (1, 3, 5, 64):  # any runs of layers: the same rows
        parts = [(a, b, part.clone()) for a, b, part in lazy.chunks(length)]
        assert [a for a, _, _ in parts] == list(range(0, 14, length))
        assert torch.equal(torch.cat([p for _, _, p in parts]), whole)


def test_a_volumes_layers_are_the_trilinear_stacks_rows():
    g = torch.Generator().manual_seed(1)
    maps = [torch.rand(2, 3, 4, generator=g), None, torch.rand(4, 6, 8, generator=g), torch.rand(4, 6, 8, generator=g)]
    whole = _whole(maps, (4, 6, 8))
    lazy = LazyCams(maps, (4, 6, 8))
    assert lazy.shape == (4, 4, 6, 8) and torch.equal(lazy.tensor(), whole)
    assert torch.equal(lazy[0], whole[0]) and torch.equal(lazy[1:], whole[1:])


def test_a_view_around_a_whole_stack_slices_it():
    whole = torch.rand(5, 6, 7)
    lazy = LazyCams.whole(whole)
    assert lazy.whole_stack is whole and lazy.stack() is whole and LazyCams.of(lazy) is lazy
    assert torch.equal(lazy[1:4], whole[1:4]) and torch.equal(lazy[[4, 0]], whole[[4, 0]])
    assert LazyCams(_maps(), (8, 8)).whole_stack is None


def test_a_view_pickles_with_its_maps():
    import pickle

    maps = _maps()
    for lazy in (LazyCams(maps, (8, 8)), LazyCams.whole(torch.rand(3, 4, 4))):
        lazy.rows(0, 2)
        back = pickle.loads(pickle.dumps(lazy))
        assert back.shape == lazy.shape and torch.equal(back.tensor(), lazy.tensor())


def test_bad_indices_are_refused():
    lazy = LazyCams(_maps(), (8, 8))
    with pytest.raises(IndexError, match="out of range"):
        lazy[14]
    with pytest.raises(IndexError, match="out of range"):
        lazy[[0, -15]]
    with pytest.raises(IndexError, match="bool mask"):
        lazy[torch.ones(3, dtype=torch.bool)]
    with pytest.raises(ValueError, match="layer maps"):
        LazyCams(None, (8, 8))


def test_runs_are_made_once_and_reads_are_their_own():
    calls = []

    def rows(a, b):
        calls.append((a, b))
        return torch.arange(a, b, dtype=torch.float32)[:, None].repeat(1, 3)

    view = LayerView(10, (3,), rows)
    first = view.rows(0, 4)
    assert view.rows(0, 4) is first and calls == [(0, 4)]  # the last run, kept for the next normalisation
    mine = view[0:4]
    mine += 100  # indexing makes its own tensor: the kept run is untouched
    assert torch.equal(view.rows(0, 4), torch.arange(4.0)[:, None].repeat(1, 3))
    doubled = view.map(lambda x: 2 * x)
    assert torch.equal(doubled[7], torch.full((3,), 14.0)) and doubled.shape == (10, 3)
    assert LayerView(100, (600, 600), rows).chunk_length() == 11  # 16 MiB of 600 x 600 float32 maps
    assert LayerView(100, (7, 7), rows).chunk_length() == 64
