"""The ``camanim`` command: parses, calls the API, prints. The only module that talks to a terminal."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import InputError

SUBCOMMANDS = ("run", "road", "layers", "methods", "models", "report", "compare")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="efficientnet_lite0",
                   help="model name (builtin, torchvision or timm; see 'camanim models') [efficientnet_lite0]")
    p.add_argument("--weights", default="default",
                   help="'default' (the name's pretrained weights), 'none' (random) or a state dict PATH")
    p.add_argument("--num-classes", type=int, default=None, help="classes of your checkpoint's head")
    p.add_argument("--labels", default=None, help="text file with one class name per line")
    p.add_argument("--layers", default="all",
                   help="all | leaves | glob such as 'layer4*' | re:REGEX | type:Conv2d,BatchNorm2d [all]")


def _add_run_args(p: argparse.ArgumentParser, image_optional: bool = True) -> None:
    p.add_argument("image", nargs="?" if image_optional else None, default="sample:cat",
                   help="image file or sample:cat|coffee|rocket|motorcycle|camera [sample:cat]")
    _add_model_args(p)
    p.add_argument("--method", default="gradcam", help="CAM method(s), see 'camanim methods' [gradcam]")
    p.add_argument("--target", default=None, help="class index or label [the predicted class]")
    p.add_argument("--norm", default="local,global", help="normalisations: local,global [both]")
    p.add_argument("--out", default="camanim-out", help="output folder [./camanim-out]")
    p.add_argument("--fps", type=float, default=10, help="video frames per second [10]")
    p.add_argument("--format", default="mp4", help="video formats: mp4,gif [mp4]")
    p.add_argument("--colormap", default="jet", help="matplotlib colormap for the overlay [jet]")
    p.add_argument("--frame-width", type=int, default=320, help="width of a frame's image panel in pixels [320]")
    p.add_argument("--device", default=None, help="cpu | cuda [the model's device]")
    p.add_argument("--no-video", action="store_true", help="write CAMs, frames and manifest but no videos")
    p.add_argument("--eigen-smooth", action="store_true", help="first principal component of the weighted maps")
    p.add_argument("--seed", type=int, default=0, help="seed for RandomCAM and ROAD noise [0]")
    p.add_argument("--output-key", default=None, help="where the logits are in a tuple/dict model output")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camanim",
        description="CAManim: a class activation map for every layer of a CNN, as local and global videos. "
                    "'camanim' alone runs the built-in default (EfficientNet-Lite0, sample:cat) and accepts "
                    "run's options, e.g. 'camanim --out DIR'.",
    )
    parser.add_argument("--version", action="version", version=f"camanim {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="animate every layer's CAM for one image (the main job)")
    _add_run_args(run)
    lay = sub.add_parser("layers", help="list the layers that would be animated, with output shapes")
    _add_model_args(lay)
    lay.add_argument("--image", default="sample:cat", help="image used to trace shapes [sample:cat]")
    lay.set_defaults(weights="none")
    rep = sub.add_parser("report", help="(re)build OUT_DIR/report.html from a finished run")
    rep.add_argument("out_dir", help="a run folder (holds manifest.json)")
    cmp_ = sub.add_parser("compare", help="play several runs in lock-step: compare.html + compare_grid.mp4")
    cmp_.add_argument("run_dirs", nargs="+", help="run folders")
    cmp_.add_argument("--out", default="camanim-compare", help="output folder [./camanim-compare]")
    cmp_.add_argument("--fps", type=int, default=10, help="frames per second [10]")
    sub.add_parser("methods", help="list the CAM methods")
    mod = sub.add_parser("models", help="list model names: builtin, torchvision, timm")
    mod.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'convnext*'")
    return parser


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty() and not _force_progress():
        return None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="layer" if total > 1 else "file",
                                     leave=False, file=sys.stderr)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _force_progress() -> bool:
    import os

    return os.environ.get("CAMANIM_PROGRESS") == "1"


def cmd_run(args: argparse.Namespace) -> int:
    from .api import animate
    from .render import FrameStyle, colormap_lut
    from .sources import load_model

    norms = _csv(args.norm)
    formats = _csv(args.format)
    for n in norms:
        if n not in ("local", "global"):
            raise InputError(f"--norm '{n}' is unknown: use local, global or local,global")
    for f in formats:
        if f not in ("mp4", "gif"):
            raise InputError(f"--format '{f}' is unknown: use mp4, gif or mp4,gif")
    if args.fps <= 0:
        raise InputError(f"--fps {args.fps} must be positive")
    if args.frame_width < 16:
        raise InputError(f"--frame-width {args.frame_width} is too small: use 16 or more pixels")
    try:
        colormap_lut(args.colormap)
    except ValueError as exc:
        raise InputError(f"--colormap: {exc}") from exc
    from .api import prepare_out_dir

    prepare_out_dir(Path(args.out))
    from .methods import get_method

    get_method(args.method)
    progress = _progress(args.quiet)
    loaded = load_model(args.model, args.weights, num_classes=args.num_classes, labels=args.labels)
    result = animate(loaded, args.image, method=args.method, layers=args.layers, target=args.target,
                     device=args.device, eigen_smooth=args.eigen_smooth, seed=args.seed,
                     output_key=args.output_key, progress=progress)
    t = result.target
    label = f" ({t.label})" if t.label else ""
    print(f"predicted/target class: {t.index}{label}, p={t.score:.3f}")
    print(f"layers: {len(result.layers)}  method: {result.method}  model: {result.model_info.get('name')}")
    paths = result.save(args.out, normalisations=norms, fps=args.fps, formats=formats, video=not args.no_video,
                        style=FrameStyle(width=args.frame_width, colormap=args.colormap), progress=progress)
    out = Path(args.out)
    print(f"wrote {out}/")
    for key, p in paths.items():
        print(f"  {key:>18}: {p}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    import torch

    from .api import _prepare_input
    from .sources import load_model
    from .trace import run_trace

    loaded = load_model(args.model, args.weights, num_classes=args.num_classes, labels=args.labels)
    x, _, _ = _prepare_input(args.image, None, loaded)
    with torch.no_grad():
        records = run_trace(loaded.module, x, args.layers, gradients=False, keep_activations=False).records
    width = max((len(r.name) for r in records), default=4)
    print(f"{'index':>5}  {'name':<{width}}  {'type':<22} {'output shape':<22} {'params':>12}  layout")
    for r in records:
        shape = "x".join(str(s) for s in r.shape) or "-"
        print(f"{r.index:>5}  {r.name:<{width}}  {r.type:<22} {shape:<22} {r.params:>12,}  {r.layout}")
    spatial = sum(not r.non_spatial for r in records)
    print(f"{len(records)} layers ({spatial} spatial) of {args.model}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import list_methods

    for name, doc in list_methods().items():
        print(f"{name:<20} {doc}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
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


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    print(f"wrote {build_report(_run_dir(args.out_dir))}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare

    paths = compare([_run_dir(d) for d in args.run_dirs], args.out, fps=args.fps)
    for key, p in paths.items():
        print(f"  {key:>6}: {p}")
    return 0


def _run_dir(path: str) -> Path:
    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise InputError(f"'{p}' is not a camanim run folder (no manifest.json): give the --out folder of a run")
    return p


COMMANDS = {"run": cmd_run, "report": cmd_report, "compare": cmd_compare, "layers": cmd_layers, "methods": cmd_methods, "models": cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit code: 0 on success, 2 on bad input (one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="camanim: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"camanim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camanim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
