"""Writing a run: SaveOptions checked once; one path per job (the methods grid straight from memory,
``--road`` scored in memory and written once with the run)."""

from __future__ import annotations

import json

import pytest
import torch

import camanim
from camanim import InputError, SaveOptions
from camanim.draw import FrameStyle, count_frames
from camanim.rundir import names


def _nineteen_layers() -> camanim.CamResult:
    """A result of 19 layers (eight conv + ReLU pairs and the head) on a 16 x 16 input."""
    from torch import nn

    torch.manual_seed(0)
    body = [m for _ in range(8) for m in (nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())]
    model = nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    return camanim.animate(model, torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"normalisations": ("locall",)}, "normalisation 'locall' is unknown"),
    ({"formats": ("avi",)}, "video format 'avi' is unknown"),
    ({"fps": 0}, "--fps 0 must be a positive number"),
    ({"fps": float("inf")}, "--fps inf must be a positive number"),
    ({"normalisations": ()}, "no normalisation given"),
    ({"normalisations": ("local", "local")}, "names a normalisation twice"),
    ({"formats": ("mp4", "mp4")}, "names a format twice"),
    ({"formats": ()}, "no video format given"),
    ({"style": FrameStyle(width=8)}, "--frame-width 8: give 16 to 4096"),
    ({"style": FrameStyle(width=5000)}, "--frame-width 5000: give 16 to 4096"),
])
def test_bad_save_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        SaveOptions(**kwargs)


def test_methods_grid_is_written_from_memory_without_reading_runs_back(tiny, tiny_input, tmp_path, monkeypatch):
    import importlib

    compare = importlib.import_module("camanim.report.compare")  # the module, not report's compare()
    monkeypatch.setattr(compare, "load_run", lambda *a, **k: pytest.fail("the grid read a run folder back"))
    out = camanim.animate(tiny, tiny_input, method="gradcam,hirescam")
    written = out.save(tmp_path / "out", normalisations=["local"])
    grid = tmp_path / "out" / names.GRID_VIDEO
    assert written[names.GRID_VIDEO] == grid and count_frames(grid) == len(out[0].layers)
    page = (tmp_path / "out" / names.COMPARE_HTML).read_text()
    assert str(tmp_path / "out" / "gradcam") in page and ".tmp-" not in page  # the runs' own folders
    assert not (tmp_path / "out" / names.COMPARE_VIDEO).exists()


def test_road_in_memory_is_saved_once_with_the_run(tiny, tiny_input, tmp_path, monkeypatch):
    import camanim.results as results

    reports = []
    real = results.write_report
    monkeypatch.setattr(results, "write_report", lambda view: reports.append(view.path) or real(view))
    result = camanim.animate(tiny, tiny_input, layers="conv1,block")
    yb = camanim.ybroad(result, percentiles=(50,), noise=0.0)
    assert result.road is yb
    written = result.save(tmp_path / "out", video=False)
    assert len(reports) == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["ybroad"]["max"]["index"] == yb.ybroad_max.index
    saved = json.loads((tmp_path / "out" / "ybroad.json").read_text())
    assert saved["layers"][0]["ybroad"] == pytest.approx(float(yb.curve_mean[0]))
    assert {"ybroad_csv", "ybroad_json", "ybroad_png"} <= set(written)
    assert 'id="report-data"' in (tmp_path / "out" / "report.html").read_text() and torch.isfinite(yb.curve_mean[0])


