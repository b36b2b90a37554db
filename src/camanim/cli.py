"""The ``camanim`` command: parses, calls the API, prints. The only module that talks to a terminal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .version import __version__

if TYPE_CHECKING:
    from .compute import CamOptions
    from .road import RoadOptions
    from .rundir import SaveOptions

SUBCOMMANDS = ("run", "road", "layers", "methods", "models", "report", "compare", "figure", "sweep")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI contract's errors: one line on stderr, exit code 2, no usage block.

    ``also_help``: a subcommand whose options this parser's help shows too ('camanim' alone is 'camanim run').
    """

    also_help: argparse.ArgumentParser | None = None

    def error(self, message: str) -> None:  # type: ignore[override]
        message = message.replace("\n", " ")
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")

    def format_help(self) -> str:
        text = super().format_help()
        if self.also_help is not None:
            text += f"\n'camanim' alone runs '{self.also_help.prog}' and takes its options:\n\n"
            text += self.also_help.format_help()
        return text


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _input_size(text: str | None) -> tuple[int, int] | None:
    """``--input-size H`` or ``H,W`` as (height, width)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"--input-size '{text}' must be H or H,W in pixels, e.g. --input-size 32 or 224,320")
    return (int(parts[0]), int(parts[-1]))


def _load(args: argparse.Namespace):
    """The model of ``--model``/``--weights``/... (a :class:`camanim.sources.LoadedModel`)."""
    from .sources import load_model

    return load_model(args.model, args.weights, num_classes=args.num_classes, labels=args.labels,
                      channels=args.channels, trust_checkpoint=args.trust_checkpoint,
                      input_size=_input_size(args.input_size))


def _layouts(items: Sequence[str] | None) -> dict[str, str]:
    """``--layout NAME=LAYOUT`` options as a dict (the layouts themselves are checked by the trace)."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, layout = item.partition("=")
        if not sep or not name.strip() or not layout.strip():
            raise InputError(f"--layout '{item}' must be NAME=LAYOUT, e.g. --layout encoder.ln=TOKENS")
        out[name.strip()] = layout.strip()
    return out


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="efficientnet_lite0",
                   help="model name (builtin, torchvision or timm; see 'camanim models') [efficientnet_lite0], "
                        "or a pickled full model PATH with --trust-checkpoint")
    p.add_argument("--weights", default="default",
                   help="'default' (the name's pretrained weights), 'none' (random) or a state dict PATH")
    p.add_argument("--num-classes", type=int, default=None, help="classes of your checkpoint's head")
    p.add_argument("--labels", default=None, help="text file with one class name per line")
    p.add_argument("--channels", type=int, default=None,
                   help="input channels the model's first convolution takes (1: grey images; an image file gives "
                        "1 or 3) [the checkpoint's first conv, else the model's]")
    p.add_argument("--input-size", default=None, metavar="H[,W]",
                   help="input size the model takes, for models whose size camanim cannot know (a pickled "
                        "32x32 net): images are resized and centre-cropped to it; a torchvision detector takes them at "
                        "that size (its own min_size) [the weights' recipe, else 224]")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow --model PATH, a full model saved with torch.save(model): unpickling runs its code")
    p.add_argument("--layers", default="all",
                   help="all | leaves | glob such as 'layer4*' | re:REGEX | type:Conv2d,BatchNorm2d; add 'distinct' "
                        "(alone or as distinct,layer4*) for one frame per distinct CAM [all]")
    p.add_argument("--layout", action="append", default=None, metavar="NAME=LAYOUT",
                   help="read layer NAME's output as LAYOUT: NCHW, NHWC, NWHC, TOKENS[:P+HxW], WINDOWS:THxTW@S, "
                        "WINDOWS_T:THxTW@S or non_spatial (repeatable) [detected per layer]")


