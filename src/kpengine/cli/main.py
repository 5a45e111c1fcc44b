"""Entry point of the ``kpengine`` command.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` on them. Heavy imports (torch, trimesh) happen inside the
command functions so that ``kpengine --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from kpengine import __version__
from kpengine.errors import DataError

COMMAND_MODULES = (
    "kpengine.cli.data",
    "kpengine.cli.evaluate",
    "kpengine.cli.render",
    "kpengine.cli.aggregate",
    "kpengine.cli.store",
    "kpengine.cli.learn",
    "kpengine.cli.image",
)

DESCRIPTION = """\
kpengine: a 3D keypoint knowledge engine (KeypointNet data, metrics, annotation,
aggregation, learning, transfer, rendering).

Typical session:
  kpengine sample-data sample/                  # a small dataset in the KeypointNet layout
  kpengine stats --data sample/                 # what is in it
  kpengine baseline --data sample/ --category chair --task correspondence --out P.json
  kpengine evaluate --data sample/ --category chair --split test \\
                    --task correspondence --predictions P.json --output R.json
  kpengine train --task correspondence --backbone pointnet --data sample/ --category chair --out runs/c
  kpengine predict --run runs/c --data sample/ --category chair --split test --out P.json
  kpengine serve                                # the web annotation tool on sample data
  kpengine simulate-crowd ... ; kpengine aggregate ...     # crowd clicks -> semantic keypoints
  kpengine render-benchmark ... ; kpengine evaluate-2d ... # 2D keypoint benchmark from shapes
  kpengine render-views --data sample/ --category chair --out renders/  # training images of shapes

Every command accepts --help. Data roots follow the KeypointNet layout:
annotations/<category>.json, splits/*.txt, pcds/<synset>/<id>.pcd, meshes/<synset>/<id>/...
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpengine", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"kpengine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only (no warnings)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kpengine evaluate ... | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
