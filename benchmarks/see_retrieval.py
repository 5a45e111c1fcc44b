"""Shape retrieval by the joint shape-image embedding (Li, Su et al.) on held-out shapes.

    python benchmarks/see_retrieval.py --test /work/renders/test128 \
        --runs bathtub=runs/img_bathtub bed=runs/img_bed \
        --spaces bathtub=runs/shape_bathtub bed=runs/shape_bed \
        --silhouette-images 15 --out docs/figures/see_retrieval.json --png docs/figures/see_retrieval.png

Queries: the views of test-split shapes in a render set (``kpengine render-views --split test
--evaluation``: renders on real photo backgrounds, never trained on), each taken whole as the photo (no
mask, no viewpoint). The gallery: the category's whole shape collection (train + val + test shapes:
the shape space holds every annotated shape's light field, as the paper's shape collection does; the
image network never saw a test shape's picture). Measures, in the same run:

* image -> shape: rank of the query's own shape among all N shapes (median, top-1, top-5);
* shape -> image: for each test shape, rank of its nearest own view among all test views;
* methods: the joint embedding; the HoG nearest-neighbour baseline (the photo's HoG against every
  light-field view's HoG, a shape's distance its nearest view's); and, on the first
  ``--silhouette-images`` views per category, the pipeline's silhouette-IoU ranking given the TRUE
  mask and viewpoint (oracle inputs: an upper bound for that route), each shape drawn from its cloud.

``--seen SET`` adds the paper's own protocol (Li, Su et al. train their CNN on renders of every shape of
the collection and test on photos of those shapes): new renders (another seed) of the train-split shapes
the network was trained on, image -> shape for both methods. The held-out test shapes above are the
harder question, and the one this project's rule (test shapes are never rendered for training) asks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from shared_data import shared_data  # a sibling script

from kpengine.image.retrieval.embedding import RankSummary, distances_to, embed, photo_input, ranks_of
from kpengine.image.retrieval.lightfield import LightFieldSpec
from kpengine.image.retrieval.retrieve import Retriever, hog_distances
from kpengine.io.renderset import load_render_set
from kpengine.io.shapespace import load_shape_space


def pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def shape_to_image(dist: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(Q, N) query-to-shape distances -> for each shape with queries, the rank of its nearest own query
    among all queries (1-based)."""
    out = []
    for r in np.unique(rows):
        col = dist[:, r]
        best = col[rows == r].min()
        out.append(int((col < best).sum()) + 1)
    return np.array(out)


def silhouette_ranks(views, images, masks, shapes, rows, limit: int) -> np.ndarray:
    """Ranks by the pipeline's silhouette IoU (:func:`kpengine.image.poses.place_camera`) at the true
    viewpoint and mask, for the first ``limit`` queries; each gallery shape drawn as splats of its cloud."""
    from kpengine.geometry.transforms import bbox_centre
    from kpengine.image.poses import place_camera
    from kpengine.image.synth import SURFEL_SCALE
    from kpengine.render.cameras import Viewpoint
    from kpengine.render.gl import GLSplatRenderer
    from kpengine.render.splat import default_radius

    gallery = []
    for s in shapes:
        pts = np.asarray(s.points, np.float64)
        splat = GLSplatRenderer(pts, radius=SURFEL_SCALE * default_radius(pts), oriented=True, max_radius_px=24)
        adapter = SimpleNamespace(
            mesh=SimpleNamespace(vertices=pts),
            render=lambda cam, _s=splat: _s.render(cam, with_location=False),
        )
        gallery.append((adapter, bbox_centre(pts)))
    out = []
    for q in range(min(limit, len(images))):
        v = views[q]
        view = Viewpoint(v["azimuth"], v["elevation"], 1.0, v["theta"])
        fov = float(v.get("fov", 30.0))
        ious = np.array([place_camera(r, c, masks[q], view, fov)[1] for r, c in gallery])
        out.append(int((ious > ious[rows[q]]).sum()) + 1)
    return np.array(out)


