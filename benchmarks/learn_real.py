"""Train one task/backbone on a real KeypointNet category, then predict and score its test split.

    .venv/bin/python benchmarks/learn_real.py correspondence pointnet bathtub 8 runs/bathtub-corr-pointnet256 \
        '{"width": 256}' '{"lr_schedule": "cosine", "scale_augment": 0.2}'

The optional last argument sets other TrainConfig fields. Saliency runs are scored with the
official decision and with the NMS decision chosen on the validation split.
Resumable (an existing run directory continues from last.pt). Prints the training summary and
the evaluation (PCK plain and symmetry-best, or saliency mIoU/mAP in the official mode) as JSON
lines, with timings and the load average, and writes them to RUN_DIR/bench.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from shared_data import SHARED_DATA  # a sibling script

from kpengine.io.atomic import write_json
from kpengine.learn.benchmark import evaluate_run
from kpengine.learn.config import TrainConfig
from kpengine.learn.train import train

DATA = str(SHARED_DATA)


def main(argv: list[str]) -> None:
    task, backbone, category, epochs, out = argv[:5]
    kwargs = json.loads(argv[5]) if len(argv) > 5 else {}
    settings = json.loads(argv[6]) if len(argv) > 6 else {}
    data = str(Path(DATA) / "keypointnet")
    cfg = TrainConfig(
        task=task,
        data=data,
        category=category,
        backbone=backbone,
        epochs=int(epochs),
        backbone_kwargs=kwargs,
        **settings,
    )
    summary = train(cfg, out, resume=True, progress=True)
    print(json.dumps(summary), flush=True)
    result = evaluate_run(out, data, category)
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result), flush=True)
    write_json(Path(out) / "bench.json", {"train": summary, "eval": result}, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