def _add_run_args(p: argparse.ArgumentParser, image_optional: bool = True) -> None:
    p.add_argument("image", nargs="*" if image_optional else "+", default=["sample:cat"],
                   help="image file(s) (PNG, JPEG, TIFF, ..., DICOM .dcm) or sample:cat|coffee|rocket|motorcycle|"
                        "camera|ct (ct: a DICOM CT slice); several images run as one batch, each with its own "
                        "target, into OUT/<image>/ [sample:cat]")
    _add_model_args(p)
    p.add_argument("--method", default="gradcam",
                   help="CAM method, several as gradcam,hirescam,scorecam (one shared pass, OUT/<method>/ each, "
                        "and camanim_methods_grid.mp4), or a plugin module.path:Name | file.py:Name; see "
                        "'camanim methods' [gradcam]")
    p.add_argument("--target", default=None, action="append",
                   help="class index or label for every image, one per image as 281,eel, or topk:K for each "
                        "image's K top classes (OUT/class_<k>/ each); seg:CLASS[,mask=PATH] for a segmentation "
                        "model (the class's scores summed over its predicted region, or the mask); box:N for a "
                        "detector (its N-th detection); similar:IMAGE for a backbone (cosine similarity of the "
                        "embeddings). Repeat it for one target per image, each whole, commas and all: --target "
                        "seg:15,mask=m.png --target seg:7 [the predicted class]")
    p.add_argument("--score", default="logit", choices=("logit", "softmax", "sigmoid"),
                   help="what a CAM explains: the target's logit, its softmax probability, or its sigmoid "
                        "probability (multi-label models); a one-logit model's probability is its sigmoid [logit]")
    p.add_argument("--window", default=None, metavar="C,W",
                   help="DICOM window centre,width in the file's rescaled unit (Hounsfield units for CT), e.g. "
                        "40,400; applied before the model's normalisation [the file's window, else its value range]")
    p.add_argument("--frame", type=int, default=None, metavar="N",
                   help="the frame of a multi-frame DICOM file, from 0 [0]")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per extra forward of ScoreCAM/AblationCAM, packed across layers "
                        "[8 on the CPU, 64 on a GPU]")
    p.add_argument("--aug-smooth", action="store_true",
                   help="test-time augmentation per layer: flip x multiply [0.9, 1, 1.1], averaged (6 passes)")
    p.add_argument("--norm", default="local,global", help="normalisations: local,global [both]")
    p.add_argument("--out", default="camanim-out", help="output folder [./camanim-out]")
    p.add_argument("--fps", type=float, default=10, help="video frames per second [10]")
    p.add_argument("--format", default="mp4", help="video formats: mp4,gif [mp4]")
    p.add_argument("--colormap", default="jet", help="matplotlib colormap for the overlay [jet]")
    p.add_argument("--frame-width", type=int, default=320, help="width of a frame's image panel in pixels [320]")
    p.add_argument("--device", default=None, help="cpu | cuda [the model's device]")
    p.add_argument("--no-video", action="store_true", help="write CAMs, frames and manifest but no videos")
    p.add_argument("--eigen-smooth", action="store_true", help="first principal component of the weighted maps")
    p.add_argument("--guided", action="store_true",
                   help="Guided Grad-CAM frames: guided backpropagation (once) times each layer's CAM")
    p.add_argument("--seed", type=int, default=0, help="seed for RandomCAM and ROAD noise [0]")
    p.add_argument("--output-key", default=None,
                   help="where the logits are in a tuple/dict/dataclass model output: an index or a key")
    p.add_argument("--skip-non-spatial", action="store_true",
                   help="leave out layers without a 2-D map (pooling, flatten, Linear) [drawn as 1-D stripes]")
    p.add_argument("--road", action="store_true", help="also score every layer's CAM with ROAD: ybROAD")
    p.add_argument("--metric", default=None,
                   help="faithfulness metrics per layer: road,deletion,insertion,avgdrop,increase,cammult or all "
                        "(road = --road); each writes metric_<name>.csv/json/png, and the report shows each "
                        "metric's best layer and the Spearman correlation between metrics")
    _add_road_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_road_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--road-percentiles", default="20,40,60,80",
                   help="percent of pixels REMOVED at each ROAD step [20,40,60,80]")
    p.add_argument("--road-score", default="prob", choices=("prob", "logit"),
                   help="change in the target's probability (prob: the run's softmax or sigmoid) or logit [prob]")
    p.add_argument("--road-trials", type=int, default=None,
                   help="noise draws per layer, and random pixel rankings of the chance baseline; 2 or more give "
                        "each layer a 95%% interval [3]")
    p.add_argument("--road-noise", type=float, default=0.01, help="imputation noise std [0.01]")
    p.add_argument("--road-batch-size", type=int, default=None,
                   help="perturbed images per forward [8 on CPU, 32 on GPU]")


