"""Writing a run's frames and videos: drawing, PNG writing and video encoding overlap.

Frames are drawn a chunk at a time; as soon as a chunk is final its PNGs are written (OpenCV
releases the GIL) and the encoders (ffmpeg processes fed from threads) take it, so every core
stays busy from the first chunk to the end. A failure anywhere stops every part at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..draw import MAX_SIDE, NORMALISATIONS, FrameRenderer, FrameStyle, write_gif, write_mp4, write_png
from ..errors import InputError
from . import names

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SaveOptions:
    """How a run folder is written: built once (CLI flags or ``save()``'s keywords) and passed down whole.

    Attributes:
        normalisations: ``local``, ``global`` or both (one frames folder and one video each).
        fps: video frames per second (> 0).
        formats: video formats, ``mp4`` (H.264 yuv420p) and/or ``gif``.
        video: write videos at all (False: CAMs, frames and manifest only).
        report: write ``report.html`` and its plots.
        style: how frames look (panel width, colormap, overlay alpha).

    Raises:
        InputError: (on construction) no normalisation, an unknown or repeated normalisation or format,
            videos without a format, or fps not in (0, 240].
    """

    normalisations: tuple[str, ...] = NORMALISATIONS
    fps: float = 10
    formats: tuple[str, ...] = ("mp4",)
    video: bool = True
    report: bool = True
    style: FrameStyle = field(default_factory=FrameStyle)

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalisations", tuple(self.normalisations))
        object.__setattr__(self, "formats", tuple(self.formats))
        if not self.normalisations:
            raise InputError("no normalisation given: use --norm local, global or local,global")
        for n in self.normalisations:
            if n not in NORMALISATIONS:
                raise InputError(f"normalisation '{n}' is unknown: use local, global or local,global")
        if len(set(self.normalisations)) != len(self.normalisations):
            raise InputError(f"--norm {','.join(self.normalisations)} names a normalisation twice: give each once")
        for f in self.formats:
            if f not in names.VIDEO_FORMATS:
                raise InputError(f"video format '{f}' is unknown: use mp4, gif or mp4,gif")
        if len(set(self.formats)) != len(self.formats):
            raise InputError(f"--format {','.join(self.formats)} names a format twice: give each once")
        if self.video and not self.formats:
            raise InputError("no video format given: use --format mp4, gif or mp4,gif (or --no-video)")
        if not 16 <= int(self.style.width) <= MAX_SIDE:
            raise InputError(f"--frame-width {self.style.width}: give 16 to {MAX_SIDE} pixels")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and 0 < self.fps <= 240):
            raise InputError(f"--fps {self.fps} must be a positive number of frames per second, at most 240")


@dataclass
class Media:
    """What :func:`write_media` wrote, relative to the run folder's staging copy.

    Attributes:
        frames: normalisation -> frames folder.
        videos: kind (``local``, ``global``, ``side_by_side``) and format -> video file.
        arrays: normalisation -> the frames drawn, (L, H, W, 3) uint8 (for the report, without reading PNGs back).
    """

    frames: dict[str, Path]
    videos: dict[tuple[str, str], Path]
    arrays: dict[str, np.ndarray]


class _Cancelled(Exception):
    """Another part of the save failed: stop this one."""


class _Drawn:
    """Frames filled in order on one thread and read, in order, on others as soon as they are final."""

    def __init__(self, array: np.ndarray, stop: threading.Event) -> None:
        self.array, self.stop = array, stop
        self.done = 0
        self._ready = threading.Condition()

    def publish(self, done: int) -> None:
        with self._ready:
            self.done = done
            self._ready.notify_all()

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self.array)):
            with self._ready:
                while self.done <= i:
                    if self.stop.is_set():
                        raise _Cancelled
                    self._ready.wait(0.1)
            yield self.array[i]


class _SideBySide:
    """Local | global frames joined horizontally, made one at a time while encoding."""

    def __init__(self, left: Iterable[np.ndarray], right: Iterable[np.ndarray]) -> None:
        self.left, self.right = left, right

    def __iter__(self) -> Iterator[np.ndarray]:
        for a, b in zip(self.left, self.right):
            yield np.concatenate([a, np.full((a.shape[0], 8, 3), 24, np.uint8), b], axis=1)


def _raise_failed(jobs: Iterable[Future]) -> None:
    """Re-raise the first exception of a finished job, so a failed writer stops the drawing too."""
    for job in jobs:
        if job.done() and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]


def _until(stop: threading.Event, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in frames:
        if stop.is_set():
            raise _Cancelled
        yield frame


def _encode(path: Path, frames: Iterable[np.ndarray], fps: float, stop: threading.Event) -> None:
    if path.suffix == ".mp4":
        write_mp4(path, _until(stop, frames), fps=fps)
    else:
        write_gif(path, np.asarray(list(_until(stop, frames))), fps=fps)


def _write_pngs(frames: np.ndarray, folder: Path, indices: range, stop: threading.Event) -> None:
    for i in indices:
        if stop.is_set():
            return
        write_png(folder / names.frame_name(i), frames[i])


def write_media(folder: Path, renderer: FrameRenderer, normalised: Callable[[str], torch.Tensor],
                options: SaveOptions, *, also: Sequence[Callable[[], object]] = (),
                progress: Progress | None = None) -> Media:
    """Draw every frame of every normalisation into ``folder/frames/<norm>/`` and encode the videos.

    Args:
        folder: the (staging) run folder.
        renderer: draws the frames of this run.
        normalised: ``normalised(norm)`` -> CAMs (L, H, W) scaled to [0, 1].
        options: normalisations, formats, fps, whether to encode videos.
        also: more jobs for the file-writing threads (``cams.npz``), run while frames are drawn.
        progress: called as ``progress(stage, done, total)``.

    Raises:
        Whatever a writer or an encoder raised; every other part is stopped first.
    """
    norms = options.normalisations
    total = renderer.total
    stop = threading.Event()
    frames = {n: _Drawn(renderer.empty(), stop) for n in norms}
    folders: dict[str, Path] = {}
    videos: list[tuple[str, str, Path, Future]] = []
    with ThreadPoolExecutor(max_workers=2) as writers, ThreadPoolExecutor(max_workers=6) as encoders:
        try:
            jobs = [writers.submit(job) for job in also]
            if options.video:
                streams: list[tuple[str, Iterable[np.ndarray]]] = [(n, frames[n]) for n in norms]
                if len(norms) == 2:
                    streams.append((names.SIDE_BY_SIDE, _SideBySide(*(frames[n] for n in norms))))
                for kind, fr in streams:
                    for fmt in options.formats:
                        path = folder / f"{names.video_stem(kind)}.{fmt}"
                        videos.append((kind, fmt, path, encoders.submit(_encode, path, fr, options.fps, stop)))
            for n in norms:
                folders[n] = folder / names.frames_dir(n)
                folders[n].mkdir(parents=True)
                done = 0
                for upto in renderer.draw(normalised(n), n, frames[n].array):
                    frames[n].publish(upto)
                    jobs.append(writers.submit(_write_pngs, frames[n].array, folders[n], range(done, upto), stop))
                    done = upto
                    if progress:
                        progress(f"frames {n}", upto, total)
                    _raise_failed([*jobs, *(job for *_, job in videos)])
            for _, _, path, job in videos:
                if progress:
                    progress(f"encode {path.name}", 0, 1)
                job.result()
                if progress:
                    progress(f"encode {path.name}", 1, 1)
            for job in jobs:
                job.result()
        except BaseException:
            stop.set()
            raise
    return Media(frames=folders, videos={(kind, fmt): path for kind, fmt, path, _ in videos},
                 arrays={n: frames[n].array for n in norms})
