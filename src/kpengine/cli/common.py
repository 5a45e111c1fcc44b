"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kpengine.errors import DataError
from kpengine.io.atomic import write_json


def add_data_args(p: argparse.ArgumentParser, *, split: str | None = "test", category: bool = True) -> None:
    p.add_argument("--data", required=True, metavar="ROOT", help="dataset root in the KeypointNet layout")
    if category:
        p.add_argument("--category", required=True, metavar="NAME", help="category name (chair) or synset (03001627)")
    if split is not None:
        p.add_argument(
            "--split", default=split, choices=("train", "val", "test", "all"), help=f"split (default {split})"
        )


def add_json_summary_arg(p: argparse.ArgumentParser) -> None:
    """``--json``: a summary on stdout instead of the sentence, naming the models skipped and why
    (the same rows as ``evaluate``'s ``skipped``)."""
    p.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout, with each skipped model and the reason"
    )


def check_json_summary(args: argparse.Namespace) -> None:
    """``--json`` and ``--out -`` would both write to stdout: refuse, before the work."""
    if args.json and args.out == "-":
        raise DataError("--json prints the summary on stdout; give --out a file for the results")


def emit_json(obj: Any, path: str | None) -> None:
    """Write JSON atomically to ``path``, or to stdout when path is '-'."""
    if path == "-":
        json.dump(obj, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif path:
        write_json(path, obj, indent=2)


def load_raw_clicks(path: str):  # noqa: ANN201 - (list[Click], list[Problem]); io imported lazily
    """Raw clicks from ``path``, or from standard input when path is '-' (for pipes)."""
    from kpengine.errors import DataError
    from kpengine.io.clicks import clicks_from_json, load_clicks

    if path != "-":
        return load_clicks(path)
    try:
        data = json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path="<stdin>") from exc
    return clicks_from_json(data, "<stdin>")


def check_output(*paths: str | None) -> None:
    """Refuse output paths that cannot be written, before any work is done.

    ``os.access`` binds root too for read-only mounts and immutable folders. ``-`` (stdout)
    and ``None`` (no output asked for) pass.
    """
    for path in paths:
        if not path or path == "-":
            continue
        target = Path(path)
        if target.is_dir():
            raise DataError("is a folder; give a file name", path=target)
        folder = target.parent if str(target.parent) else Path(".")
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise DataError(f"cannot create the output folder: {existing} is a file", path=target)
        if not os.access(existing, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
            raise DataError("cannot write here (no permission, or a read-only file system)", path=target)