def build_parser() -> argparse.ArgumentParser:
    """The ``camanim`` argument parser, with its subcommands (run, layers, road, report, compare, ...)."""
    parser = _Parser(
        prog="camanim",
        description="CAManim: a class activation map for every layer of a CNN, as local and global videos. "
                    "'camanim' alone runs the built-in default (EfficientNet-Lite0, sample:cat) and accepts "
                    "run's options, e.g. 'camanim --out DIR'.",
    )
    parser.add_argument("--version", action="version", version=f"camanim {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="animate every layer's CAM for one image (the main job)")
    _add_run_args(run)
    parser.also_help = run
    lay = sub.add_parser("layers", help="list the layers that would be animated, with output shapes")
    _add_model_args(lay)
    lay.add_argument("--image", default="sample:cat", help="image used to trace shapes [sample:cat]")
    lay.set_defaults(weights="none")
    road = sub.add_parser("road", help="ybROAD for a finished run, from its saved CAMs")
    road.add_argument("out_dir", help="a run folder (holds manifest.json and cams.npz)")
    _add_road_args(road)
    road.add_argument("--seed", type=int, default=0, help="seed for the imputation noise [0]")
    road.add_argument("--device", default=None, help="cpu | cuda")
    road.add_argument("--trust-checkpoint", action="store_true", help="allow a pickled full model (runs its code)")
    road.add_argument("--quiet", action="store_true", help="no progress bars")
    rep = sub.add_parser("report", help="(re)build OUT_DIR/report.html from a finished run")
    rep.add_argument("out_dir", help="a run folder (holds manifest.json)")
    cmp_ = sub.add_parser("compare", help="play several runs in lock-step: compare.html + compare_grid.mp4")
    cmp_.add_argument("run_dirs", nargs="+", help="run folders")
    cmp_.add_argument("--out", default="camanim-compare", help="output folder [./camanim-compare]")
    cmp_.add_argument("--fps", type=int, default=10, help="frames per second [10]")
    fig = sub.add_parser("figure", help="a paper figure of finished runs: PNG + vector PDF (filmstrip, grids)")
    fig.add_argument("run_dirs", nargs="+", help="run folders: one makes a filmstrip by depth, several of one model "
                                                 "a methods x depths grid, of several models a models x depths grid")
    fig.add_argument("--out", default="camanim-figure.pdf", help="fig.pdf: writes fig.pdf and fig.png [camanim-figure.pdf]")
    fig.add_argument("--depths", default=None, help="percent of the layers, one column each [0,20,40,60,80,100]")
    fig.add_argument("--layers", default=None, help="layer names, one column each, instead of --depths (one model)")
    fig.add_argument("--layer", default=None, help="one layer's normalisations side by side (with --norms)")
    fig.add_argument("--norms", default=None,
                     help="local,global: one row each [both for one run or --layer, local for a grid]")
    fig.add_argument("--with-road", action="store_true",
                     help="a ybROAD strip under the filmstrip on the same depth axis, best layer marked")
    fig.add_argument("--spatial-only", action="store_true",
                     help="show the nearest spatial layer where a depth falls on a non-spatial one [its 1-D stripe]")
    fig.add_argument("--dpi", type=int, default=300, help="resolution of the PNG and the PDF's images [300]")
    fig.add_argument("--font-size", type=float, default=7.0, help="text size in points [7]")
    _add_sweep_parser(sub)
    sub.add_parser("methods", help="list the CAM methods")
    mod = sub.add_parser("models", help="list model names: builtin, torchvision, timm")
    mod.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'convnext*'")
    return parser


def _add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    sw = sub.add_parser("sweep", help="CAManim with ybROAD over a dataset: images x models x methods, tables + "
                                      "aggregates + sweep.html, on a local pool or Ray, resumable")
    sw.add_argument("images", nargs="+",
                    help="folders (recursive), globs, a CSV/TSV list (a path column, an optional label column: "
                         "class index or name), image files, sample:NAME")
    _add_model_args(sw)
    sw.set_defaults(model="efficientnet_lite0")
    sw.add_argument("--method", default="gradcam", help="CAM methods, comma-separated, e.g. gradcam,layercam [gradcam]")
    sw.add_argument("--score", default="logit", choices=("logit", "softmax", "sigmoid"),
                    help="what a CAM explains: the target's logit, softmax or sigmoid probability [logit]")
    sw.add_argument("--batch-size", type=int, default=None, help="images per extra forward of ScoreCAM/AblationCAM")
    sw.add_argument("--seed", type=int, default=0, help="seed for RandomCAM and ROAD noise [0]")
    sw.add_argument("--output-key", default=None, help="where the logits are in a tuple/dict model output")
    sw.add_argument("--skip-non-spatial", action="store_true", help="leave out layers without a 2-D map")
    sw.add_argument("--device", default=None, help="cpu | cuda [the model's device]")
    _add_road_args(sw)
    sw.add_argument("--out", default="camanim-sweep", help="output folder [./camanim-sweep]")
    sw.add_argument("--workers", type=int, default=None,
                    help="worker processes (or Ray actors), each loading each model once [cores, at most one per item]")
    sw.add_argument("--threads", type=int, default=None, help="torch threads per worker [cores / workers]")
    sw.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                    help="run on Ray (pip install 'camanim[ray]'): auto joins this machine's cluster or starts a "
                         "local one; ADDRESS joins that cluster [a local process pool]")
    sw.add_argument("--resume", action="store_true", help="continue the sweep in --out: skip its finished items")
    sw.add_argument("--save-runs", type=int, default=0, metavar="K",
                    help="also write full run folders (frames, videos, report) for K images [0]")
    sw.add_argument("--save-which", default="first", choices=("first", "misclassified", "lowest-confidence"),
                    help="which K images --save-runs writes [first]")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_sweep(args: argparse.Namespace) -> int:
    """``camanim sweep IMAGES...``: every image x model x method with ybROAD, into tables and ``sweep.html``.

    Returns:
        The exit code: 0, or 2 when no item succeeded.

    Raises:
        InputError: a bad option, no image, a sweep in --out without --resume.
    """
    from .methods import get_methods
    from .sweep import SweepOptions, SweepSettings, run_sweep

    methods = tuple(_csv(args.method))
    get_methods(list(methods))
    cam = dict(layers=args.layers, score=args.score, batch_size=args.batch_size, seed=args.seed,
               output_key=args.output_key, layouts=_layouts(args.layout), skip_non_spatial=args.skip_non_spatial)
    model_options = {k: v for k, v in (("num_classes", args.num_classes), ("channels", args.channels),
                                       ("labels", args.labels and str(Path(args.labels).absolute())),
                                       ("trust_checkpoint", args.trust_checkpoint)) if v is not None and v is not False}
    settings = SweepSettings(methods=methods, cam=cam, road=_road_options(args), weights=args.weights,
                             input_size=_input_size(args.input_size), device=args.device, model_options=model_options)
    options = SweepOptions(models=tuple(_csv(args.model)), workers=args.workers, threads=args.threads, ray=args.ray,
                           resume=args.resume, save_runs=args.save_runs, save_which=args.save_which)
    bar = None
    progress = None
    if not args.quiet and not sys.stderr.isatty() and not _force_progress():
        progress = _sweep_line_progress()
    elif not args.quiet:
        from tqdm import tqdm

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, initial=done, desc="sweep", unit="item", file=sys.stderr)
            bar.update(done - bar.n)
    try:
        summary = run_sweep(args.images, args.out, settings, options, progress=progress)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while items ran: run_sweep said how many are in
        if not str(exc):
            raise
        raise type(exc)(f"{exc}; resume with --resume") from None
    finally:
        if bar is not None:
            bar.close()
    from .sweep.page import interval_above_band, seconds_words

    print(f"sweep: {_count(summary['items'], 'item')}, {summary['ok']} done, {summary['failed']} failed"
          + (f", {summary['skipped']} finished before" if summary["skipped"] else "")
          + (f", {_count(len(summary['duplicates']), 'duplicate file')} (the same content as another) not run again"
             if summary["duplicates"] else "")
          + (f", {_count(summary['restarts'], 'worker')} replaced" if summary["restarts"] else "")
          + f" ({seconds_words(summary)})")
    if args.save_runs:
        _print_saved_runs(summary["per_image"], args.save_runs, args.save_which)
    for f in summary["failures"][:10]:
        print(f"  failed: {f['image']} ({f['model']}): {f['error']}")
    for model, acc in (summary["accuracy"] or {}).items():
        print(f"accuracy {model}: {acc['correct']}/{acc['images']}")
    for g in summary["aggregates"]["groups"]:
        across = g["all"] or {}
        best, left_out = across.get("best"), across.get("images_left_out") or []
        out_words = f" ({len(left_out)} left out: no layer scored there)" if left_out else ""
        if best:
            ci = best.get("ci")
            interval = f" [{signed(ci[0])}, {signed(ci[1])}]" if ci else ""
            above = interval_above_band(best)  # as the verdict's statement and sweep.html
            print(f"{g['model']} {g['method']}: best layer {best['name']} ROAD {signed(best['ybroad'])}{interval} "
                  f"over {_count(across['n_images'], 'image')}{out_words}; interval above the chance band: {above}")
        elif across:
            print(f"{g['model']} {g['method']}: no best layer: {across.get('statement', '')}{out_words}")
    print(f"wrote {args.out}/")
    for key, p in summary["paths"].items():
        print(f"  {key:>10}: {p}")
    return 0 if summary["ok"] else 2


