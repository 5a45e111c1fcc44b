"""Store and server commands: ``serve`` and ``db upgrade|import|export|export-raw|import-raw|invite``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Where ``kpengine serve`` with no arguments keeps its SQLite file and sample dataset.
DEFAULT_HOME = Path("kpengine-store")


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        metavar="URL",
        help="database URL: sqlite:///path.db or postgresql://user@host/db "
        f"(default: $KPENGINE_DB, else {DEFAULT_HOME}/store.db)",
    )


def _url(args: argparse.Namespace) -> str:
    from kpengine.store.db import default_url

    return args.db or default_url(DEFAULT_HOME / "store.db")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the annotation tool, explorer and API (http://HOST:PORT)",
        description="Start the web server. With no arguments it creates kpengine-store/store.db (SQLite), fills it "
        "with a generated sample dataset and an admin and a demo annotator, and prints the pages' URLs.",
    )
    p.add_argument("--data", metavar="DIR", help="import this KeypointNet-layout dataset before serving")
    _db_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tolerance", type=float, default=0.005, help="largest click distance from the surface")
    p.add_argument(
        "--runs",
        metavar="DIR",
        help="let the explorer open the predictions files under DIR (e.g. runs/, where `kpengine predict --out` "
        "and `kpengine benchmark` write them) by name",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default 1; see docs/benchmarks.md)"
    )
    p.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="knowledge store administration: import, export, invitations")
    dsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = dsub.add_parser("upgrade", help="create the schema or upgrade it to this version")
    _db_arg(p)
    p.set_defaults(func=cmd_upgrade)
    p = dsub.add_parser("import", help="import a KeypointNet-layout dataset (annotations, splits, geometry paths)")
    _db_arg(p)
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--category", action="append", metavar="NAME", help="only these categories (repeatable)")
    p.set_defaults(func=cmd_import)
    p = dsub.add_parser("export", help="write the aggregated keypoints in the official layout (annotations/, splits/)")
    _db_arg(p)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--category", action="append", metavar="NAME")
    p.set_defaults(func=cmd_export)
    p = dsub.add_parser(
        "export-raw",
        help="write every annotator's raw clicks (RAW.json, the input of `kpengine aggregate --raw`)",
        description="Write the raw clicks in the one raw-click format (docs/aggregation.md): a JSON list of "
        '{"class_id", "model_id", "annotator", "kp_index", "xyz", "point_index", "face_index", "face_uv", "time"}. '
        "Example: kpengine db export-raw --category bed --out - | "
        "kpengine aggregate --raw - --data ROOT --category bed --out OUT.json",
    )
    _db_arg(p)
    p.add_argument("--out", required=True, metavar="FILE", help="RAW.json, or - for standard output")
    p.add_argument("--category", metavar="NAME")
    p.set_defaults(func=cmd_export_raw)
    p = dsub.add_parser(
        "import-raw",
        help="save raw clicks (RAW.json from export-raw or simulate-crowd) into the store",
        description="Each (model, annotator) set of clicks replaces that annotator's keypoints on the model "
        "(revision bumped). Models are found by class_id (or --category) and model_id; annotators missing "
        "from the store are created without a token. Sets that break the store's rules are skipped and "
        "listed; clicks are not re-projected onto the geometry.",
    )
    _db_arg(p)
    p.add_argument("--raw", required=True, metavar="FILE", help="RAW.json, or - for standard input")
    p.add_argument("--category", metavar="NAME", help="category of clicks that carry no class_id")
    p.set_defaults(func=cmd_import_raw)
    p = dsub.add_parser("invite", help="create an annotator (or admin) and print their token")
    _db_arg(p)
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="give admin rights (import, export, invitations)")
    p.set_defaults(func=cmd_invite)


def _labels_for(root: Path) -> dict[str, dict[int, str]] | None:
    from kpengine.data.sample import KEYPOINT_NAMES, README_MARKER

    readme = root / "README.md"
    if readme.is_file() and README_MARKER in readme.read_text(encoding="utf-8", errors="replace"):
        return KEYPOINT_NAMES
    return None


def _import(store, root: Path, categories: list[str] | None = None) -> None:  # noqa: ANN001
    from kpengine.store.exchange import import_dataset

    with store.session() as s:
        summary = import_dataset(s, root, categories, labels=_labels_for(root))
    print(summary)
    for problem in summary.problems[:10]:
        print(f"  {problem}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from sqlalchemy import func, select

    from kpengine.server import ServerConfig, create_app
    from kpengine.server.app import RUNS_ENV, TOLERANCE_ENV
    from kpengine.store import open_store
    from kpengine.store.db import DB_ENV
    from kpengine.store.repo import create_annotator
    from kpengine.store.schema import Annotator, Model

    url = _url(args)
    store = open_store(url)
    if args.data:
        _import(store, Path(args.data))
    with store.session() as s:
        n_models = s.scalar(select(func.count()).select_from(Model))
        n_people = s.scalar(select(func.count()).select_from(Annotator))
    if not n_models and not args.data:
        from kpengine.data.sample import generate_sample_dataset

        sample = DEFAULT_HOME / "sample"
        if not sample.is_dir():
            print(generate_sample_dataset(sample, shapes_per_category=12))
        _import(store, sample)
    base = f"http://{args.host}:{args.port}"
    if not n_people:
        with store.session() as s:
            _, admin = create_annotator(s, "admin", "admin")
            _, demo = create_annotator(s, "demo")
        print(f"admin token (shown once): {admin}")
        print(f"annotate:  {base}/annotate?token={demo}")
        print(f"verify:    {base}/verify?token={admin}   (after `kpengine aggregate --db ...`)")
    else:
        print(f"annotate:  {base}/annotate?token=<token>   (new tokens: kpengine db invite NAME)")
        print(f"verify:    {base}/verify?token=<admin token>")
    print(f"explore:   {base}/explore\nAPI docs:  {base}/docs\ndatabase:  {store.engine.url.render_as_string()}")
    if args.workers > 1:  # each worker process opens its own store from the environment
        import os

        store.dispose()
        os.environ.update({DB_ENV: url, TOLERANCE_ENV: str(args.tolerance)})
        if args.runs:
            os.environ[RUNS_ENV] = str(Path(args.runs).resolve())
        uvicorn.run(
            "kpengine.server.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="warning",
        )
        return 0
    runs = Path(args.runs) if args.runs else None
    app = create_app(ServerConfig(tolerance=args.tolerance, store=store, runs_dir=runs))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    from kpengine.store import open_store

    open_store(_url(args)).dispose()
    print("schema is up to date")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from kpengine.store import open_store

    store = open_store(_url(args))
    _import(store, Path(args.data), args.category)
    store.dispose()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kpengine.store import open_store
    from kpengine.store.exchange import export_dataset

    store = open_store(_url(args))
    with store.session() as s:
        written = export_dataset(s, args.out, args.category)
    print(f"wrote {', '.join(f'{c} ({n} models)' for c, n in written.items()) or 'nothing'} to {args.out}")
    return 0


def cmd_export_raw(args: argparse.Namespace) -> int:
    import json

    from kpengine.io.clicks import clicks_to_json
    from kpengine.store import open_store
    from kpengine.store.exchange import export_raw, raw_clicks

    store = open_store(_url(args))
    with store.session() as s:
        if args.out == "-":
            clicks = raw_clicks(s, args.category)
            json.dump(clicks_to_json(clicks), sys.stdout)
            sys.stdout.write("\n")
            print(f"wrote {len(clicks)} clicks to standard output", file=sys.stderr)
        else:
            n = export_raw(s, args.out, args.category)
            print(f"wrote {n} keypoint sets to {args.out}")
    store.dispose()
    return 0


def cmd_import_raw(args: argparse.Namespace) -> int:
    from kpengine.cli.common import load_raw_clicks
    from kpengine.store import open_store
    from kpengine.store.exchange import import_raw

    clicks, problems = load_raw_clicks(args.raw)
    store = open_store(_url(args))
    with store.session() as s:
        summary = import_raw(s, clicks, args.category)
    store.dispose()
    for problem in problems + summary.problems:
        print(f"  {problem}", file=sys.stderr)
    print(summary)
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from kpengine.store import open_store
    from kpengine.store.repo import StoreError, create_annotator

    store = open_store(_url(args))
    try:
        with store.session() as s:
            annotator, token = create_annotator(s, args.name, "admin" if args.admin else "annotator")
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(token)
    print(f"{annotator.role} {annotator.name}: open /annotate?token={token}", file=sys.stderr)
    return 0
