"""Carry the MvDeCor table's data to a GPU machine compactly, and rebuild it there (issue 15).

The GPU lease carries at most ~30 MB for this job; the KeypointNet bathtub + bed subset is
~50 MB of ASCII clouds and the 96 px view caches are ~75 MB of compressed arrays, and the GPU
machine has no OpenGL to re-render them. Both shrink without losing a bit that matters:

* **Clouds**: the official PCDs write every coordinate with 6 decimals and the colour as an
  integer, so (N, 3) int32 micro-units and (N,) uint32 colours rebuild each file's text exactly
  (``pack`` checks every file byte for byte and refuses to go on otherwise).
* **Views**: an oriented-surfel view (``kpengine.render.gl``, ``oriented=True``) is a function of
  its index map alone: each pixel shows one cloud point, and the shader's depth (the pixel ray
  meeting the point's disc plane), normal (the point's PCA normal turned towards the ray) and
  headlight-shaded colour are closed forms of that point, its colour and the camera. So only
  the (V, H, W) int16 index maps travel (lzma), and :func:`views_from_index` recomputes colour,
  normals and depth with the shader's float32 arithmetic. ``pack`` measures the largest
  difference to the GL render on every shape and records it (``pack_report.json``).

    # here: pack (needs the rendered view caches, e.g. from `kpengine train --task multiview-pretrain`)
    python benchmarks/mvdecor_gpu.py pack --data ../shared/data/keypointnet --categories bed bathtub \\
        --views runs/views --out .gpu/mv15/data
    # there: rebuild a KeypointNet root and view caches
    python benchmarks/mvdecor_gpu.py unpack --src .gpu/mv15/data --out /tmp/mv15
"""

from __future__ import annotations

import argparse
import json
import lzma
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

AMBIENT = 0.35  # GLSplatRenderer.render's default, which views.render_shape_views uses


def pcd_text(header: str, xyz_micro: np.ndarray, rgb: np.ndarray, patches: dict | None = None) -> str:
    """The ASCII PCD text of a cloud stored as micro-units: header lines then ``x y z rgb``;
    ``patches`` {data line: text} for the lines the micro-units do not spell (``-0.000000``)."""
    lines = [f"{_fmt(x)} {_fmt(y)} {_fmt(z)} {int(c)}" for (x, y, z), c in zip(xyz_micro.tolist(), rgb.tolist())]
    for i, text in (patches or {}).items():
        lines[int(i)] = text
    return header + "\n".join(lines) + "\n"


def pcd_patches(text: str, header: str, xyz_micro: np.ndarray, rgb: np.ndarray) -> dict[str, str]:
    """{data line: original text} where :func:`pcd_text` spells a line otherwise."""
    ours = pcd_text(header, xyz_micro, rgb)[len(header) :].splitlines()
    theirs = text[len(header) :].splitlines()
    return {str(i): b for i, (a, b) in enumerate(zip(ours, theirs)) if a != b}


def _fmt(v: int) -> str:
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 1_000_000}.{v % 1_000_000:06d}"


def parse_pcd(text: str) -> tuple[str, np.ndarray, np.ndarray]:
    """(header text up to and including the DATA line, (N, 3) int32 micro-units, (N,) uint32)."""
    head, _, body = text.partition("DATA ascii\n")
    rows = [r.split() for r in body.splitlines() if r.strip()]
    xyz = np.array([[round(float(a) * 1_000_000) for a in r[:3]] for r in rows], np.int64)
    rgb = np.array([int(r[3]) for r in rows], np.uint64)
    return head + "DATA ascii\n", xyz.astype(np.int32), rgb.astype(np.uint32)


