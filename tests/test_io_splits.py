"""Split files (``splits/{train,val,test}.txt``: one ``<synset>-<model_id>`` per line), read and
written by :mod:`kpengine.io.splits`, checked against hand-written files."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpengine.errors import DataError
from kpengine.io.splits import load_split, save_split, split_index


def test_split_lines_blank_lines_and_ids_with_dashes(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("02808440-aaa\n\n  03001627-b-c-d  \n\n02808440-eee\n")
    # a blank line in the middle does not end the file; only the first dash separates the synset
    assert load_split(path) == [("02808440", "aaa"), ("03001627", "b-c-d"), ("02808440", "eee")]
    out = tmp_path / "again.txt"
    save_split(out, load_split(path))
    assert out.read_text() == "02808440-aaa\n03001627-b-c-d\n02808440-eee\n"


@pytest.mark.parametrize(
    ("text", "line", "bad"),
    [("02808440-a\nnodash\n", 2, "nodash"), ("\n\n02808440-\n", 3, "02808440-"), ("-x\n", 1, None)],
)
def test_malformed_split_lines_are_named_with_file_and_line(tmp_path: Path, text: str, line: int, bad: str) -> None:
    path = tmp_path / "val.txt"
    path.write_text(text)
    if bad is None:  # an empty synset is not checked here: the dataset finds no such category
        assert load_split(path) == [("", "x")]
        return
    with pytest.raises(DataError) as err:
        load_split(path)
    assert str(err.value) == f"{path}: line {line}: expected '<synset>-<model_id>', got {bad!r}"


def test_missing_split_file_and_the_index_of_all_splits(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_split(tmp_path / "test.txt")
    assert str(err.value) == f"{tmp_path / 'test.txt'}: split file not found"
    (tmp_path / "splits").mkdir()
    save_split(tmp_path / "splits" / "train.txt", [("1", "a"), ("1", "b")])
    save_split(tmp_path / "splits" / "test.txt", [("2", "c")])  # no val.txt: skipped, not an error
    assert split_index(tmp_path) == {("1", "a"): "train", ("1", "b"): "train", ("2", "c"): "test"}
