"""File helpers shared by the CLIs, the benchmarks and export: image listing and atomic writes."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

#: Image file suffixes kpnet reads (what OpenCV's imread decodes in every build).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


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
            it = p.rglob("*") if recursive else p.iterdir()
            found = sorted(f for f in it if f.is_file() and is_image_path(f))
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically,
    on an exception it is removed and ``path`` is left as it was. The temporary name keeps
    the suffix, so writers that pick the format by suffix (cv2.imwrite, onnx.save) work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a written file gets the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (readers never see a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