def views_from_index(
    points: np.ndarray, colors: np.ndarray | None, index: np.ndarray, size: int, n_views: int, fov: float = 30.0
) -> dict[str, np.ndarray]:
    """Colour (V, H, W, 3) uint8, normals (V, H, W, 3) float32, depth (V, H, W) float32, intrinsics,
    R, t of the surfel views whose index maps are ``index`` (V, H, W) (-1 off the object), as the
    oriented-surfel shader of ``kpengine.render.gl`` computes them (float32, headlight, ambient 0.35)."""
    from kpengine.image.multiview.views import view_cameras
    from kpengine.render.splat import estimate_normals

    cams = view_cameras(np.asarray(points, np.float64), size, n_views, fov)
    points = np.asarray(points, np.float64)
    normals = estimate_normals(points).astype(np.float32)
    base = (np.full((len(points), 3), 0.7) if colors is None else np.asarray(colors) / 255.0).astype(np.float32)
    p32 = points.astype(np.float32)
    k = cams[0].intrinsics
    fx, fy, cx, cy = (np.float32(v) for v in (k.fx, k.fy, k.cx, k.cy))
    h = w = size
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    ray = np.stack([(jj - cx) / fx, (ii - cy) / fy, np.ones_like(jj)], axis=-1)  # (H, W, 3)
    color = np.full((n_views, h, w, 3), 255, np.uint8)
    nrm = np.zeros((n_views, h, w, 3), np.float32)
    depth = np.zeros((n_views, h, w), np.float32)
    for v, cam in enumerate(cams):
        m = index[v] >= 0
        idx = index[v][m].astype(np.int64)
        R = cam.R.astype(np.float32)
        t = cam.t.astype(np.float32)
        r = ray[m]
        centre = p32[idx] @ R.T + t
        ncam = normals[idx] @ R.T
        z = (centre * ncam).sum(1) / (r * ncam).sum(1)
        d = r @ R  # R^T ray
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        n = normals[idx]
        n = np.where(((n * d).sum(1) > 0)[:, None], -n, n)
        lam = np.abs((n * d).sum(1))
        shaded = np.clip(base[idx] * (np.float32(AMBIENT) + np.float32(1 - AMBIENT) * lam)[:, None], 0, 1)
        color[v][m] = np.round(shaded * 255).astype(np.uint8)
        nrm[v][m] = n
        depth[v][m] = z
    return {
        "color": color,
        "normals": nrm,
        "depth": depth,
        "intrinsics": np.array([k.fx, k.fy, k.cx, k.cy]),
        "R": np.stack([c.R for c in cams]),
        "t": np.stack([c.t for c in cams]),
    }