def _count(n: int, noun: str) -> str:
    """``1 image``, ``3 images``."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _print_saved_runs(per_image: list[dict], asked: int, which: str) -> None:
    """One line when ``--save-runs K`` saved fewer than K runs: how many, and why (fewer candidates than K, as
    ``--save-which`` picks them among the items done, or a run that could not be saved)."""
    chosen = [r["runs"] for r in per_image if r["runs"]]
    failed = [runs["error"] for runs in chosen if "error" in runs]
    saved = len(chosen) - len(failed)
    if saved >= asked:
        return
    why = []
    if len(chosen) < asked:
        ok = [r for r in per_image if r["status"] == "ok"]
        if which == "misclassified":
            why.append(f"only {_count(sum(r['correct'] is False for r in ok), 'misclassified image')}")
        else:
            why.append(f"only {_count(len(ok), 'item')} done")
    if failed:
        why.append(f"{len(failed)} not saved: {failed[0]}")
    print(f"saved runs: {saved} of {asked} asked ({'; '.join(why)})")


#: at most one plain progress line of a sweep this often (seconds), when stderr is not a terminal
_SWEEP_LINE_EVERY = 10.0


def _duration(seconds: float) -> str:
    """``48s``, ``5m50s``, ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _sweep_line_progress():
    """Plain progress lines of a sweep for a log: ``sweep: 6/10 items (10 items/min, ETA 24s)``, the rate over this
    session's items, at most every :data:`_SWEEP_LINE_EVERY` seconds, at the start and on the last item."""
    start: list[float] = []  # the time and the count at the first report (items finished before: not this rate)
    last = [0.0]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if not start:
            start.extend((now, done))
        elif done < total and now - last[0] < _SWEEP_LINE_EVERY:
            return
        last[0] = now
        rate = (done - start[1]) / (now - start[0]) * 60 if done > start[1] and now > start[0] else None
        extra = [] if rate is None else [f"{rate:.3g} items/min" if rate < 100 else f"{rate:.0f} items/min"]
        if rate is not None and done < total:
            extra.append(f"ETA {_duration((total - done) / rate * 60)}")
        print(f"sweep: {done}/{total} {'item' if total == 1 else 'items'}"
              + (f" ({', '.join(extra)})" if extra else ""), file=sys.stderr, flush=True)

    return update


