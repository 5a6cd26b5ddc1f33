"""The one atomic write: whole files and folders appear under their name, or nothing does."""

import pytest

from unimat_core import atomic
from unimat_core.atomic import atomic_path


def test_a_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic.write_text(path, "one")
    atomic.write_text(path, "two")
    assert path.read_text() == "two"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left behind


def test_a_folder_replaces_the_old_folder(tmp_path):
    folder = tmp_path / "dataset"
    for content in ("old", "new"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "part").write_text(content)
    assert (folder / "part").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["dataset"]


def test_keep_existing_lets_the_first_writer_win(tmp_path):
    folder = tmp_path / "entry"
    for content in ("first", "second"):
        with atomic_path(folder, keep_existing=True) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text(content)
    assert (folder / "x").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["entry"]