def pack(args) -> None:
    from kpengine.categories import resolve_category
    from kpengine.io.multiview import load_shape_views, load_view_meta
    from kpengine.io.pcd import load_pcd

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    report: dict = {}
    for name in args.categories:
        cat = resolve_category(name)
        synset = cat.synset
        meta = load_view_meta(Path(args.views) / cat.name)
        ids = sorted(p.stem for p in (data / "pcds" / synset).glob("*.pcd"))
        headers, xyz, rgb, index, patches = [], [], [], [], []
        worst = {"color": 0, "normals": 0.0, "depth": 0.0, "colour_pixels_off": 0, "pixels": 0}
        for m in ids:
            text = (data / "pcds" / synset / f"{m}.pcd").read_text()
            head, x, c = parse_pcd(text)
            patch = pcd_patches(text, head, x, c)
            patches.append(patch)
            if pcd_text(head, x, c, patch) != text:
                raise SystemExit(f"{synset}/{m}.pcd does not rebuild byte for byte from micro-units")
            headers.append(head)
            xyz.append(x)
            rgb.append(c)
            sv = load_shape_views(Path(args.views) / cat.name / f"{m}.npz")
            index.append(sv.index.astype(np.int16))
            cloud = load_pcd(data / "pcds" / synset / f"{m}.pcd")  # as the renderer got it: float32
            re = views_from_index(cloud.points, cloud.colors, sv.index, meta["size"], meta["n_views"], meta["fov"])
            fg = sv.mask
            dc = np.abs(re["color"].astype(int) - sv.color.astype(int))
            worst["color"] = max(worst["color"], int(dc.max()))
            worst["colour_pixels_off"] += int((dc.max(-1) > 0).sum())
            worst["pixels"] += int(fg.sum())
            worst["normals"] = max(worst["normals"], float(np.abs(re["normals"] - sv.normals.astype(np.float32)).max()))
            worst["depth"] = max(worst["depth"], float(np.abs(re["depth"] - sv.depth).max()))
            for key in ("R", "t", "intrinsics"):
                if not np.allclose(re[key], getattr(sv, key), atol=1e-9):
                    raise SystemExit(f"{m}: cameras differ from the cache's ({key})")
        report[cat.name] = {"shapes": len(ids), "meta": meta, "largest_difference_to_gl": worst}
        clouds = {"ids": ids, "header": headers, "patches": patches, "n_points": int(xyz[0].shape[0])}
        (out / f"{cat.name}_clouds.json").write_text(json.dumps(clouds))
        (out / f"{cat.name}_xyz.xz").write_bytes(lzma.compress(np.stack(xyz).astype("<i4").tobytes(), preset=6))
        (out / f"{cat.name}_rgb.xz").write_bytes(lzma.compress(np.stack(rgb).astype("<u4").tobytes(), preset=6))
        (out / f"{cat.name}_index.xz").write_bytes(lzma.compress(np.stack(index).astype("<i2").tobytes(), preset=6))
        print(cat.name, json.dumps(report[cat.name]), flush=True)
        raw = (data / "annotations" / f"{cat.name}.json").read_bytes()  # byte for byte
        (out / f"{cat.name}_annotations.json.xz").write_bytes(lzma.compress(raw, preset=9))
    synsets = [resolve_category(n).synset for n in args.categories]
    for split in ("train", "val", "test"):
        lines = [
            ln for ln in (data / "splits" / f"{split}.txt").read_text().splitlines() if ln.split("-")[0] in synsets
        ]
        (out / f"split_{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "pack_report.json").write_text(json.dumps(report, indent=1) + "\n")


def _rebuild(job: tuple) -> None:
    from kpengine.io.multiview import ShapeViews, save_shape_views
    from kpengine.io.pcd import load_pcd

    root, m, pcd, index, size, n_views, fov = job
    cloud = load_pcd(pcd)
    re = views_from_index(cloud.points, cloud.colors, index, size, n_views, fov)
    save_shape_views(Path(root) / f"{m}.npz", ShapeViews(model_id=m, index=index, **re))


def unpack(args) -> None:
    from kpengine.categories import resolve_category
    from kpengine.io.multiview import save_view_meta

    t0 = time.perf_counter()
    src, out = Path(args.src), Path(args.out)
    kp = out / "kp"
    (kp / "splits").mkdir(parents=True, exist_ok=True)
    (kp / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        (kp / "splits" / f"{split}.txt").write_text((src / f"split_{split}.txt").read_text())
    jobs = []
    for f in sorted(src.glob("*_clouds.json")):
        name = f.name[: -len("_clouds.json")]
        cat = resolve_category(name)
        report = json.loads((src / "pack_report.json").read_text())[cat.name]
        meta = report["meta"]
        (kp / "annotations" / f"{cat.name}.json").write_bytes(
            lzma.decompress((src / f"{cat.name}_annotations.json.xz").read_bytes())
        )
        clouds = json.loads(f.read_text())
        ids, headers, patches, n_points = clouds["ids"], clouds["header"], clouds["patches"], clouds["n_points"]
        xyz = np.frombuffer(lzma.decompress((src / f"{cat.name}_xyz.xz").read_bytes()), "<i4").reshape(
            len(ids), n_points, 3
        )
        rgb = np.frombuffer(lzma.decompress((src / f"{cat.name}_rgb.xz").read_bytes()), "<u4").reshape(
            len(ids), n_points
        )
        index = np.frombuffer(lzma.decompress((src / f"{cat.name}_index.xz").read_bytes()), "<i2")
        with_views = clouds.get("index_ids", ids)  # a pruned pack has views of some shapes only
        index = index.reshape(len(with_views), meta["n_views"], meta["size"], meta["size"])
        row_of = {m: i for i, m in enumerate(with_views)}
        pdir = kp / "pcds" / cat.synset
        pdir.mkdir(parents=True, exist_ok=True)
        vdir = out / "views" / cat.name
        vdir.mkdir(parents=True, exist_ok=True)
        save_view_meta(vdir, meta)
        for i, m in enumerate(ids):
            (pdir / f"{m}.pcd").write_text(pcd_text(headers[i], xyz[i], rgb[i], patches[i]))
            if m in row_of:
                v = index[row_of[m]]
                jobs.append((str(vdir), m, str(pdir / f"{m}.pcd"), v, meta["size"], meta["n_views"], meta["fov"]))
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(_rebuild, jobs, chunksize=8))
    print(f"unpacked {len(jobs)} shapes into {out} in {time.perf_counter() - t0:.1f} s", flush=True)


def prune(args) -> None:
    """A copy of a pack whose views are only those of the test split and of the train shapes some
    (k, draw) of ``--shots`` x ``--draws`` labels: what the few-shot runs read once the
    pretrainings are done (a second GPU call). Every cloud stays, so the train split, and with
    it every draw (``draw_shots`` over the sorted train ids), is the same as the full pack's."""
    import shutil

    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.data.shots import draw_shots

    src, out = Path(args.src), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = json.loads((src / "pack_report.json").read_text())
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(("_index.xz", "_clouds.json")):
            shutil.copy2(f, out / f.name)
    for name, rep_ in report.items():
        meta = rep_["meta"]
        clouds = json.loads((src / f"{name}_clouds.json").read_text())
        ids = clouds.get("index_ids", clouds["ids"])
        train = KeypointNetDataset(args.data, name, "train").model_ids
        keep = set(KeypointNetDataset(args.data, name, "test").model_ids)
        for k in args.shots:
            for d in args.draws:
                keep |= set(draw_shots(train, k, d))
        index = np.frombuffer(lzma.decompress((src / f"{name}_index.xz").read_bytes()), "<i2")
        index = index.reshape(len(ids), meta["n_views"], meta["size"], meta["size"])
        kept = [m for m in ids if m in keep]
        rows = [i for i, m in enumerate(ids) if m in keep]
        (out / f"{name}_index.xz").write_bytes(lzma.compress(np.ascontiguousarray(index[rows]).tobytes(), preset=6))
        (out / f"{name}_clouds.json").write_text(json.dumps({**clouds, "index_ids": kept}))
        print(f"{name}: views of {len(kept)} of {len(ids)} shapes kept", flush=True)


# ---------------------------------------------------------------------------------------------
# the GPU job: pretrainings, then the few-shot cells' own-fit rungs, as many processes at once as the cores allow

CATEGORIES = ("bed", "bathtub")
SHOTS = (5, 10, 30)
DRAWS = (0, 1, 2, 3, 4)
#: the 2D rows with the distance head (``+dist``: the task's default, which the third pass ran)
METHODS = ("mvdecor+dist", "scratch+dist", "pointcontrast", "pointnet", "dgcnn")
#: a rung job's wall seconds on the GPU machine, guessed as OVERHEAD[kind][k] + steps x PER_STEP[kind][k]
#: (the first call, 10 jobs at once, load 12-19: 2D 600 steps trained in 21-33 s, 45-73 s a job; point
#: networks 200 steps in 4-10 s, 23-55 s a job; the import and the scoring are the rest), then scaled by
#: the largest ratio of seen to guessed wall of the kind
OVERHEAD = {"2d": {5: 35, 10: 35, 30: 45}, "pointnet": {5: 32, 10: 27, 30: 22}, "dgcnn": {5: 30, 10: 25, 30: 25}}
PER_STEP = {"2d": {5: 0.05, 10: 0.05, 30: 0.05}, "pointnet": {5: 0.045, 10: 0.045, 30: 0.045}}
PER_STEP["dgcnn"] = {5: 0.05, 10: 0.05, 30: 0.08}

Cell = tuple  # (category, method, k, draw)


def _kind(method: str) -> str:
    if method.startswith(("mvdecor", "scratch")):
        return "2d"
    return "dgcnn" if method == "dgcnn" else "pointnet"


def known_rungs(rows: list[dict]) -> dict[Cell, dict[int, float]]:
    """{(category, method, k, draw): {steps: own PCK@0.05}} of the complete few-shot rows: each is a
    rung of the own-fit rule (benchmarks/mvdecor.py ``find_rung`` takes the same rows: 2D rows with
    the distance head and the ball decoder, not cut by a time limit)."""
    from mvdecor import complete

    out: dict[Cell, dict[int, float]] = {}
    for r in rows:
        if not r.get("k") or not r.get("steps") or not r.get("train_pck") or not complete(r):
            continue
        if _kind(r["method"]) == "2d" and (r.get("distance_weight", 1.0) != 1.0 or r.get("kernel", "ball") != "ball"):
            continue
        out.setdefault((r["category"], r["method"], r["k"], r["draw"]), {})[int(r["steps"])] = float(r["train_pck"][1])
    return out


class RungPlanner:
    """Which rungs of the own-fit rule (benchmarks/mvdecor.py ``next_rung``) a GPU call trains, in
    which order. Every rung is a fresh run of its own (the cosine schedule depends on the total), so
    the rungs of one cell can run at once: the next rung of a 2D cell starts beside the current one
    when, on the other draws of its category, method and k, the current rung fell short at least half
    the time ("speculation", a guess from own-shape fits only); a speculative rung the rule turns out
    not to need is stopped. Which rung the row takes is the rule's alone (``--rungs-only`` afterwards).

    Priority (the sixth pass's order): (0) the k = 5 and 10 cells of the 2D rows, and of DGCNN where it
    has no row yet (the missing draws); (1) the other point cells of k = 5 and 10 (their rungs above
    200 steps, PointNet and PointContrast draw 4); (2) the point cells of k = 30; (3) the 2D cells of
    k = 30. Within a class the 2D rows first (the longest chains), then by draw, k, method, category."""

    def __init__(
        self, cells: list[Cell], known: dict[Cell, dict[int, float]], level: float, doublings: int, steps_3d: int
    ) -> None:
        self.level, self.doublings, self.steps_3d = level, doublings, steps_3d
        self.had_rows = {c for c in cells if known.get(c)}
        self.known = {c: dict(known.get(c, {})) for c in cells}
        self.cells = sorted(cells, key=self.priority)
        self.running: dict[Cell, set[int]] = {}
        self.failed: set = set()

    def start(self, cell: Cell) -> int:
        from kpengine.image.tasks.multiview_fewshot import default_steps

        return default_steps(cell[2]) if _kind(cell[1]) == "2d" else self.steps_3d

    def next_steps(self, cell: Cell) -> int | None:
        from mvdecor import next_rung

        return next_rung(self.known[cell], self.start(cell), self.level, self.doublings)

    def priority(self, cell: Cell) -> tuple:
        cat, method, k, draw = cell
        two_d = _kind(method) == "2d"
        if k != 30:
            cls = 0 if two_d or (method == "dgcnn" and cell not in self.had_rows) else 1
        else:
            cls = 3 if two_d else 2
        return (cls, 0 if two_d else 1, draw, SHOTS.index(k), METHODS.index(method), CATEGORIES.index(cat))

    def speculate(self, cell: Cell, steps: int) -> bool:
        """Start the rung after ``steps`` now too: a 2D cell, within the cap, and ``steps`` fell
        short on at least half of the other draws that trained it."""
        if _kind(cell[1]) != "2d" or steps * 2 > self.start(cell) * 2**self.doublings:
            return False
        fits = [kn[steps] for c, kn in self.known.items() if c[:3] == cell[:3] and c != cell and steps in kn]
        return bool(fits) and sum(f < self.level for f in fits) * 2 >= len(fits)

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if c not in self.failed and self.next_steps(c) is not None]

    def candidates(self) -> list[tuple[Cell, int]]:
        """(cell, steps) of the rungs that may start now, best first."""
        out = []
        for cell in self.pending():
            steps, running = self.next_steps(cell), self.running.get(cell, set())
            if steps not in running:
                out.append((cell, steps))
            if self.speculate(cell, steps) and steps * 2 not in running and steps * 2 not in self.known[cell]:
                out.append((cell, steps * 2))
        return out

    def started(self, cell: Cell, steps: int) -> None:
        self.running.setdefault(cell, set()).add(steps)

    def finished(self, cell: Cell, steps: int, fit: float | None) -> list[int]:
        """Record a rung's own fit (None: it failed, and the cell is dropped); the running rungs of
        the cell that are no longer needed (to stop) are returned."""
        self.running.get(cell, set()).discard(steps)
        if fit is None:
            self.failed.add(cell)
        else:
            self.known[cell][steps] = fit
        if cell in self.failed or self.next_steps(cell) is None:
            return sorted(self.running.pop(cell, set()))
        return []