#: TEST HOOK (tests/rundir/test_cli.py): ``CAMANIM_TEST_PAUSE_AT=STAGE`` makes a run, the first
#: time it reports progress of a stage whose name starts with STAGE ("cams", "frames", "encode",
#: "report", ...), print ``camanim: test hook: paused at <stage>`` on stderr and sleep there for up
#: to a minute, so that a test can send a real signal to the process at that very stage.
PAUSE_AT = "CAMANIM_TEST_PAUSE_AT"


def _pause_hook():
    stage = os.environ.get(PAUSE_AT)
    if not stage:
        return None
    paused: list[str] = []

    def maybe_pause(name: str) -> None:
        if not paused and name.startswith(stage):
            paused.append(name)
            print(f"camanim: test hook: paused at {name}", file=sys.stderr, flush=True)
            time.sleep(60)

    return maybe_pause


#: what each stage's progress counts ("cams" counts the method's own steps: layers, or batches of
#: perturbed images for the perturbation methods; "ybROAD" counts perturbed images)
_UNITS = {"frames": "frame", "ybROAD": "image", "encode": "file", "report": "file", "cams": "step"}
#: at most one plain progress line per stage this often (seconds), when stderr is not a terminal
_LINE_EVERY = 5.0


def _unit(stage: str) -> str:
    return _UNITS.get(stage.split(" ", 1)[0], "step")


def _progress(quiet: bool):
    """The progress callback: tqdm bars on a terminal (or with ``CAMANIM_PROGRESS=1``); elsewhere (a
    pipe, CI, nohup) one plain line per stage at most every few seconds, and when it ends; None with --quiet."""
    hook = _pause_hook()
    if quiet:
        return None if hook is None else (lambda stage, done, total: hook(stage))
    if not sys.stderr.isatty() and not _force_progress():
        return _line_progress(hook)
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        if hook is not None:
            hook(stage)
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit=_unit(stage), leave=False, file=sys.stderr)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _line_progress(hook):
    """Plain progress lines for a log: ``camanim: frames local 120/265 frames (45%)``, per stage at most
    every :data:`_LINE_EVERY` seconds, and once when it completes."""
    import time

    last: dict[str, float] = {}

    def update(stage: str, done: int, total: int) -> None:
        if hook is not None:
            hook(stage)
        now = time.monotonic()
        finished = done >= total
        if stage in last and not finished and now - last[stage] < _LINE_EVERY:
            return
        if finished and last.get(stage) == -1.0:
            return
        last[stage] = -1.0 if finished else now
        unit = _unit(stage) + ("s" if total != 1 else "")
        pct = f" ({100 * done // max(total, 1)}%)" if total > 1 else ""
        print(f"camanim: {stage} {done}/{total} {unit}{pct}", file=sys.stderr, flush=True)

    return update


def _force_progress() -> bool:
    return os.environ.get("CAMANIM_PROGRESS") == "1"


def cmd_run(args: argparse.Namespace) -> int:
    """``camanim run``: every option checked first (options objects built once), then animate, score, save.

    Returns:
        The exit code, 0.

    Raises:
        InputError: If ``--norm``, ``--format``, ``--frame-width`` or ``--colormap`` is bad (and, from
            the calls it makes, any other bad input: method, model, image, target, output folder).
    """
    from .compute import CamOptions
    from .draw import FrameStyle, colormap_lut
    from .methods import get_methods
    from .rundir import SaveOptions

    for n in _csv(args.norm):
        if n not in ("local", "global"):
            raise InputError(f"--norm '{n}' is unknown: use local, global or local,global")
    for f in _csv(args.format):
        if f not in ("mp4", "gif"):
            raise InputError(f"--format '{f}' is unknown: use mp4, gif or mp4,gif")
    if args.frame_width < 16:
        raise InputError(f"--frame-width {args.frame_width} is too small: use 16 or more pixels")
    try:
        colormap_lut(args.colormap)
    except ValueError as exc:
        raise InputError(f"--colormap: {exc}") from exc
    save = SaveOptions(normalisations=tuple(_csv(args.norm)), fps=args.fps, formats=tuple(_csv(args.format)),
                       video=not args.no_video, style=FrameStyle(width=args.frame_width, colormap=args.colormap))
    cam = CamOptions(layers=args.layers, score=args.score, eigen_smooth=args.eigen_smooth, aug_smooth=args.aug_smooth,
                     batch_size=args.batch_size, seed=args.seed, output_key=args.output_key,
                     layouts=_layouts(args.layout), skip_non_spatial=args.skip_non_spatial,
                     guided=args.guided)
    get_methods(args.method)
    metrics = metric_options(args)
    if not args.road:
        defaults = argparse.ArgumentParser()
        _add_road_args(defaults)
        changed = [k for k, v in vars(defaults.parse_args([])).items() if getattr(args, k) != v]
        if changed:
            flag = "--" + changed[0].replace("_", "-")
            raise InputError(f"{flag} sets up ybROAD, which this run does not compute: add --road, or drop {flag}")
    road = _road_options(args) if args.road else None
    with _new_folders_removed_on_failure(Path(args.out)):
        return _run(args, cam, save, road, metrics)


