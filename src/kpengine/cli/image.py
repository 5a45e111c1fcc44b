"""Image commands: render-views (training images from shapes: RGB, mask, depth, normals, camera, 2D keypoints)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from kpengine.cli.common import emit_json

RENDER_VIEWS_HELP = """\
Render random views of every shape of the chosen categories and split into a render set: RGB images
composited on photo backgrounds, object masks, depth and normal maps, the camera, azimuth / elevation /
in-plane roll in degrees, and the category's keypoints projected with visibility and semantic ids
(format and conventions: docs/rendering.md, "Training renders").

Viewpoints: azimuth uniform over 360 degrees, elevation uniform in --elevation (default -10..60),
roll ~ N(0, 5 degrees), field of view uniform in --fov (default 20..60); the object is centred and
fills 1/(1 + 2 x 0.06..0.14) of the image (the crop the image networks assume). Shapes with a mesh are
rasterised with their materials; clouds (bathtub, bed) are drawn as oriented splats (surfels). Rendering is OpenGL
(headless EGL, Mesa llvmpipe): scripts/setup_system.sh installs it.

Backgrounds: --backgrounds DIR takes crops of real photos away from their objects (layouts: masks,
EPFL cars boxes, SPair boxes; photos that evaluation uses are held out); without it they are
generated clutter. Training sets come from the train and val splits; the test split renders only with
--evaluation (a held-out set to measure on, marked as such in its index).

Resumable: each finished shape leaves shards/<category>/<model>.json; run the same command again to
continue. The last stdout line is a JSON summary.

Examples:
  kpengine sample-data sample/
  kpengine render-views --data sample/ --category chair,table,mug --views-per-shape 4 --out renders/
  kpengine render-views --data ../shared/data/keypointnet --category bathtub,bed,chair,airplane,bottle \\
      --backgrounds ../shared/data/images --views-per-shape 24 --out renders/real
"""


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}") from None
    if not lo <= hi:
        raise argparse.ArgumentTypeError(f"expected LOW <= HIGH, got {text!r}")
    return lo, hi


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render-views",
        help="render training images of shapes (RGB on photo backgrounds, mask, depth, normals, camera, 2D keypoints)",
        description=RENDER_VIEWS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root in the KeypointNet layout")
    p.add_argument(
        "--category",
        required=True,
        metavar="NAME[,NAME...]",
        help="categories (names or synsets), comma-separated; 'all' = every category annotated under ROOT",
    )
    p.add_argument(
        "--split",
        default="train",
        choices=("train", "val", "test"),
        help="split to render (default train; test only with --evaluation)",
    )
    p.add_argument(
        "--evaluation",
        action="store_true",
        help="allow --split test: a held-out set to measure on (its index says so); never train on it",
    )
    p.add_argument("--views-per-shape", type=int, default=8, metavar="N", help="views per shape (default 8)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128; 96 or 256 also fine)")
    p.add_argument("--supersample", type=int, default=2, help="render at this multiple of --size, then downsample")
    p.add_argument("--elevation", type=_pair, default=(-10.0, 60.0), metavar="LO,HI", help="degrees (default -10,60)")
    p.add_argument("--fov", type=_pair, default=(20.0, 60.0), metavar="LO,HI", help="horizontal field of view range")
    p.add_argument("--no-jitter", action="store_true", help="no colour jitter, blur or noise")
    p.add_argument("--backgrounds", metavar="DIR", help="folder of photos to cut backgrounds from (else generated)")
    p.add_argument(
        "--maps", default="mask,depth,normals", help="per-view maps to write besides the image (default all three)"
    )
    p.add_argument("--limit", type=int, metavar="N", help="at most N shapes per category (quick sets)")
    p.add_argument(
        "--unannotated-meshes",
        action="store_true",
        help="train split only: also render the category's meshes that have no annotation and no split "
        "(views without keypoints, for silhouette and viewpoint networks)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR", help="render set folder (created; resumed if it exists)")
    p.add_argument("--summary", metavar="S.json", help="also write the JSON summary to a file")
    p.add_argument(
        "--contact-sheet", metavar="PNG", help="also draw 48 views spread over the set with their keypoints (PNG)"
    )
    p.set_defaults(func=cmd_render_views)


def _categories(root: str, text: str) -> list[str]:
    from pathlib import Path

    if text.strip().lower() != "all":
        return [c.strip() for c in text.split(",") if c.strip()]
    return sorted(p.stem for p in (Path(root) / "annotations").glob("*.json") if p.stem != "all")


def cmd_render_views(args: argparse.Namespace) -> int:
    import torch

    from kpengine.image.synth import SynthConfig, build_render_set

    torch.set_num_threads(1)
    maps = tuple(m.strip() for m in args.maps.split(",") if m.strip())
    bad = sorted(set(maps) - {"mask", "depth", "normals"})
    if bad:
        print(f"error: unknown map(s) {', '.join(bad)}; choose from mask, depth, normals", file=sys.stderr)
        return 2
    if args.views_per_shape < 1 or args.size < 8 or args.supersample < 1:
        print("error: --views-per-shape >= 1, --size >= 8 and --supersample >= 1 expected", file=sys.stderr)
        return 2
    cfg = SynthConfig(
        size=args.size,
        supersample=args.supersample,
        elevation=args.elevation,
        fov=args.fov,
        jitter=not args.no_jitter,
    )
    categories = _categories(args.data, args.category)
    tty = sys.stderr.isatty()
    bar = None
    if tty:
        from tqdm import tqdm

        bar = tqdm(desc="render-views", unit="view", leave=False)

    def log(line: str) -> None:
        (bar.write if bar is not None else lambda s: print(s, file=sys.stderr, flush=True))(line)

    t0 = time.perf_counter()
    result = build_render_set(
        args.data,
        categories,
        args.split,
        args.out,
        views_per_shape=args.views_per_shape,
        cfg=cfg,
        seed=args.seed,
        backgrounds=args.backgrounds,
        maps=maps,
        limit=args.limit,
        evaluation=args.evaluation,
        unannotated=args.unannotated_meshes,
        log=log,
        progress=(bar.update if bar is not None else lambda n: None),
    )
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    index = result.pop("_index")
    summary = {
        "out": args.out,
        "views": result["views"],
        "rendered_views": result["rendered_views"],
        "resumed_views": result["resumed_views"],
        "categories": {
            c: sum(v["category"] == c for v in index["views"]) for c in sorted({v["category"] for v in index["views"]})
        },
        "skipped": result["skipped"][:20],
        "n_skipped": len(result["skipped"]),
        "dataset_problems": result["problems"],
        "seconds": round(wall, 2),
        "views_per_second": round(result["rendered_views"] / wall, 2) if wall > 0 else None,
        "views_per_second_rendering": round(result["rendered_views"] / result["seconds_rendering"], 2)
        if result["seconds_rendering"] > 0
        else None,
        "index": result["index"],
    }
    if args.contact_sheet:
        from kpengine.image.sheet import contact_sheet
        from kpengine.io.renderset import load_render_set

        contact_sheet(load_render_set(args.out), args.contact_sheet)
        summary["contact_sheet"] = args.contact_sheet
    emit_json(summary, args.summary)
    print(json.dumps(summary))
    return 0
