"""``kpengine retrieve``: the knowledge-base shapes nearest to a photo in a joint shape-image embedding."""

from __future__ import annotations

import argparse

RETRIEVE_HELP = """\
Rank the annotated shapes of a knowledge base for a photo by the joint shape-image embedding
(Li, Su et al.): the image-embedding run regresses the photo into the shape space of a
shape-embedding run (light-field HoG distances mapped by Sammon MDS to 128-d), and the nearest
shapes come first. The photo is taken as an object-centred crop (the paper's assumption); --mask
tightens the crop to the mask's box. Writes JSON:
{"run", "image", "category", "candidates", "shapes": [{"rank", "model_id", "distance", "split"}]}.
Nothing is written when the run is of another task or category or the photo is bad.

Train the two runs first (render sets from `kpengine render-views`):
  kpengine train --task shape-embedding --data ../shared/data/keypointnet --category bathtub \\
      --out runs/shapes --epochs 20 --batch-size 1 --lr 0.02 --lr-schedule cosine
  kpengine train --task image-embedding --data renders/train --category bathtub --out runs/images \\
      --epochs 20 --batch-size 64 --lr 2e-3 --lr-schedule cosine \\
      --config '{"shape_space": "runs/shapes", "val_data": "renders/val"}'

Example:
  kpengine retrieve --run runs/images --image tub.png --knowledge ../shared/data/keypointnet --top 5 --out R.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrieve", help="photo -> nearest annotated shapes by the joint embedding", description=RETRIEVE_HELP
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="an image-embedding run")
    p.add_argument("--image", required=True, metavar="PHOTO")
    p.add_argument("--mask", metavar="MASK", help="object mask, same size as the photo (crops to its box)")
    p.add_argument("--knowledge", required=True, metavar="ROOT", help="annotated shapes (KeypointNet layout)")
    p.add_argument("--category", metavar="NAME", help="refuse a run not trained on this category")
    p.add_argument("--top", type=int, default=5, metavar="K", help="shapes to list (default 5)")
    p.add_argument("--out", required=True, metavar="R.json", help="- for stdout")
    p.set_defaults(func=cmd_retrieve)


def cmd_retrieve(args: argparse.Namespace) -> int:
    import torch

    from kpengine.categories import resolve_category
    from kpengine.cli.common import check_output, emit_json
    from kpengine.image.retrieval.retrieve import retrieve

    torch.set_num_threads(1)
    check_output(args.out)
    category = resolve_category(args.category).name if args.category else None
    result = retrieve(args.run, args.image, args.knowledge, args.top, mask=args.mask, category=category)
    emit_json(result, args.out)
    if args.out != "-":
        best = result["shapes"][0]
        print(
            f"{len(result['shapes'])} of {result['candidates']} {result['category']} shapes -> {args.out} "
            f"(nearest {best['model_id']}, distance {best['distance']:.3f})"
        )
    return 0
