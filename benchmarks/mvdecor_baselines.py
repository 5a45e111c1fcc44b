"""The 3D self-supervised baseline of the MvDeCor table (issue 15): rows for benchmarks/mvdecor.py.

``benchmarks/mvdecor.py`` runs every method of the table on the same seeded draws, test split
and metrics; a method it does not know itself it takes from :data:`RUNNERS` here (same call,
same row format). This module adds:

``pointcontrast``
    PointNet-256 whose backbone starts from a ``kpengine train --task point_contrast`` run of the
    category (``--pretrain-3d RUN_DIR``, PointContrast-style pretraining on the train split
    without labels; docs/pointcontrast.md), then fine-tuned exactly as the ``pointnet`` row
    (``run_3d``: the correspondence task, STEPS_3D steps, Adam 1e-3 with cosine decay, scale
    augmentation 0.2) on the same k labelled shapes. Only the starting weights differ.

DGCNN from scratch is ``--methods dgcnn`` of benchmarks/mvdecor.py itself (``run_3d``).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/mvdecor.py \\
        --data ../shared/data/keypointnet --category bed --views runs/views/bed --pretrain runs/mv/bed-pre \\
        --pretrain-3d runs/pc/bed-pre --methods pointcontrast dgcnn --shots 5 10 --draws 5 --out runs/mvbase/bed
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of the methods here, on benchmarks/mvdecor.py's parser."""
    p.add_argument(
        "--pretrain-3d",
        default="",
        metavar="RUN_DIR",
        help="pointcontrast: a `kpengine train --task point_contrast` run of the category (PointNet-256)",
    )


def run_pointcontrast(args, method: str, k: int, draw: int, out: Path, steps: int = 0) -> dict:
    """The ``pointnet`` row's run from the PointContrast-pretrained backbone (``steps``: as
    ``run_3d``'s, the own-fit rule's rung)."""
    from mvdecor import run_3d  # benchmarks/ is on sys.path: benchmarks/mvdecor.py imported this module

    pretrain = getattr(args, "pretrain_3d", "")
    if not pretrain or not (Path(pretrain) / "best.pt").is_file():
        raise SystemExit(
            f"pointcontrast needs --pretrain-3d RUN_DIR, a point_contrast run with a best.pt (got {pretrain!r})"
        )
    return run_3d(args, "pointnet", k, draw, out, init=pretrain, steps=steps)


#: method name -> runner, looked up by benchmarks/mvdecor.py for names it does not define
RUNNERS = {"pointcontrast": run_pointcontrast}
