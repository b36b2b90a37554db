"""Clean tiles against the run's own normalised CAMs, pixel by pixel, and non-spatial stripes."""

from __future__ import annotations

import numpy as np
import torch

from camanim.draw import colormap_lut, normalise
from camanim.figures import cam_tile, overlay, read_run, stripe_tile, tile_image
from camanim.rundir import names, read_cams

PIXELS = [(0, 0), (17, 200), (111, 112), (223, 5), (223, 223)]


def test_a_tile_is_the_runs_normalised_cam_over_its_image_at_known_pixels(figure_runs):
    path = figure_runs["gradcam"]
    run, saved = read_run(path), read_cams(path / names.CAMS)
    image = tile_image(run)
    assert image.shape == (224, 224, 3) and np.array_equal(image, saved.image)  # the display image is the input size
    lut = colormap_lut("jet").astype(np.float64)
    for norm in ("local", "global"):
        normed = normalise(torch.from_numpy(saved.cams), norm).numpy()
        for i in range(6):  # the spatial layers
            tile = cam_tile(run, i, norm)
            peak, low = np.unravel_index(normed[i].argmax(), normed[i].shape), np.unravel_index(
                normed[i].argmin(), normed[i].shape)
            for y, x in [*PIXELS, peak, low]:
                expected = np.rint(0.5 * image[y, x] + 0.5 * lut[int(np.rint(255 * normed[i, y, x]))])
                assert tile[y, x].tolist() == expected.astype(int).tolist(), (norm, i, y, x)
            if norm == "local":  # every local map reaches both ends of the colormap
                assert tile[peak].tolist() == np.rint(0.5 * image[peak] + 0.5 * lut[255]).astype(int).tolist()
                assert tile[low].tolist() == np.rint(0.5 * image[low] + 0.5 * lut[0]).astype(int).tolist()


def test_global_tiles_of_weak_layers_stay_dim():
    image = np.full((4, 4, 3), 100, np.uint8)
    cams = torch.zeros(2, 4, 4)
    cams[0, 0, 0], cams[1, 0, 0] = 1.0, 10.0
    weak = normalise(cams, "global")[0].numpy()
    assert overlay(image, weak, "jet", 0.5)[0, 0].tolist() == np.rint(50 + 0.5 * colormap_lut("jet")[26]).tolist()


def test_a_non_spatial_tile_is_its_stripe_over_the_dimmed_image(figure_runs):
    path = figure_runs["gradcam"]
    run, saved = read_run(path), read_cams(path / names.CAMS)
    assert saved.vectors is not None and saved.vectors[6] is not None and saved.vectors[6].size == 1000
    tile, has_stripe = stripe_tile(run, 6, "local")
    assert has_stripe
    values = np.clip(saved.vectors[6], 0, None)
    lut = colormap_lut("jet")
    # 1000 units max-pooled into 224 columns; the column holding the peak unit is the colormap's top
    cols = [c for c in range(224) if (c * 1000) // 224 <= values.argmax() < ((c + 1) * 1000) // 224]
    assert tile[112, cols[0]].tolist() == lut[255].tolist()
    dim = (saved.image.astype(np.float32) * 0.35 + 20).astype(np.uint8)
    assert tile[10, 10].tolist() == dim[10, 10].tolist()  # outside the band: the dimmed image
    assert not np.array_equal(tile[112], dim[112])


def test_a_run_without_saved_vectors_shows_the_dimmed_image_and_says_so(figure_runs):
    run = read_run(figure_runs["gradcam"])
    run.vectors = None
    tile, has_stripe = stripe_tile(run, 6, "global")
    assert not has_stripe
    assert np.array_equal(tile, (tile_image(run).astype(np.float32) * 0.35 + 20).astype(np.uint8))
