"""Writing a run's frames and videos: drawing, PNG writing and video encoding overlap.

Frames are drawn a chunk at a time, from CAMs upsampled and normalised a chunk at a time; as soon
as a chunk is final its PNGs are written (OpenCV releases the GIL) and the encoders (ffmpeg
processes fed from threads) take it, so every core stays busy from the first chunk to the end. A
chunk's array is drawn over again (or leaves memory) once every writer and encoder is past it, and
what was freed goes back to the system after each chunk (glibc keeps it otherwise): the memory a save
needs does not grow with the number of layers, and no chunk costs the page faults of a fresh array. A failure anywhere stops every part at once.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..compute.maps import CHUNK_BYTES, CHUNK_LAYERS
from ..draw import (
    MAX_SIDE,
    NORMALISATIONS,
    FrameRenderer,
    FrameStyle,
    LayerMaps,
    write_gif,
    write_mp4,
    write_png,
)
from ..errors import InputError
from ..memory import give_back_freed
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
        files: normalisation -> the frame files, in layer order.
        encoded: normalisation -> each frame as ``write_media``'s ``encode`` made it (the report's data
            URIs, made while the frames were in memory), in layer order; empty without ``encode``.
    """

    frames: dict[str, Path]
    videos: dict[tuple[str, str], Path]
    files: dict[str, list[Path]] = field(default_factory=dict)
    encoded: dict[str, list[str]] = field(default_factory=dict)


#: a chunk of frames holds at most this many bytes (the frames in memory are a few chunks per normalisation)
FRAME_CHUNK_BYTES = 32 * 2**20
#: a chunk of input-size maps holds at most this many bytes (the CAM views' own chunk, ``compute.maps``)
MAP_CHUNK_BYTES = CHUNK_BYTES
#: the most frames a chunk holds (as many as the layers of a CAM view's chunk)
CHUNK_FRAMES = CHUNK_LAYERS
#: how many chunks the drawing may run ahead of the slowest reader (encoder, PNG writer)
AHEAD = 2


class _Cancelled(Exception):
    """Another part of the save failed: stop this one."""


class _Stream:
    """One normalisation's frames, published a chunk at a time by the drawing thread and read in
    order by each reader (an encoder) on its own thread; a chunk is let go once every reader is past it."""

    def __init__(self, total: int, chunk: int, stop: threading.Event) -> None:
        self.total, self.chunk, self.stop = total, chunk, stop
        self.chunks: dict[int, np.ndarray] = {}
        self.published = 0
        self.positions: list[int] = []
        self._cond = threading.Condition()

    def reader(self) -> Iterator[np.ndarray]:
        """A new reader of every frame, in order (register all readers before publishing)."""
        self.positions.append(0)
        return self._read(len(self.positions) - 1)

    def _read(self, who: int) -> Iterator[np.ndarray]:
        for i in range(self.total):
            with self._cond:
                while self.published <= i:
                    if self.stop.is_set():
                        raise _Cancelled
                    self._cond.wait(0.1)
                start = i - i % self.chunk
                frame = self.chunks[start][i - start]
            yield frame
            with self._cond:
                self.positions[who] = i + 1
                self._drop()
                self._cond.notify_all()

    def _drop(self) -> None:
        slowest = min(self.positions, default=self.published)
        for start in [s for s in self.chunks if s + len(self.chunks[s]) <= slowest]:
            del self.chunks[start]

    def holds(self, frames: np.ndarray) -> bool:
        """Whether ``frames`` (a published chunk) is still waiting for a reader."""
        with self._cond:
            return any(chunk is frames for chunk in self.chunks.values())

    def publish(self, start: int, frames: np.ndarray) -> None:
        """Frames ``start`` to ``start + len(frames) - 1``, final."""
        with self._cond:
            self.chunks[start] = frames
            self.published = start + len(frames)
            self._drop()
            self._cond.notify_all()

    def wait_behind(self, frames: int, check: Callable[[], None]) -> None:
        """Block while the slowest reader is more than ``frames`` behind; ``check`` raises a failure."""
        with self._cond:
            while self.positions and self.published - min(self.positions) > frames:
                check()
                if self.stop.is_set():
                    raise _Cancelled
                self._cond.wait(0.1)


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
        write_gif(path, _until(stop, frames), fps=fps)


def _write_pngs(frames: np.ndarray, folder: Path, start: int, stop: threading.Event) -> None:
    for k, frame in enumerate(frames):
        if stop.is_set():
            return
        write_png(folder / names.frame_name(start + k), frame)


def _encode_frames(frames: np.ndarray, encode: Callable[[np.ndarray], str], out: list[str], start: int,
                   stop: threading.Event) -> None:
    for k, frame in enumerate(frames):
        if stop.is_set():
            return
        out[start + k] = encode(frame)


def _reuse(spare: list[np.ndarray], stream: _Stream, count: int) -> np.ndarray | None:
    """A chunk's array whose PNG and data URI writers are done and that no encoder still reads, to
    draw the next chunk into (``count`` frames: its first rows): memory in use already, where a new
    array of tens of MB costs its page faults again. Kept: at most one spare chunk, the rest let go."""
    for k, frames in enumerate(spare):
        if len(frames) >= count and not stream.holds(frames):
            del spare[k]
            del spare[:-1]
            return frames
    del spare[:-1]
    return None