def estimate(method: str, k: int, steps: int, scale: dict[str, float] | None = None) -> float:
    kind = _kind(method)
    return (OVERHEAD[kind][k] + steps * PER_STEP[kind][k]) * (scale or {}).get(kind, 1.0)


def queue(args) -> None:
    """Unpack, start the pretrainings (or take a first call's, ``--resume``), train the few-shot
    cells' own-fit rungs (``RungPlanner``) while the deadline allows, then write OUT/results.jsonl
    (one row per rung trained), status.json, the logs and results.tar.gz. The rows of the table are
    the rule's choice among these and the ``--prior`` rungs: ``benchmarks/mvdecor.py --steps-rule
    own-fit --rungs-only --rungs PRIOR... OUT/results.jsonl``."""
    import os
    import subprocess
    import sys
    import tarfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mvdecor import STEPS_3D

    from kpengine.data.shots import draw_shots
    from kpengine.image.tasks.multiview_fewshot import OWN_FIT_DOUBLINGS, OWN_FIT_LEVEL

    t0 = time.monotonic()
    deadline = t0 + args.budget
    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, logs, jobs_dir = root / "runs", out / "logs", root / "jobs"
    for d in (runs, logs, jobs_dir):
        d.mkdir(parents=True, exist_ok=True)
    status: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "device": device, "jobs": []}

    def log(msg: str) -> None:
        line = f"[{time.monotonic() - t0:6.1f} s] {msg}"
        print(line, flush=True)
        with (logs / "queue.log").open("a") as fh:
            fh.write(line + "\n")

    unpack(argparse.Namespace(src=args.src, out=str(root), workers=args.cores))
    log("unpacked")
    resume = Path(args.resume) if args.resume else None
    kp = root / "kp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "kpengine.cli.main", "train"]
    t_pre = args.pretrain_seconds
    pre = {
        "mv_bathtub_pre": (
            [
                *cli,
                "--task",
                "multiview-pretrain",
                "--data",
                str(kp),
                "--category",
                "bathtub",
                "--views",
                str(root / "views" / "bathtub"),
                "--epochs",
                str(args.mv_epochs),
                "--device",
                device,
                "--threads",
                "2",
                "--time-limit",
                str(t_pre),
                "--config",
                json.dumps({"workers": 3, **({"pretrain_splits": ["val"]} if smoke else {})}),
            ],
            3.0,
        ),
    }
    for cat, epochs in (("bathtub", args.pc_epochs_bathtub), ("bed", args.pc_epochs_bed)):
        pre[f"pc_{cat}_pre"] = (
            [
                *cli,
                "--task",
                "point-contrast",
                "--data",
                str(kp),
                "--category",
                cat,
                "--backbone",
                "pointnet",
                "--backbone-args",
                '{"width": 256}',
                "--lr-schedule",
                "cosine",
                "--epochs",
                str(epochs),
                "--device",
                device,
                "--time-limit",
                str(args.pc_seconds),
                "--config",
                json.dumps({"workers": 1, **({"train_split": "val"} if smoke else {})}),
            ],
            1.5,
        )
    running: dict[str, tuple] = {}
    for name, (cmd, cores) in pre.items():
        if resume is not None:  # a later call: the first call's pretrainings, carried
            continue
        fh = (logs / f"{name}.log").open("w")
        running[name] = (
            subprocess.Popen([*cmd, "--out", str(runs / name)], stdout=fh, stderr=subprocess.STDOUT, env=env),
            time.monotonic(),
            cores,
            None,
        )
        log(f"start {name}")
    ready = {"bed_mv": True, "bathtub_mv": False, "bed_pc": False, "bathtub_pc": False}
    pretrain_path = {"bed": str(Path(args.src) / "bed_pre"), "bathtub": str(runs / "mv_bathtub_pre")}
    pc_root = runs
    prior: list[dict] = []
    if resume is not None:
        pretrain_path["bathtub"] = str(resume / "mv_bathtub_pre")
        pc_root = resume
        for key, name in (("bathtub_mv", "mv_bathtub_pre"), ("bed_pc", "pc_bed_pre"), ("bathtub_pc", "pc_bathtub_pre")):
            ready[key] = (resume / name / "best.pt").is_file()
        if (resume / "results.jsonl").is_file():
            prior += [json.loads(x) for x in (resume / "results.jsonl").read_text().splitlines() if x.strip()]
    for f in args.prior or []:
        prior += [json.loads(x) for x in Path(f).read_text().splitlines() if x.strip()]
    known = {} if smoke else known_rungs(prior)
    log(f"{len(prior)} prior rows, rungs of {len(known)} cells known; pretrainings ready {ready}")
    draws = DRAWS[:1] if smoke else DRAWS
    shots = SHOTS[:1] if smoke else SHOTS
    methods = args.only or METHODS
    # the 2D cells whose k shapes' views travelled (a pruned pack keeps only some draws' shapes)
    viewed = {}
    for cat in CATEGORIES:
        clouds = json.loads((Path(args.src) / f"{cat}_clouds.json").read_text())
        viewed[cat] = set(clouds.get("index_ids", clouds["ids"]))
    from kpengine.data.dataset import KeypointNetDataset

    train_ids = {cat: KeypointNetDataset(kp, cat, "train", workers=args.cores).model_ids for cat in CATEGORIES}
    cells, no_views = [], []
    for c in CATEGORIES:
        for m in methods:
            for k in shots:
                for d in draws:
                    if _kind(m) == "2d" and not set(draw_shots(train_ids[c], k, d)) <= viewed[c]:
                        no_views.append(f"{c}-{m}-k{k}-d{d}")
                        continue
                    cells.append((c, m, k, d))
    steps_3d = 2 if smoke else STEPS_3D
    plan = RungPlanner(cells, known, args.fit_level or OWN_FIT_LEVEL, OWN_FIT_DOUBLINGS, steps_3d)
    if smoke:  # a few steps: every rung is "fitted" only if it is; the ladder is 4 -> 8 -> 16 (2D)
        plan.start = lambda cell: 4 if _kind(cell[1]) == "2d" else 2  # type: ignore[method-assign]
    status["no_views"] = no_views
    todo0 = plan.pending()
    log(f"{len(todo0)} cells to decide, {len(cells) - len(todo0)} decided already; no views carried: {len(no_views)}")
    status["cells_to_decide"] = ["-".join(map(str, c)) for c in todo0]
    scale: dict[str, float] = {}

    def needs(cell) -> str | None:
        cat, method, _, _ = cell
        if method.startswith("mvdecor"):
            return f"{cat}_mv"
        return f"{cat}_pc" if method == "pointcontrast" else None

    def row_of(job_out: Path) -> dict | None:
        rows = (
            [json.loads(x) for x in (job_out / "results.jsonl").read_text().splitlines() if x.strip()]
            if (job_out / "results.jsonl").is_file()
            else []
        )
        return rows[-1] if rows else None

    while True:
        now = time.monotonic()
        for name, (proc, start, _cores, job) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                if now > deadline - 8:
                    proc.kill()
                    log(f"killed {name} at the deadline")
                    status["jobs"].append({"name": name, "rc": "killed", "seconds": round(now - start, 1)})
                    running.pop(name)
                continue
            running.pop(name)
            status["jobs"].append({"name": name, "rc": rc, "seconds": round(now - start, 1)})
            if job is None:  # a pretraining
                log(f"done {name} rc {rc} in {now - start:.0f} s")
                key = name.replace("_pre", "").replace("mv_", "").replace("pc_", "")
                kind = "mv" if name.startswith("mv_") else "pc"
                ready[f"{key}_{kind}"] = rc == 0 and (runs / name / "best.pt").is_file()
                if not ready[f"{key}_{kind}"]:
                    log(f"{name} failed: its cells are dropped")
                    plan.failed |= {c for c in plan.cells if needs(c) == f"{key}_{kind}"}
                continue
            cell, steps = job
            row = row_of(jobs_dir / name) if rc == 0 else None
            from mvdecor import complete

            fit = float(row["train_pck"][1]) if row and row.get("train_pck") and complete(row) else None
            log(f"done {name} rc {rc} in {now - start:.0f} s, own PCK@0.05 {fit}")
            if fit is not None:
                kind = _kind(cell[1])
                scale[kind] = max(scale.get(kind, 1.0), (now - start) / estimate(cell[1], cell[2], steps))
            for s in plan.finished(cell, steps, fit):
                other = f"{cell[0]}-{cell[1]}-k{cell[2]}-d{cell[3]}-s{s}"
                if other in running:
                    running.pop(other)[0].kill()
                    status["jobs"].append({"name": other, "rc": "stopped: not needed"})
                    log(f"stopped {other}: the rule does not need it")
        busy = sum(c for _, _, c, _ in running.values())
        while busy + 1 <= args.cores:
            left = deadline - time.monotonic() - 10
            pick = next(
                (
                    (c, s)
                    for c, s in plan.candidates()
                    if (needs(c) is None or ready[needs(c)]) and estimate(c[1], c[2], s, scale) * 1.1 < left
                ),
                None,
            )
            if pick is None:
                break
            cell, steps = pick
            cat, method, k, draw = cell
            name = f"{cat}-{method}-k{k}-d{draw}-s{steps}"
            cmd = [
                sys.executable,
                "benchmarks/mvdecor.py",
                "--data",
                str(kp),
                "--category",
                cat,
                "--views",
                str(root / "views" / cat),
                "--pretrain",
                pretrain_path[cat],
                "--pretrain-3d",
                str(pc_root / f"pc_{cat}_pre"),
                "--methods",
                method,
                "--shots",
                str(k),
                "--draw-list",
                str(draw),
                "--out",
                str(jobs_dir / name),
                "--device",
                device,
                "--fusions",
                "mean",
                "--steps-2d" if _kind(method) == "2d" else "--steps-3d",
                str(steps),
                "--time-limit",
                str(max(5, int(left - 35))),  # the rest of a job: inference and scoring
            ]
            fh = (logs / f"{name}.log").open("w")
            running[name] = (
                subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env),
                time.monotonic(),
                1.0,
                (cell, steps),
            )
            plan.started(cell, steps)
            busy += 1
            log(f"start {name} (estimate {estimate(method, k, steps, scale):.0f} s)")
        if not running:
            left_cells = plan.pending()
            if left_cells:
                log(f"{len(left_cells)} cells undecided: their next rung does not fit the time left or cannot run")
            break
        time.sleep(1.0)
    status["undecided"] = ["-".join(map(str, c)) for c in plan.pending()]
    status["failed"] = ["-".join(map(str, c)) for c in sorted(plan.failed)]
    status["seconds"] = round(time.monotonic() - t0, 1)
    rows = [line for f in sorted(jobs_dir.glob("*/results.jsonl")) for line in f.read_text().splitlines() if line]
    (out / "results.jsonl").write_text("\n".join(rows) + ("\n" if rows else ""))
    (out / "status.json").write_text(json.dumps(status, indent=1) + "\n")
    log(f"{len(rows)} rung rows; {len(status['undecided'])} cells undecided")
    with tarfile.open(out / "results.tar.gz", "w:gz") as tar:
        tar.add(out / "results.jsonl", "results.jsonl")
        tar.add(out / "status.json", "status.json")
        tar.add(logs, "logs")
        for name in pre:
            for f in ("best.pt", "config.json", "history.json"):
                if resume is None and (runs / name / f).is_file():
                    path = _without_optimizer(runs / name / f) if f == "best.pt" else runs / name / f
                    tar.add(path, f"{name}/{f}")
        for f in sorted(jobs_dir.glob("*/*/history.json")):
            tar.add(f, f"histories/{f.parent.parent.name}/{f.parent.name}.json")
    log(f"results.tar.gz {(out / 'results.tar.gz').stat().st_size / 1e6:.1f} MB")


