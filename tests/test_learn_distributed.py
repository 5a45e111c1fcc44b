"""The same training command on two CPU processes under torchrun (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kpengine.learn.checkpoint import load_checkpoint


def test_torchrun_two_processes(sample_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "kpengine.cli.main", "train", "--task", "correspondence", "--data", str(sample_root),
        "--category", "chair", "--out", str(run), "--epochs", "2", "--threads", "1",
        "--backbone-args", '{"width": 32, "out_channels": 16}',
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((run / "history.json").read_text())
    assert history["summary"]["world_size"] == 2 and len(history["epochs"]) == 2
    state = load_checkpoint(run / "best.pt", task="correspondence", category="chair")
    assert not any(k.startswith("module.") for k in state["model"])  # rank 0 saved the plain model
    assert proc.stdout.count("best validation loss") == 1  # rank-0 logging only
