"""kpnet.io: the one image listing and the atomic writes every command (and training) uses."""

from __future__ import annotations

import os

import pytest

from kpnet.io import (
    IMAGE_EXTS,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    folder_images,
    list_images,
    partial_files,
    partial_target,
)


def test_image_suffixes_are_matched_in_any_case(tmp_path):
    names = ["a.JPG", "b.jpeg", "c.png", "d.ppm", "e.pgm", "f.bmp", "g.TIF", "h.tiff", "i.webp"]
    for n in ["notes.txt", "model.onnx", *names]:
        (tmp_path / n).write_bytes(b"x")
    assert {e.lstrip(".") for e in IMAGE_EXTS} == {"jpg", "jpeg", "png", "ppm", "pgm", "bmp", "tif", "tiff", "webp"}
    assert [p.name for p in folder_images(tmp_path)] == names
    assert [p.name for p in list_images(tmp_path)] == names


def test_folder_images_recurse_unless_told_and_an_empty_folder_is_empty(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub" / "b.jpg").write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in folder_images(tmp_path)] == ["a.jpg", "sub/b.jpg"]
    assert [p.name for p in folder_images(tmp_path, recursive=False)] == ["a.jpg"]
    (tmp_path / "empty").mkdir()
    assert folder_images(tmp_path / "empty") == []
    with pytest.raises(FileNotFoundError, match="a folder with no"):
        list_images(tmp_path / "empty")


def test_atomic_writes_replace_or_leave_the_file(tmp_path):
    target = tmp_path / "deep" / "out.json"
    atomic_write_text(target, "one")
    assert target.read_text() == "one"
    assert atomic_write_bytes(target, b"two", fsync=True) == target and target.read_bytes() == b"two"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp.name.startswith(".out.tmp-")
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"two" and sorted(os.listdir(target.parent)) == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_partial_files_find_what_a_killed_writer_left(tmp_path):
    writers = [atomic_path(tmp_path / name) for name in ("a.npz", "b.npz", "manifest.json", "noext")]
    left = [w.__enter__() for w in writers]  # writers killed before their rename: the temporary files stay
    (tmp_path / "a.npz").write_bytes(b"done")
    (tmp_path / ".hidden").write_bytes(b"not a temporary file")
    (tmp_path / "x.tmp-123").write_bytes(b"not one of atomic_path's")
    assert [partial_target(p).name for p in left] == ["a.npz", "b.npz", "manifest.json", "noext"]
    assert partial_target(tmp_path / ".hidden") is None and partial_target(tmp_path / "a.npz") is None
    assert partial_files(tmp_path) == sorted(left)
    assert partial_files(tmp_path, ["b.npz", "noext"]) == sorted([left[1], left[3]])
    assert partial_files(tmp_path / "missing") == []