def seen_shapes(root: str, cat: str, retriever, space, spec) -> dict:  # noqa: ANN001
    """Image -> shape ranks of new views of train-split shapes (the network trained on other views of them)."""
    index = space.index()
    sel = load_render_set(root).select(categories=[cat], splits=["train"])
    keep = [k for k, v in enumerate(sel.views) if v["model_id"] in index]
    px = sel.images(keep, masks=False)
    rows = np.array([index[sel.views[k]["model_id"]] for k in keep])
    x = torch.cat([photo_input(im, retriever.size) for im in px["image"]])
    d_emb = distances_to(embed(retriever.model, x), retriever.coords)
    d_hog = hog_distances(list(px["image"]), space.hog, spec)
    return {
        "views": len(rows),
        "shapes": int(len(np.unique(rows))),
        "embedding": RankSummary.of(ranks_of(d_emb, rows)).to_json(),
        "hog_nn": RankSummary.of(ranks_of(d_hog, rows)).to_json(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", required=True, help="render set of test-split views")
    ap.add_argument("--runs", nargs="+", required=True, metavar="CATEGORY=RUN", help="image-embedding runs")
    ap.add_argument("--spaces", nargs="+", required=True, metavar="CATEGORY=RUN", help="shape-embedding runs")
    ap.add_argument("--knowledge", default=shared_data("keypointnet"), help="clouds for the silhouette ranking")
    ap.add_argument("--silhouette-images", type=int, default=15, help="queries per category ranked by IoU (0: none)")
    ap.add_argument("--seen", help="render set of new views of train-split shapes (the paper's protocol)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs, spaces = pairs(args.runs), pairs(args.spaces)
    test = load_render_set(args.test)
    report: dict = {
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(os.sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, loadavg {os.getloadavg()[0]:.1f} at start",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "categories": {},
    }
    figure = {}
    for cat, run in runs.items():
        t0 = time.perf_counter()
        space = load_shape_space(Path(spaces[cat]) / "shape_space.npz", need=("coords", "hog"))
        retriever = Retriever.from_run(run, cat)
        if retriever.model_ids != space.model_ids:
            raise SystemExit(f"{run} was trained on another shape space than {spaces[cat]}")
        index = space.index()
        sel = test.select(categories=[cat], splits=["test"])
        keep = [k for k, v in enumerate(sel.views) if v["model_id"] in index]
        views = [sel.views[k] for k in keep]
        px = sel.images(keep)
        rows = np.array([index[v["model_id"]] for v in views])
        assert all(space.splits[r] == "test" for r in rows)
        x = torch.cat([photo_input(im, retriever.size) for im in px["image"]])
        d_emb = distances_to(embed(retriever.model, x), retriever.coords)
        spec = LightFieldSpec.from_json(space.meta["spec"])
        d_hog = hog_distances(list(px["image"]), space.hog, spec)
        res = {
            "gallery_shapes": len(space),
            "test_shapes": int(len(np.unique(rows))),
            "test_views": len(views),
            "chance_median_rank": (len(space) + 1) / 2,
            "image_to_shape": {
                "embedding": RankSummary.of(ranks_of(d_emb, rows)).to_json(),
                "hog_nn": RankSummary.of(ranks_of(d_hog, rows)).to_json(),
            },
            "shape_to_image": {
                "embedding": RankSummary.of(shape_to_image(d_emb, rows)).to_json(),
                "hog_nn": RankSummary.of(shape_to_image(d_hog, rows)).to_json(),
            },
        }
        if args.seen:
            res["seen_shapes_new_views"] = seen_shapes(args.seen, cat, retriever, space, spec)
        if args.silhouette_images > 0:
            from kpengine.image.tasks.shape_embedding import collection

            shapes, _ = collection(args.knowledge, cat)
            shapes = sorted(shapes, key=lambda s: index[s.model_id])
            assert [s.model_id for s in shapes] == space.model_ids
            n = args.silhouette_images
            t1 = time.perf_counter()
            sil = silhouette_ranks(views, px["image"], px["mask"], shapes, rows, n)
            res["image_to_shape"]["silhouette_iou_oracle"] = RankSummary.of(sil).to_json()
            res["image_to_shape"]["same_queries"] = {
                "embedding": RankSummary.of(ranks_of(d_emb[:n], rows[:n])).to_json(),
                "hog_nn": RankSummary.of(ranks_of(d_hog[:n], rows[:n])).to_json(),
            }
            res["silhouette_seconds_per_query"] = round((time.perf_counter() - t1) / max(len(sil), 1), 2)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        report["categories"][cat] = res
        figure[cat] = (px["image"], d_emb, d_hog, rows, space)
        print(json.dumps({cat: res}), flush=True)
    report["loadavg_end"] = round(os.getloadavg()[0], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.png:
        draw(figure, args.png, args.knowledge)


def draw(figure: dict, png: str, knowledge: str) -> None:
    """Per category: four queries, each with its true shape and the embedding's top-3 (light-field view 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kpengine.image.retrieval.lightfield import LightFieldSpec, shape_views
    from kpengine.image.tasks.shape_embedding import collection

    rows_total = sum(min(4, len(v[0])) for v in figure.values())
    fig, axes = plt.subplots(rows_total, 5, figsize=(9, 1.9 * rows_total))
    r = 0
    for cat, (images, d_emb, _, rows, space) in figure.items():
        shapes = {s.model_id: s for s in collection(knowledge, cat)[0]}
        spec = LightFieldSpec(azimuths=8, elevations=(25.0,), size=96)
        picks = np.linspace(0, len(images) - 1, min(4, len(images))).astype(int)
        for q in picks:
            order = np.argsort(d_emb[q])
            rank = int((d_emb[q] < d_emb[q, rows[q]]).sum()) + 1
            tiles = [(images[q], f"{cat} query"), (shapes[space.model_ids[rows[q]]], f"true (rank {rank})")]
            tiles += [(shapes[space.model_ids[k]], f"#{j + 1}" + (" = true" if k == rows[q] else "")) for j, k in
                      enumerate(order[:3])]  # fmt: skip
            for c, (item, title) in enumerate(tiles):
                ax = axes[r, c]
                img = item if isinstance(item, np.ndarray) else shape_views(item.points, spec)[1]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
            r += 1
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
