"""Input validation and image preparation for the network (numpy + OpenCV only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from .errors import InvalidImageError

ACCEPTED = (
    "a numpy array: HxW or HxWx1 grayscale, HxWx3 BGR or HxWx4 BGRA (OpenCV channel order), "
    "dtype uint8 (0-255) or float32/float64 in [0, 1]"
)


def validate_image(image: object) -> np.ndarray:
    """Check an input image and return it as an array; raise InvalidImageError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be {ACCEPTED}; got {type(image).__name__}")
    if image.size == 0:
        raise InvalidImageError(f"image is empty (shape {image.shape}); expected {ACCEPTED}")
    if image.ndim not in (2, 3):
        raise InvalidImageError(f"image has {image.ndim} dimensions (shape {image.shape}); expected {ACCEPTED}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        hint = ""
        if image.shape[0] in (1, 3, 4):
            hint = (
                "; it looks channels-first (CxHxW, as torch uses): OpenCV images are HxWxC, so pass "
                "np.ascontiguousarray(image.transpose(1, 2, 0))"
            )
        raise InvalidImageError(
            f"image has {image.shape[2]} channels (shape {image.shape}); expected 1, 3 (BGR) or 4 (BGRA){hint}"
        )
    if image.dtype == np.uint8:
        return image
    if image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise InvalidImageError("image contains NaN or infinite values; clean it before detection")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidImageError(
                f"float image values must lie in [0, 1], got range [{lo:.3g}, {hi:.3g}]; "
                "divide 0-255 data by 255 or pass it as uint8"
            )
        return image
    raise InvalidImageError(
        f"image dtype {image.dtype} is not supported; expected uint8 (0-255) or float32/float64 in [0, 1]"
        + (
            " (convert 16-bit images with (img / 257).astype(np.uint8) or img / 65535.0)"
            if image.dtype == np.uint16
            else ""
        )
    )


def to_gray(image: np.ndarray) -> np.ndarray:
    """Validated image -> HxW grayscale of the same dtype family (uint8 or float32)."""
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    if image.ndim == 3:
        c = image.shape[2]
        if c == 1:
            image = image[:, :, 0]
        elif c == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        else:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return image


@dataclass(frozen=True)
class Resize:
    """How an original image maps onto the model frame.

    A model-frame point (x, y) maps back to ((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5)
    in original pixels (pixel-centre aligned, as cv2.resize samples).
    """

    orig_size: tuple[int, int]  # (w, h)
    model_size: tuple[int, int]  # (w, h)

    @property
    def scale(self) -> tuple[float, float]:
        return self.orig_size[0] / self.model_size[0], self.orig_size[1] / self.model_size[1]

    def to_original(self, xy):
        """Model-frame points [N, 2] (numpy or torch) -> original-image pixels, float32."""
        sx, sy = self.scale
        if not isinstance(xy, np.ndarray):  # a torch tensor: stay on its device
            import torch

            scale = torch.tensor([sx, sy], dtype=torch.float32, device=xy.device)
            return (xy.float() + 0.5) * scale - 0.5
        out = np.empty_like(xy, dtype=np.float32)
        out[:, 0] = (xy[:, 0] + 0.5) * sx - 0.5
        out[:, 1] = (xy[:, 1] + 0.5) * sy - 0.5
        return out


SizeSpec = tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]]


def prepare(image: object, size_hw: SizeSpec) -> tuple[np.ndarray, Resize]:
    """Validate, convert to gray, resize to the working size and scale to [0, 1].

    ``size_hw``: (H, W), or a function of the frame's (H, W) returning it (a
    :class:`kpnet.sizing.WorkingSize` policy). Returns float32 [H, W] and the Resize that
    maps keypoints back.
    """
    img = to_gray(validate_image(image))
    h0, w0 = img.shape
    h, w = size_hw((h0, w0)) if callable(size_hw) else size_hw
    if (h0, w0) != (h, w):
        interp = cv2.INTER_AREA if (w < w0 and h < h0) else cv2.INTER_LINEAR
        img = cv2.resize(img, (w, h), interpolation=interp)
    if img.dtype == np.uint8:
        out = img.astype(np.float32)
        out *= 1.0 / 255.0
    else:
        out = np.ascontiguousarray(img, dtype=np.float32)
    return out, Resize((w0, h0), (w, h))
