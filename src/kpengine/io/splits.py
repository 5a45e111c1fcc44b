"""Official split files: one ``<synset>-<model_id>`` per line in ``splits/{train,val,test}.txt``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kpengine.errors import DataError
from kpengine.io.atomic import write_text

SPLITS = ("train", "val", "test")


def load_split(path: str | Path) -> list[tuple[str, str]]:
    """Read a split file as ``(synset, model_id)`` pairs, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError("split file not found", path=path)
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        synset, sep, model_id = line.partition("-")
        if not sep or not model_id:
            raise DataError(f"line {lineno}: expected '<synset>-<model_id>', got {line!r}", path=path)
        entries.append((synset, model_id))
    return entries


def split_index(root: str | Path) -> dict[tuple[str, str], str]:
    """Which split each ``(synset, model_id)`` under ``root/splits`` belongs to (missing files skipped)."""
    index: dict[tuple[str, str], str] = {}
    for split in SPLITS:
        path = Path(root) / "splits" / f"{split}.txt"
        if path.is_file():
            for entry in load_split(path):
                index[entry] = split
    return index


def save_split(path: str | Path, entries: Iterable[tuple[str, str]]) -> None:
    write_text(path, "".join(f"{synset}-{model_id}\n" for synset, model_id in entries))