def chunk_frames(renderer: FrameRenderer, map_shape: Sequence[int]) -> int:
    """How many frames :func:`write_media` draws at a time: at most :data:`CHUNK_FRAMES`, and at most
    :data:`MAP_CHUNK_BYTES` of maps (``map_shape``: one layer's normalised map) and :data:`FRAME_CHUNK_BYTES`
    of frames (at least one)."""
    per_map = max(1, math.prod(int(s) for s in map_shape)) * 4
    return max(1, min(CHUNK_FRAMES, MAP_CHUNK_BYTES // per_map, FRAME_CHUNK_BYTES // renderer.frame_bytes))


def write_media(folder: Path, renderer: FrameRenderer, normalised: Callable[[str], LayerMaps],
                options: SaveOptions, *, also: Sequence[Callable[[], object]] = (),
                encode: Callable[[np.ndarray], str] | None = None,
                progress: Progress | None = None) -> Media:
    """Draw every frame of every normalisation into ``folder/frames/<norm>/`` and encode the videos.

    Frames are drawn a chunk at a time (:func:`chunk_frames`), every normalisation's chunk in turn;
    each chunk goes to the PNG writer, to ``encode`` and to the video encoders, and its array is
    drawn over again by a later chunk (or let go) once they are all past it. The drawing waits while the slowest is :data:`AHEAD` chunks behind, so at most
    a few chunks of frames and of maps are in memory, whatever the number of layers.

    Args:
        folder: the (staging) run folder.
        renderer: draws the frames of this run.
        normalised: ``normalised(norm)`` -> CAMs (L, H, W) scaled to [0, 1], read a run of layers at a
            time (a tensor, or a :class:`camanim.compute.LayerView`).
        options: normalisations, formats, fps, whether to encode videos.
        also: more jobs for the file-writing threads (``cams.npz``), run while frames are drawn.
        encode: each frame -> a string kept in :attr:`Media.encoded` (the report's data URIs), or None.
        progress: called as ``progress(stage, done, total)``.

    Raises:
        Whatever a writer or an encoder raised; every other part is stopped first.
    """
    norms = options.normalisations
    total = renderer.total
    stop = threading.Event()
    views = {n: normalised(n) for n in norms}
    chunk = chunk_frames(renderer, views[norms[0]].shape[1:]) if total else 1
    streams = {n: _Stream(total, chunk, stop) for n in norms}
    folders = {n: folder / names.frames_dir(n) for n in norms}
    encoded: dict[str, list[str]] = {n: [""] * total for n in norms} if encode is not None else {}
    videos: list[tuple[str, str, Path, Future]] = []
    workers = max(2, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as writers, ThreadPoolExecutor(max_workers=6) as encoders:
        try:
            jobs = [writers.submit(job) for job in also]
            if options.video:
                for kind in [*norms, *([names.SIDE_BY_SIDE] if len(norms) == 2 else [])]:
                    for fmt in options.formats:
                        frames: Iterable[np.ndarray] = (streams[kind].reader() if kind in streams else
                                                        _SideBySide(*(streams[n].reader() for n in norms)))
                        path = folder / f"{names.video_stem(kind)}.{fmt}"
                        videos.append((kind, fmt, path, encoders.submit(_encode, path, frames, options.fps, stop)))
            for n in norms:
                folders[n].mkdir(parents=True)

            def check() -> None:
                _raise_failed([*jobs, *(job for *_, job in videos)])

            # the writers' jobs of each chunk still in flight, with the chunk's frames
            pending: list[tuple[list[Future], list[tuple[str, np.ndarray]]]] = []
            spare: dict[str, list[np.ndarray]] = {n: [] for n in norms}  # chunks every writer is done with
            for start in range(0, total, chunk):
                end = min(start + chunk, total)
                mine: list[Future] = []
                drawn: list[tuple[str, np.ndarray]] = []
                for n in norms:
                    streams[n].wait_behind(AHEAD * chunk, check)
                    reused = _reuse(spare[n], streams[n], end - start)
                    out = renderer.empty(end - start) if reused is None else reused[:end - start]
                    renderer.draw_range(views[n], n, start, end, out)
                    streams[n].publish(start, out)
                    drawn.append((n, out))
                    mine.append(writers.submit(_write_pngs, out, folders[n], start, stop))
                    if encode is not None:
                        mine.append(writers.submit(_encode_frames, out, encode, encoded[n], start, stop))
                    if progress:
                        progress(f"frames {n}", end, total)
                    check()
                pending.append((mine, drawn))
                jobs += mine
                while len(pending) > AHEAD:  # older chunks' frames are drawn over again once written
                    done, frames_of = pending.pop(0)
                    for job in done:
                        job.result()
                    for n, frames in frames_of:
                        spare[n].append(frames)
                give_back_freed()
            for _, _, path, job in videos:
                if progress:
                    progress(f"encode {path.name}", 0, 1)
                job.result()
                if progress:
                    progress(f"encode {path.name}", 1, 1)
            for job in jobs:
                job.result()
            give_back_freed()
        except BaseException:
            stop.set()
            raise
    return Media(frames=folders, videos={(kind, fmt): path for kind, fmt, path, _ in videos},
                 files={n: [folders[n] / names.frame_name(i) for i in range(total)] for n in norms},
                 encoded=encoded)