@pytest.mark.parametrize("shape", [(60, 1), (1, 60), (3000, 7)])
def test_inputs_of_any_aspect_ratio_save_with_videos_and_report(tmp_path, shape):
    """A 60 x 1 signal laid out as an image: frames capped (at most 4x as tall as wide) and padded, so
    H.264, PNG and the report's WebP all take them."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    result = camanim.animate(model, torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(0)))
    assert tuple(result.cams.shape[-2:]) == shape and float(result.cams.amax()) > 0
    paths = result.save(tmp_path / "run", formats=("mp4", "gif"))
    manifest = json.loads((tmp_path / "run" / names.MANIFEST).read_text())
    assert manifest["image"]["size"] == list(shape)
    assert count_frames(paths["side_by_side_mp4"]) == len(result.layers)
    from PIL import Image

    with Image.open(paths["frames_local"] / names.frame_name(0)) as frame:
        w, h = frame.size
    assert w == 320 and 16 + 64 <= h <= 4 * 320 + 64
    assert "data:image/" in paths["report"].read_text()


def test_frames_stream_through_the_writers_a_few_chunks_at_a_time(tmp_path, monkeypatch):
    """Every frame and video as the whole stack drew them, while at most a few chunks of frames
    are alive at once, however many layers there are."""
    import weakref

    import numpy as np
    from PIL import Image

    from camanim.draw import FrameRenderer, normalise
    from camanim.rundir import write as write_module

    result = _nineteen_layers()
    whole = result.lazy_cams.tensor()
    monkeypatch.setattr(write_module, "CHUNK_FRAMES", 1)  # 19 layers: 19 chunks per normalisation
    alive: list[weakref.ref] = []
    most = []
    real_empty, real_draw = FrameRenderer.empty, FrameRenderer.draw_range

    def empty(self, count=None):
        out = real_empty(self, count)
        alive.append(weakref.ref(out))
        return out

    def draw_range(self, *args):
        most.append(sum(ref() is not None for ref in alive))
        return real_draw(self, *args)

    monkeypatch.setattr(FrameRenderer, "empty", empty)
    monkeypatch.setattr(FrameRenderer, "draw_range", draw_range)
    result.save(tmp_path / "run", report=False)
    assert len(most) == 2 * 19 and max(most) <= 2 * (write_module.AHEAD + 3)  # not 38: a few chunks
    renderer = FrameRenderer(result.image, result.layers, FrameStyle(), result.stripes(), result.caption_title())
    for norm in ("local", "global"):
        want = real_empty(renderer)
        for _ in renderer.draw(normalise(whole, norm), norm, want):
            pass
        for i in range(19):
            assert np.array_equal(np.asarray(Image.open(tmp_path / "run" / "frames" / norm / names.frame_name(i))),
                                  want[i]), (norm, i)
        assert count_frames(tmp_path / "run" / f"{names.video_stem(norm)}.mp4") == 19
    assert count_frames(tmp_path / "run" / f"{names.video_stem(names.SIDE_BY_SIDE)}.mp4") == 19


def test_chunks_are_drawn_over_only_once_every_encoder_has_read_them(tmp_path, monkeypatch):
    """A chunk's array is drawn into again (no fresh tens of MB per chunk) only once its PNGs are written
    and every encoder is past it: encoders slower than the drawing still get every frame as drawn."""
    import time

    import numpy as np

    from camanim.draw import FrameRenderer, normalise, write_mp4
    from camanim.rundir import write as write_module

    result = _nineteen_layers()
    whole = result.lazy_cams.tensor()
    monkeypatch.setattr(write_module, "CHUNK_FRAMES", 2)  # 19 layers: 10 chunks per normalisation
    seen: dict[str, list[np.ndarray]] = {}

    def slow_mp4(path, frames, fps=10, **kw):
        got = seen.setdefault(path.stem, [])
        for frame in frames:
            time.sleep(0.01)  # the encoders are the slowest readers
            got.append(frame.copy())
        return write_mp4(path, got, fps=fps, **kw)

    made = []
    real_empty = FrameRenderer.empty
    monkeypatch.setattr(FrameRenderer, "empty", lambda self, count=None: made.append(count) or real_empty(self, count))
    monkeypatch.setattr(write_module, "write_mp4", slow_mp4)
    result.save(tmp_path / "run", report=False)
    assert len(made) < 2 * 10  # chunks were drawn over again
    renderer = FrameRenderer(result.image, result.layers, FrameStyle(), result.stripes(), result.caption_title())
    want = {}
    for norm in ("local", "global"):
        want[norm] = real_empty(renderer)
        for _ in renderer.draw(normalise(whole, norm), norm, want[norm]):
            pass
        assert np.array_equal(np.stack(seen[names.video_stem(norm)]), want[norm]), norm
    side = np.stack(seen[names.video_stem(names.SIDE_BY_SIDE)])
    w = want["local"].shape[2]
    assert np.array_equal(side[:, :, :w], want["local"]) and np.array_equal(side[:, :, w + 8:], want["global"])