@contextmanager
def _new_folders_removed_on_failure(out: Path) -> Iterator[None]:
    """Should the run fail, remove the folders up to ``out`` that it created (nothing half-written).

    The output folder is checked (and its parents made) before the model loads, so that an
    unwritable ``--out`` fails at once; a failure after that must not leave those parents behind.
    """
    new: list[Path] = []
    folder = out.resolve()
    while not folder.exists():
        new.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in new:  # innermost first; a folder that is not empty stays, with all above it
            if folder.is_dir():
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


def metric_options(args: argparse.Namespace):
    """``--metric`` as :class:`camanim.metrics.MetricOptions` for the metrics beside ybROAD (None: none asked
    for); ``road`` in the list switches ybROAD on (``args.road``), as ``--road`` does."""
    if args.metric is None:
        return None
    from .metrics import EXTRA, MetricOptions, parse_metrics

    chosen = parse_metrics(args.metric)
    if "road" in chosen:
        args.road = True
    extra = tuple(m for m in chosen if m in EXTRA)
    return MetricOptions(metrics=extra, score=args.road_score, seed=args.seed) if extra else None


def _run(args: argparse.Namespace, cam: CamOptions, save: SaveOptions, road: RoadOptions | None,
         metrics=None) -> int:
    import dataclasses

    from .api import METRICS_VALUE_REFUSAL, METRICS_VOLUME_REFUSAL, animate, ybroad
    from .compute.targets import VALUE_TARGETS, per_image
    from .road.metric import VOLUME_REFUSAL
    from .rundir import prepare_out_dir
    from .sources import takes_volumes
    from .sources.dicom import parse_window
    _input_size(args.input_size)
    window = parse_window(args.window)
    prepare_out_dir(Path(args.out))
    progress = _progress(args.quiet)
    loaded = _load(args)
    images = args.image if isinstance(args.image, list) else [args.image]
    volumes = (road is not None or metrics is not None) and any(takes_volumes(loaded.module, im) for im in images)
    if volumes:  # refused before the CAM pass, not after it
        raise InputError(VOLUME_REFUSAL if args.metric is None else METRICS_VOLUME_REFUSAL)
    target = per_image(args.target, len(images), loaded.labels)
    value = [t for t in (target if isinstance(target, list) else [target]) if isinstance(t, VALUE_TARGETS)]
    if metrics is not None and value:
        raise InputError(METRICS_VALUE_REFUSAL.format(label=value[0].name))
    cam = dataclasses.replace(cam, target=target)
    result = animate(loaded, images if len(images) > 1 else images[0], method=args.method, device=args.device,
                     progress=progress, options=cam, window=window, frame=args.frame)
    for folder, res in _results(result):
        t = res.target
        label = f" ({t.label})" if t.label else ""
        where = f"{folder}: " if folder else ""
        kind = res.options.get("probability", "softmax")
        top = res.top[0] if res.top else None
        if t.kind == "value":
            print(f"{where}target: {t.label}, value {t.score:.4g}")
        elif top is None or top.index == t.index:  # the explained class is the prediction
            print(f"{where}predicted/target class: {t.index}{label}, p={t.score:.3g} ({kind})")
        else:
            top_label = f" ({top.label})" if top.label else ""
            print(f"{where}predicted class: {top.index}{top_label}, p={top.score:.3g} ({kind})")
            print(f"{where}target class: {t.index}{label}, p={t.score:.3g} ({kind})")
        print(f"{where}layers: {len(res.layers)}  method: {res.method}  model: {res.model_info.get('name')}")
    if loaded.info.get("weights_in_file"):  # which part of a training script's checkpoint was used
        print(f"weights: {loaded.info['weights']} ({loaded.info['weights_in_file']})")
    if road is not None:
        # scored in memory, so the save below writes the ybROAD files and the report once
        cb = (lambda d, t: progress("ybROAD", d, t)) if progress else None
        for folder, res in _results(result):
            _print_ybroad(ybroad(res, options=road, progress=cb), f"{folder}: " if folder else "")
    if metrics is not None:
        from .api import score_metrics
        from .metrics import agreement_markdown

        for folder, res in _results(result):
            score_metrics(res, options=metrics)
            print(f"{folder + ': ' if folder else ''}best layer per metric:")
            print(agreement_markdown(res.metrics_table()))
    paths = result.save(args.out, options=save, progress=progress)
    out = Path(args.out)
    print(f"wrote {out}/")
    width = max((len(key) for key in paths), default=0)  # one column, however long the keys of a set
    for key, p in paths.items():
        print(f"  {key:>{width}}: {p}")
    return 0


