"""Pre-processing on the device, in torch (for torch-native backends: PyTorch and TensorRT).

A frame (uint8 or float, gray/BGR/BGRA, host numpy or a torch tensor already on the device) is
converted to gray, resized and scaled where it is, so a GPU pipeline never copies it through
the host; decoding on the device is :mod:`kpnet.decoding`'s. The functions are device-agnostic
(they run on CPU tensors too, which is how they are tested without a GPU).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._deps import require
from .errors import InvalidImageError
from .preprocess import Resize, SizeSpec

# OpenCV's BGR -> gray weights (cv2.COLOR_BGR2GRAY).
_GRAY_BGR = (0.114, 0.587, 0.299)


def to_device_image(image: Any, device: Any):
    """numpy array or torch tensor (HxW, HxWx1, HxWx3 BGR, HxWx4 BGRA; uint8 or float in [0, 1])
    -> torch tensor on ``device`` (no copy when it is already there)."""
    torch = require("torch")
    if isinstance(image, np.ndarray):
        from .preprocess import validate_image

        image = torch.from_numpy(np.ascontiguousarray(validate_image(image)))
    if not isinstance(image, torch.Tensor):
        raise InvalidImageError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    if image.numel() == 0 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        hint = ""
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
            hint = "; it looks channels-first (CxHxW): pass image.permute(1, 2, 0)"
        raise InvalidImageError(
            f"image tensor must be HxW or HxWxC with C in (1, 3, 4) and non-empty, got shape {tuple(image.shape)}{hint}"
        )
    if image.dtype not in (torch.uint8, torch.float32, torch.float16, torch.float64):
        raise InvalidImageError(f"image tensor dtype must be uint8 or float in [0, 1], got {image.dtype}")
    return image.to(device, non_blocking=True)


def _area_weights(n_in: int, n_out: int, device):
    """[n_out, n_in] matrix of INTER_AREA weights for shrinking n_in -> n_out samples."""
    torch = require("torch")
    scale = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64, device=device)[:, None] * scale
    hi = lo + scale
    j = torch.arange(n_in, dtype=torch.float64, device=device)[None, :]
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp(min=0)
    return (overlap / scale).float()


def preprocess_device(image, size_hw: SizeSpec):
    """One image tensor (see :func:`to_device_image`) -> (float32 [1, 1, H, W] in [0, 1] on the
    image's device, Resize mapping model pixels back to the image).

    Mirrors :func:`kpnet.preprocess.prepare`: OpenCV's gray weights, area averaging
    (INTER_AREA) when shrinking both sides, bilinear (pixel-centre aligned, INTER_LINEAR)
    otherwise, uint8 results rounded as OpenCV does. Not bit-exact (OpenCV uses fixed-point
    arithmetic for uint8): values differ by at most a grey level or two.
    """
    torch = require("torch")
    F = torch.nn.functional
    x = image
    is_u8 = x.dtype == torch.uint8
    x = x.float()
    if x.ndim == 3:
        c = x.shape[2]
        if c == 1:
            x = x[:, :, 0]
        else:
            b, g, r = x[:, :, 0], x[:, :, 1], x[:, :, 2]
            x = _GRAY_BGR[0] * b + _GRAY_BGR[1] * g + _GRAY_BGR[2] * r
            if is_u8:
                x = torch.round(x)
    h0, w0 = x.shape
    h, w = size_hw((int(h0), int(w0))) if callable(size_hw) else size_hw
    x = x[None, None]
    if (h0, w0) != (h, w):
        if h < h0 and w < w0:
            # OpenCV's INTER_AREA: each output pixel averages the input area it covers, with
            # fractional weights at the edges; separable, so two small matrix products.
            wy = _area_weights(h0, h, x.device)
            wx = _area_weights(w0, w, x.device)
            x = (wy @ x[0, 0] @ wx.T)[None, None]
        else:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        if is_u8:
            x = torch.round(x)  # cv2.resize returns uint8
    if is_u8:
        x = x * (1.0 / 255.0)
    return x.contiguous(), Resize((int(w0), int(h0)), (int(w), int(h)))
