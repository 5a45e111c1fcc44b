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
    "kpengine.cli.see",
    "kpengine.cli.image",
    "kpengine.cli.reconstruct",
    "kpengine.cli.retrieve",
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
  kpengine understand --image PHOTO --category chair --knowledge ROOT --runs RUN... --out DIR
                                                # photo -> viewpoint, shape, pose, pixel semantics
  kpengine retrieve --run RUN --image PHOTO --knowledge ROOT --top 5 --out R.json
                                                # photo -> nearest shapes by the joint embedding
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


def configure_logging(verbose: bool, quiet: bool) -> None:
    """One handler on stderr, ``warning: ...`` lines; ``-q`` shows errors only, ``-v`` also the details
    (each skipped model and why). Python warnings (``warnings.warn``) go through the same
    handler, so ``-q`` silences them too and nothing prints twice."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    handler.addFilter(_lower_level)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("matplotlib", "PIL", "numba", "h5py", "urllib3", "httpx", "asyncio", "trimesh"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)


def _lower_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = "info" if record.levelno < logging.WARNING else record.levelname.lower()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or folder the OS refuses: say which, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
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