def _without_optimizer(path: Path) -> Path:
    """A copy of a checkpoint without its optimizer state (a third of the size for PointNet's
    Adam moments): what the few-shot runs load is the model; such a copy cannot --resume."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    state.pop("optimizer", None)
    out = path.with_name("best_stripped.pt")
    torch.save(state, out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--data", required=True)
    a.add_argument("--categories", nargs="+", default=["bed", "bathtub"])
    a.add_argument("--views", required=True, help="directory holding one view cache per category")
    a.add_argument("--out", required=True)
    b = sub.add_parser("unpack")
    b.add_argument("--src", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--workers", type=int, default=4)
    c = sub.add_parser("queue", help="the GPU job (docs/benchmarks.md, MvDeCor on a GPU)")
    c.add_argument("--src", required=True, help="the packed data (pack --out), with bed_pre/ beside")
    c.add_argument("--root", required=True, help="scratch directory for the unpacked data and the runs")
    c.add_argument("--out", required=True, help="results.tar.gz and logs go here")
    c.add_argument("--cores", type=int, default=10)
    c.add_argument("--budget", type=float, default=470, help="seconds from start to results.tar.gz")
    c.add_argument("--pretrain-seconds", type=float, default=180)
    c.add_argument("--mv-epochs", type=int, default=50)
    c.add_argument("--pc-seconds", type=float, default=150)
    c.add_argument("--pc-epochs-bathtub", type=int, default=40)
    c.add_argument("--pc-epochs-bed", type=int, default=100)
    c.add_argument(
        "--resume",
        metavar="DIR",
        help="a first call's pretraining runs (and results.jsonl, read as --prior): reuse its pretrainings",
    )
    c.add_argument("--only", nargs="+", choices=METHODS, help="run these methods' cells only")
    c.add_argument(
        "--prior",
        nargs="+",
        metavar="RESULTS",
        help="results.jsonl files whose complete rows are rungs already trained (not trained again)",
    )
    c.add_argument("--fit-level", type=float, default=0.0, help="the own-fit level (0: the task's, 0.97)")
    c.add_argument(
        "--smoke",
        action="store_true",
        help="CPU, draw 0 and k = 5 only, rungs of 4 -> 8 -> 16 steps (2D) and 2 -> 4 -> 8 (point), no prior rungs",
    )
    d = sub.add_parser("prune", help="a pack with the views the few-shot runs read only (prune's docstring)")
    d.add_argument("--src", required=True)
    d.add_argument("--data", required=True, help="the KeypointNet root the pack was made from (its splits)")
    d.add_argument("--out", required=True)
    d.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    d.add_argument("--draws", type=int, nargs="+", default=list(DRAWS))
    args = p.parse_args()
    {"pack": pack, "unpack": unpack, "queue": queue, "prune": prune}[args.cmd](args)


if __name__ == "__main__":
    main()
