"""Write files atomically: write a temporary sibling, fsync, then rename.

A crash or an exception part-way leaves the old file (or none) in place, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | Path, obj: Any, *, indent: int | None = None) -> None:
    write_text(path, json.dumps(obj, indent=indent) + ("\n" if indent else ""))


def read_json(path: str | Path) -> Any:
    """Read JSON; a syntax error names the file, line and column."""
    from kpengine.errors import DataError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError("file not found", path=path) from exc
    except IsADirectoryError as exc:
        raise DataError("is a folder, not a JSON file", path=path) from exc
    except OSError as exc:  # no read permission, I/O error
        raise DataError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); JSON files must be UTF-8",
            path=path,
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"malformed JSON at line {exc.lineno}, column {exc.colno} (char {exc.pos}): {exc.msg}",
            path=path,
        ) from exc
