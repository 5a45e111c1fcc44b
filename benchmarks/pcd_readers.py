"""kpengine's hand-written PCD reader/writer (io/pcd.py) against pypcd4, side by side.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pcd_readers.py \
        --pcds ../shared/data/keypointnet/pcds/02808440 [--repeats 5] [--out bench_pcd.json]

Needs ``pip install pypcd4`` (measurement only; not a kpengine dependency). Measures, on the
official ASCII clouds of a folder (bathtub: 492 files of 2,048 points):

1. read time per file (median of ``--repeats`` passes over every file), both readers giving
   points (N, 3) float32 and packed rgb (N,) uint32;
2. agreement: the two readers' points and rgb bit-identical on every file, and both equal to
   the file's text parsed as float32;
3. round trip of the official files: load then save ASCII, bytes compared with the original;
   and load -> save -> load, values compared (float32-exact, rgb exact);
4. binary and binary_compressed (LZF) bodies: each library writes, both read, values compared;
   read time of a binary_compressed file of 2,048 points and of 200,000 points;
5. files outside the official set: what each reader does with a PCL-style ASCII cloud whose
   rgb is TYPE F (PCL writes it as the packed integer), a header without COUNT, a one-point
   ASCII file, and broken files (truncated, NaN): value, or the exception and its message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pypcd4

from kpengine.io.pcd import load_pcd, save_pcd


def ours(path: Path) -> tuple[np.ndarray, np.ndarray]:
    cloud = load_pcd(path)
    c = cloud.colors.astype(np.uint32)
    return cloud.points, (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def theirs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    pc = pypcd4.PointCloud.from_path(path)
    data = pc.pc_data
    xyz = np.stack([data["x"], data["y"], data["z"]], axis=-1).astype(np.float32)
    rgb = data["rgb"]
    rgb = rgb.view(np.uint32) if rgb.dtype == np.float32 else rgb.astype(np.uint32)
    return xyz, rgb


def text_values(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The file's numbers parsed independently of both readers (float32 of the decimal text)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("DATA")) + 1
    rows = [line.split() for line in lines[start:] if line.strip()]
    xyz = np.array([[np.float32(v) for v in r[:3]] for r in rows], np.float32)
    return xyz, np.array([int(r[3]) for r in rows], np.uint32)


def timed(fn, files: list[Path], repeats: int) -> float:  # noqa: ANN001
    per_pass = []
    for _ in range(repeats):
        t = time.perf_counter()
        for f in files:
            fn(f)
        per_pass.append((time.perf_counter() - t) / len(files))
    return statistics.median(per_pass)


def save_theirs(path: Path, xyz: np.ndarray, rgb: np.ndarray, encoding: str) -> None:
    pc = pypcd4.PointCloud.from_points(
        [xyz[:, 0], xyz[:, 1], xyz[:, 2], rgb], ("x", "y", "z", "rgb"), (np.float32, np.float32, np.float32, np.uint32)
    )
    pc.save(path, encoding=pypcd4.Encoding(encoding))


def same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return a[0].dtype == b[0].dtype == np.float32 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


HEAD = (
    "VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F {t}\n{count}WIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA ascii\n"
)
EDGE = {
    "ascii rgb TYPE F (PCL writes the packed integer)": (HEAD.format(t="F", count="COUNT 1 1 1 1\n", n=2)
                                                        + "0 0 0 1056816\n1 1 1 16711680\n", [0x102030, 0xFF0000]),
    "header without COUNT": (HEAD.format(t="U", count="", n=2) + "0 0 0 255\n1 1 1 65280\n", [255, 65280]),
    "one-point ascii file": (HEAD.format(t="U", count="COUNT 1 1 1 1\n", n=1) + "1 2 3 255\n", [255]),
    "truncated ascii (3 points announced, 1 given)": (HEAD.format(t="U", count="COUNT 1 1 1 1\n", n=3)
                                                      + "0 0 0 1\n", None),
    "NaN coordinate": (HEAD.format(t="U", count="COUNT 1 1 1 1\n", n=2) + "0 nan 0 1\n0 0 0 1\n", None),
}  # fmt: skip


def edge_cases() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.pcd"
        for name, (text, rgb) in EDGE.items():
            path.write_text(text)
            row = {}
            for who, fn in (("ours", ours), ("pypcd4", theirs)):
                try:
                    got = fn(path)[1].tolist()
                    if not isinstance(got, list):
                        row[who] = "no point axis (a 0-d array)"
                    else:
                        row[who] = "correct" if got == rgb else f"wrong rgb {got}" if rgb else f"accepted, rgb {got}"
                except Exception as exc:  # noqa: BLE001 - the point is to record what each raises
                    row[who] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcds", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    files = sorted(args.pcds.glob("*.pcd"))
    res: dict = {
        "files": len(files),
        "pypcd4": getattr(pypcd4, "__version__", "?"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    # 1. read speed
    res["read_ms_ours"] = 1e3 * timed(ours, files, args.repeats)
    res["read_ms_pypcd4"] = 1e3 * timed(theirs, files, args.repeats)
    # 2. agreement with each other and with the text
    res["agree_with_each_other"] = sum(same(ours(f), theirs(f)) for f in files)
    res["ours_equal_text"] = sum(same(ours(f), text_values(f)) for f in files)
    res["pypcd4_equal_text"] = sum(same(theirs(f), text_values(f)) for f in files)
    # 3. round trips of the official files
    bytes_ours = bytes_theirs = values_ours = values_theirs = 0
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.pcd", Path(tmp) / "b.pcd"
        for f in files:
            cloud = load_pcd(f)
            save_pcd(a, cloud)
            bytes_ours += a.read_bytes() == f.read_bytes()
            values_ours += same(ours(a), ours(f))
            pypcd4.PointCloud.from_path(f).save(b, encoding=pypcd4.Encoding.ASCII)
            bytes_theirs += b.read_bytes() == f.read_bytes()
            values_theirs += same(theirs(b), theirs(f))
        res.update(
            roundtrip_bytes_identical_ours=bytes_ours,
            roundtrip_bytes_identical_pypcd4=bytes_theirs,
            roundtrip_values_identical_ours=values_ours,
            roundtrip_values_identical_pypcd4=values_theirs,
        )
        # 4. binary and LZF bodies, written by each library, read by both
        cross = {}
        some = files[:50]
        for enc in ("binary", "binary_compressed"):
            ok = 0
            for f in some:
                truth = ours(f)
                save_theirs(b, *truth, enc)
                ok += same(ours(b), truth) and same(theirs(b), truth)
                if enc == "binary":
                    save_pcd(a, load_pcd(f), binary=True)
                    ok += same(ours(a), truth) and same(theirs(a), truth)
            cross[enc] = f"{ok}/{len(some) * (2 if enc == 'binary' else 1)}"
        res["binary_bodies_read_by_both"] = cross
        rng = np.random.default_rng(0)
        for n in (2048, 200_000):
            xyz = rng.normal(size=(n, 3)).astype(np.float32)
            rgb = rng.integers(0, 1 << 24, n).astype(np.uint32)
            rgb[: n // 2] = 0xFFFFFF  # runs, as in real clouds, so LZF has something to compress
            save_theirs(b, xyz, rgb, "binary_compressed")
            assert same(ours(b), (xyz, rgb)) and same(theirs(b), (xyz, rgb))
            reps = max(1, args.repeats if n < 10_000 else 1)
            res[f"lzf_read_ms_ours_{n}"] = 1e3 * timed(ours, [b], reps)
            res[f"lzf_read_ms_pypcd4_{n}"] = 1e3 * timed(theirs, [b], reps)
    res["edge_cases"] = edge_cases()
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
