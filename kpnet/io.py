"""File helpers shared by the CLIs, the benchmarks, export and training: image listing and
atomic writes."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

#: Image file suffixes kpnet reads (what OpenCV's imread decodes in every build); matched
#: case-insensitively.
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")

#: In the names of :func:`atomic_path`'s temporary files: ``.{stem}.tmp-{random}{suffix}``
#: next to the target (hidden, and with the target's suffix).
TMP_MARK = ".tmp-"


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def folder_images(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """The image files (:data:`IMAGE_EXTS`) in ``folder``, recursively by default, sorted by
    path; an empty list when it holds none."""
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in it if is_image_path(f) and f.is_file())


def list_images(
    sources: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = True, limit: int | None = None
) -> list[Path]:
    """Image files named by ``sources``: files (kept as given, any suffix), folders (their
    images, recursively by default) and glob patterns (``"frames/*.png"``, ``"**/*.jpg"``).
    Folder and glob results are sorted by path; duplicates are dropped, first occurrence
    wins. Raises FileNotFoundError naming the sources that match nothing."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out: list[Path] = []
    seen: set[Path] = set()
    missing: list[str] = []

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for src in sources:
        s = str(src)
        p = Path(s)
        if p.is_dir():
            found = folder_images(p, recursive=recursive)
            if not found:
                missing.append(f"{s} (a folder with no {'/'.join(IMAGE_EXTS)} files)")
            for f in found:
                add(f)
        elif p.is_file():
            add(p)
        elif glob.has_magic(s):
            found = sorted(Path(f) for f in glob.glob(s, recursive=True) if Path(f).is_file() and is_image_path(f))
            if not found:
                missing.append(f"{s} (a pattern that matches no image)")
            for f in found:
                add(f)
        else:
            missing.append(f"{s} (no such file or folder)")
        if limit is not None and len(out) >= limit:
            return out[:limit]
    if missing:
        raise FileNotFoundError("no images found for: " + "; ".join(missing))
    return out


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically,
    on an exception it is removed and ``path`` is left as it was. The temporary name keeps
    the suffix, so writers that pick the format by suffix (cv2.imwrite, onnx.save) work;
    a process killed before the rename leaves it behind (see :func:`partial_files`).

    Write anything to the yielded path: ``torch.save(obj, tmp)``, ``np.savez(tmp, ...)``,
    ``open(tmp, "wb")``. With ``fsync``, the data are flushed to disk before the rename (a
    power cut then leaves the old file or the complete new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}{TMP_MARK}", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a written file gets the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if fsync:
            _fsync(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def partial_target(tmp: str | os.PathLike) -> Path | None:
    """The file a temporary file of :func:`atomic_path` was to replace, or None when ``tmp``
    is not one."""
    tmp = Path(tmp)
    name = tmp.name
    i = name.rfind(TMP_MARK)
    if not name.startswith(".") or i < 1:
        return None
    # The random part has no dot, so the suffix after it is the target's (or none).
    return tmp.with_name(name[1:i] + Path(name[i + len(TMP_MARK) :]).suffix)


def partial_files(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """The temporary files :func:`atomic_path` left in ``folder`` (a writer killed before its
    rename), sorted; with ``names``, only those that were to become files of these names.
    Delete them before resuming work in the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else set(names)
    found = []
    for p in folder.glob(f".*{TMP_MARK}*"):
        target = partial_target(p)
        if target is not None and (wanted is None or target.name in wanted):
            found.append(p)
    return sorted(found)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (readers never see a half-written file)."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