def _results(result) -> list[tuple[str, object]]:
    """(folder, result) pairs of a single result or a set of them."""
    folders = getattr(result, "folders", None)
    return list(zip(folders, result)) if folders is not None else [("", result)]


def cmd_layers(args: argparse.Namespace) -> int:
    """``camanim layers``: print the layers a run would animate (number from 1, name, type, shape, parameters,
    layout).

    Returns:
        The exit code, 0.
    """
    from .api import trace_layers

    layouts = _layouts(args.layout)
    records = trace_layers(_load(args), args.layers, image=args.image, layouts=layouts)
    width = max((len(r.name) for r in records), default=4)
    print(f"{'layer':>5}  {'name':<{width}}  {'type':<22} {'output shape':<22} {'params':>12}  layout")
    for r in records:
        shape = "x".join(str(s) for s in r.shape) or "-"
        print(f"{r.index + 1:>5}  {r.name:<{width}}  {r.type:<22} {shape:<22} {r.params:>12,}  {r.layout}")
    spatial = sum(not r.non_spatial for r in records)
    print(f"{len(records)} layers ({spatial} spatial) of {args.model}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """``camanim methods``: print each registered CAM method with its docstring's first line.

    Returns:
        The exit code, 0.
    """
    from .methods import list_methods

    for name, doc in list_methods().items():
        print(f"{name:<20} {doc}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``camanim models [PATTERN]``: print the model names of each source (builtin, torchvision, timm).

    Returns:
        The exit code, 0.

    Raises:
        InputError: If no model name matches ``PATTERN``.
    """
    from .sources import list_models

    groups = list_models(args.pattern)
    if not any(groups.values()):
        raise InputError(f"no model name matches '{args.pattern}': try a broader pattern such as 'resnet*'")
    for source, names in groups.items():
        if names:
            print(f"{source} ({len(names)}):")
            for n in names:
                print(f"  {n}")
    return 0


def _road_options(args: argparse.Namespace) -> RoadOptions:
    """``--road-*`` flags as one :class:`RoadOptions` (checked on construction)."""
    from .road import RoadOptions

    trials = {} if args.road_trials is None else {"trials": args.road_trials}
    return RoadOptions(percentiles=RoadOptions.parse_percentiles(args.road_percentiles), score=args.road_score,
                       noise=args.road_noise, seed=args.seed, batch_size=args.road_batch_size, **trials)


def signed(value: float, digits: int = 4) -> str:
    """``value`` with its sign and ``digits`` significant figures, as the verdict's statement writes it: a
    small value stays visible (``+8.6e-06``, not ``+0.0000``) and zero is ``+0`` (never ``-0``)."""
    return f"{value + 0.0:+.{digits}g}"


def _print_ybroad(yb, where: str = "") -> None:
    best = yb.ybroad_max
    if best is None:
        print(f"{where}ybROAD: no layer has a spatial, non-constant CAM to score")
        return
    print(f"{where}ybROAD_max {signed(best.value)} at layer {best.index + 1} of {len(yb.layer_names)} ({best.name}); "
          f"ybROAD_mean {signed(yb.ybroad_mean)} ({yb.score}, {len(yb.layer_names)} layer{'s' if len(yb.layer_names) != 1 else ''})")
    judged = yb.verdict()
    print(f"{where}{judged['statement']}")
    for warning in judged["warnings"]:
        print(f"{where}WARNING: {warning}")


def cmd_road(args: argparse.Namespace) -> int:
    """``camanim road OUT_DIR``: score a finished run's saved CAMs with ybROAD and write its files.

    A folder of several runs has each of its run folders scored.

    Returns:
        The exit code, 0.
    """
    from .api import road_for_run
    from .rundir import read_manifest, run_folders

    opts = _road_options(args)
    progress = _progress(args.quiet)
    cb = (lambda d, t: progress("ybROAD", d, t)) if progress else None
    top = _run_dir(args.out_dir)
    manifest = read_manifest(top, run=False)
    # a folder of several runs (images, classes, methods): score each of its run folders
    folders = run_folders(manifest) or [""]
    if len(folders) > 1:
        # every run is checked before any is scored: a bad one stops the command with none rewritten
        from .rundir import check_run_cams, load_run

        for folder in folders:
            check_run_cams(top / folder, load_run(top / folder).manifest)
    for folder in folders:
        yb, paths = road_for_run(top / folder if folder else top, trust_checkpoint=args.trust_checkpoint,
                                 device=args.device, progress=cb, options=opts)
        _print_ybroad(yb, f"{folder}: " if folder else "")
        for key, p in paths.items():
            print(f"  {key:>6}: {p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``camanim report OUT_DIR``: (re)build the run folder's ``report.html`` and print its path.

    Returns:
        The exit code, 0.
    """
    from .report import build_report

    print(f"wrote {build_report(_run_dir(args.out_dir))}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``camanim compare RUN_DIR...``: play several runs in lock-step (``compare.html``, ``compare_grid.mp4``).

    Returns:
        The exit code, 0.
    """
    import warnings

    from .report import compare

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        paths = compare([_run_dir(d) for d in args.run_dirs], args.out, fps=args.fps)
    for w in caught:
        print(f"WARNING: {w.message}", file=sys.stderr)
    for key, p in paths.items():
        print(f"  {key:>12}: {p}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    """``camanim figure RUN_DIR... --out fig.pdf``: a figure of finished runs as PNG and vector PDF.

    Returns:
        The exit code, 0.

    Raises:
        InputError: bad options, output path or run folders (see :func:`camanim.figures.write_figure`).
    """
    from .figures import DEFAULT_DEPTHS, FigureOptions, write_figure

    if args.depths is not None and (args.layers or args.layer):
        raise InputError("--depths and --layers/--layer exclude each other: choose columns by depth or by name")
    options = FigureOptions(depths=FigureOptions.parse_depths(args.depths) if args.depths is not None else DEFAULT_DEPTHS,
                            layers=tuple(_csv(args.layers or "")), norms=tuple(_csv(args.norms)) if args.norms else None,
                            layer=args.layer, with_road=args.with_road, spatial_only=args.spatial_only,
                            dpi=args.dpi, font_size=args.font_size)
    paths, plan = write_figure([_run_dir(d) for d in args.run_dirs], args.out, options)
    print(f"{plan.kind}: {len(plan.rows)} rows x {len(plan.columns)} columns")
    for key, p in paths.items():
        print(f"  {key:>4}: {p}")
    return 0


def _run_dir(path: str) -> Path:
    from .rundir import names

    p = Path(path)
    if not (p / names.MANIFEST).is_file():
        raise InputError(f"'{p}' is not a camanim run folder (no manifest.json): give the --out folder of a run")
    return p


#: the subcommands whose --out is a folder (``figure``'s is a file)
FOLDER_OUT = ("run", "sweep", "compare")


def _check_out_folder(args: argparse.Namespace) -> None:
    """The one check of a folder --out before the command starts: an existing file there is refused.

    Raises:
        InputError: ``--out`` of run, sweep or compare names an existing file.
    """
    out = getattr(args, "out", None)
    if args.command in FOLDER_OUT and out and Path(out).exists() and not Path(out).is_dir():
        raise InputError(f"--out '{out}' is a file, not a folder: give a folder path")


COMMANDS = {"sweep": cmd_sweep, "run": cmd_run, "road": cmd_road, "report": cmd_report, "compare": cmd_compare, "figure": cmd_figure, "layers": cmd_layers, "methods": cmd_methods, "models": cmd_models}


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop, job schedulers): stops a run the way Ctrl-C does.

    A KeyboardInterrupt, so every clean-up that Ctrl-C runs (the temporary run folder removed, the
    encoders stopped) runs for it too; the exit code is 143 (128 + SIGTERM), as a shell reports it.
    """


def _on_sigterm(signum: int, frame: object) -> None:
    # once: a second SIGTERM must not cut the clean-up short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while the command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _quiet_stdout() -> None:
    """The reader of stdout went away (``camanim models | head``): send what is left nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit code: 0 on success, 2 on bad input (one line on stderr), 130 on
    Ctrl-C, 143 on SIGTERM (nothing left behind either way), 141 when the reader of stdout went away."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parse error already told in one line
        return exc.code if isinstance(exc.code, int) else 0
    with _own_log_records_only(), _one_line_warnings(), _sigterm_as_interrupt():
        try:
            _check_out_folder(args)
            code = COMMANDS[args.command](args)
            sys.stdout.flush()  # a reader gone away shows here, not at exit
            return code
        except InputError as exc:
            print(f"camanim: error: {exc}", file=sys.stderr)
            return 2
        except Terminated as exc:  # the message, if any, says how far the command got
            print("camanim: terminated (SIGTERM)" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
            return 143
        except KeyboardInterrupt as exc:
            print("camanim: interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
            return 130
        except BrokenPipeError:
            # the reader went away (`camanim layers | head`): stop quietly, as other tools do
            _quiet_stdout()
            return 141


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """camanim's own warnings as one ``camanim: warning: ...`` line each on stderr (not Python's two lines
    with a source file and line); other libraries' warnings are shown as Python shows them."""
    package = str(Path(__file__).resolve().parent)
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
            if str(Path(filename).resolve()).startswith(package):
                text = str(message).removeprefix("camanim: ")
                print(f"camanim: warning: {text}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


@contextmanager
def _own_log_records_only() -> Iterator[None]:
    """Show camanim's own warnings on stderr; other libraries' log records stay off the terminal.

    The root logger gets a handler that drops records, so Python's last-resort handler does not
    print third-party warnings that have no handler of their own.
    """
    own, root = logging.getLogger("camanim"), logging.getLogger()
    shown, dropped = logging.StreamHandler(sys.stderr), logging.NullHandler()
    shown.setFormatter(logging.Formatter("camanim: %(message)s"))
    shown.setLevel(logging.WARNING)
    own.addHandler(shown)
    root.addHandler(dropped)
    try:
        yield
    finally:
        own.removeHandler(shown)
        root.removeHandler(dropped)


if __name__ == "__main__":
    sys.exit(main())
