"""Finding and loading training images (grayscale, at the training resolution).

The images are those :func:`kpnet.io.folder_images` finds (the suffixes of
:data:`kpnet.io.IMAGE_EXTS`, any case), as every kpnet command lists them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpnet.io import folder_images

from ._deps import require


class ImageSkipped(ValueError):
    """An image that cannot be used; ``str(exc)`` is the reason recorded in manifests."""


def list_images(root: str | Path) -> list[str]:
    """Image files under ``root`` (recursive, :func:`kpnet.io.folder_images`), as POSIX paths
    relative to it sorted as strings: the order a label cache's manifest stores, and
    checks on resume.

    Raises:
        NotADirectoryError: if ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    return sorted(p.relative_to(root).as_posix() for p in folder_images(root))


def fit_to_size(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to cover ``size = (width, height)`` keeping the aspect ratio, then centre-crop.

    Args:
        gray: uint8 ``[h, w]``.

    Returns:
        uint8 ``[height, width]``.
    """
    cv2 = require("cv2")
    w, h = size
    ih, iw = gray.shape[:2]
    scale = max(w / iw, h / ih)
    nw, nh = max(w, int(round(iw * scale))), max(h, int(round(ih * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(gray, (nw, nh), interpolation=interp)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(resized[y0 : y0 + h, x0 : x0 + w])


def load_gray(path: str | Path, size: tuple[int, int], min_side: int) -> np.ndarray:
    """Read an image as grayscale at the training resolution.

    Args:
        path: image file.
        size: ``(width, height)`` of the output.
        min_side: images whose shorter side is below this many pixels are skipped.

    Returns:
        uint8 ``[height, width]``.

    Raises:
        ImageSkipped: unreadable, empty, or smaller than ``min_side``.
    """
    cv2 = require("cv2")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageSkipped(f"unreadable: {exc.strerror or exc}") from exc
    gray = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if gray is None:
        raise ImageSkipped("unreadable: not a decodable image")
    ih, iw = gray.shape[:2]
    if min(ih, iw) < min_side:
        raise ImageSkipped(f"too small: {iw}x{ih} px, shorter side below min_side={min_side}")
    return fit_to_size(gray, size)
