"""Data augmentation for training (numpy + OpenCV, one sample at a time).

* Geometric: :func:`sample_view_transform` draws a 3x3 matrix ``M`` (random scale, rotation
  up to the full circle, optional small perspective, random crop placement) from the cached
  image to a training crop; :func:`render_view` applies it to the image (padding black or the
  image mean, valid mask optionally eroded) and :func:`transform_points` applies the same
  ``M`` to keypoints (``training.data.view_target`` to dense maps), so images and labels stay
  consistent.
* Photometric: :func:`photometric` (brightness, contrast, gamma, motion blur, JPEG) and
  :func:`add_noise` (Gaussian noise).

All randomness comes from the ``numpy.random.Generator`` passed in, so a sample is a pure
function of its seed. Conventions: (x, y) pixels with centres at integers; ``src_size`` is
``(width, height)``; ``crop`` is ``(height, width)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._deps import require
from .homography import valid_mask, warp_points


@dataclass(frozen=True)
class GeometricAug:
    """Ranges of the geometric augmentation.

    Attributes:
        scale_range: scale factor range, drawn log-uniformly.
        max_rotation_deg: rotation drawn uniformly in ``[-x, x]`` degrees.
        perspective: crop corners jittered by up to this fraction of the crop size.
        upright_prob: probability that the rotation is 0 (drawn only when > 0, so the random
            stream of the default is unchanged).
    """

    scale_range: tuple[float, float] = (0.8, 1.25)
    max_rotation_deg: float = 10.0
    perspective: float = 0.05
    upright_prob: float = 0.0


def sample_view_transform(
    src_size: tuple[int, int], crop: tuple[int, int], aug: GeometricAug, rng: np.random.Generator
) -> np.ndarray:
    """Random matrix mapping source pixels to crop pixels.

    The source is scaled by ``s`` and rotated by ``a`` about its centre, then placed so that
    the crop lies inside the scaled image where it can (random offset), else centred (the
    rest is padding). A small random perspective of the crop follows.

    Returns:
        float64 ``[3, 3]``.
    """
    cv2 = require("cv2")
    sw, sh = src_size
    ch, cw = crop
    lo, hi = aug.scale_range
    s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    a = math.radians(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
    if aug.upright_prob > 0 and rng.random() < aug.upright_prob:
        a = 0.0
    slack_x = max(0.0, (s * sw - cw) / 2.0)
    slack_y = max(0.0, (s * sh - ch) / 2.0)
    cx = (cw - 1) / 2.0 + rng.uniform(-slack_x, slack_x)
    cy = (ch - 1) / 2.0 + rng.uniform(-slack_y, slack_y)
    c, si = math.cos(a) * s, math.sin(a) * s
    ox, oy = (sw - 1) / 2.0, (sh - 1) / 2.0
    M = np.array([[c, -si, cx - c * ox + si * oy], [si, c, cy - si * ox - c * oy], [0.0, 0.0, 1.0]])
    if aug.perspective > 0:
        corners = np.array([[0, 0], [cw - 1, 0], [cw - 1, ch - 1], [0, ch - 1]], np.float32)
        jitter = rng.uniform(-aug.perspective, aug.perspective, (4, 2)) * np.array([cw, ch])
        P = cv2.getPerspectiveTransform(corners, (corners + jitter).astype(np.float32))
        M = P.astype(np.float64) @ M
    return M


PAD_FILLS = ("zero", "mean")


def erode_valid(valid: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink a bool ``[H, W]`` valid mask by ``pixels`` at its boundary with invalid pixels.

    The frame of the crop is not a boundary (pixels outside the crop count as valid): only the
    band next to padding is dropped, where the network's receptive field sees the padding edge.
    """
    if pixels <= 0 or valid.all():
        return valid
    cv2 = require("cv2")
    k = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.erode(valid.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0


def render_view(
    image: np.ndarray, M: np.ndarray, crop: tuple[int, int], fill: str = "zero", erode: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` (uint8 or float32 ``[h, w]``) by ``M`` into a crop.

    Args:
        fill: value of the padding (pixels whose source is outside the image): ``zero`` or
            ``mean`` (the image's mean, so a rotated view has no artificial black edge).
        erode: shrink the returned valid mask by this many pixels next to the padding.

    Returns:
        (float32 ``[H, W]`` image in the image's units (uint8 input is scaled to [0, 1]);
        bool ``[H, W]`` valid pixels, i.e. those whose source lies inside the image, less the
        ``erode`` band).
    """
    cv2 = require("cv2")
    if fill not in PAD_FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose from: {', '.join(PAD_FILLS)}")
    ch, cw = crop
    border = float(image.mean()) if fill == "mean" else 0
    out = cv2.warpPerspective(
        image, M, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )
    if out.dtype == np.uint8:
        out = out.astype(np.float32) / 255.0
    valid = valid_mask(M, (image.shape[1], image.shape[0]), (cw, ch))
    return out.astype(np.float32), erode_valid(valid, erode)


def transform_points(M: np.ndarray, points: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Keypoints ``[N, 2]`` moved by ``M``, keeping those inside the crop (float32 ``[N', 2]``)."""
    if len(points) == 0:
        return np.zeros((0, 2), np.float32)
    p = warp_points(M, np.asarray(points, np.float64))
    ch, cw = crop
    ok = (p[:, 0] >= -0.5) & (p[:, 0] <= cw - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= ch - 0.5)
    return p[ok].astype(np.float32)


# ---------------------------------------------------------------------- photometric
def _motion_kernel(rng: np.random.Generator) -> np.ndarray:
    cv2 = require("cv2")
    k = int(rng.choice([3, 5, 7]))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((k - 1) / 2.0, (k - 1) / 2.0), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    return kernel / max(float(kernel.sum()), 1e-6)


def extreme_exposure(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Squeeze a float image in [0, 1] into a narrow dark or bright band (contrast x0.08-0.35).

    After the uint8 rounding that follows, this leaves a few grey levels of signal, as in an
    under- or over-exposed frame or a foggy scene.
    """
    gain = math.exp(rng.uniform(math.log(0.08), math.log(0.35)))
    level = rng.uniform(0.03, 0.25) if rng.random() < 0.5 else rng.uniform(0.7, 0.95)
    y = (x - float(x.mean())) * gain + level
    return np.clip(y, 0.0, 1.0)


def photometric(image: np.ndarray, rng: np.random.Generator, p: float = 0.5, extreme: float = 0.0) -> np.ndarray:
    """Random brightness, contrast, gamma, motion blur and JPEG, each applied with probability ``p``,
    then, with probability ``extreme``, :func:`extreme_exposure`.

    Args:
        image: uint8 ``[h, w]``.

    Returns:
        uint8 ``[h, w]``.
    """
    cv2 = require("cv2")
    x = image.astype(np.float32) / 255.0
    flags = rng.random(5) < p
    draws = rng.random(6)  # drawn unconditionally: the stream does not depend on the flags
    if flags[0]:  # brightness
        x = x + (draws[0] - 0.5) * 0.4
    if flags[1]:  # contrast
        m = float(x.mean())
        x = (x - m) * (0.7 + 0.6 * draws[1]) + m
    x = np.clip(x, 0.0, 1.0)
    if flags[2]:  # gamma in [0.7, 1.4]
        x = x ** math.exp(math.log(0.7) + draws[2] * (math.log(1.4) - math.log(0.7)))
    if flags[3]:
        x = cv2.filter2D(x, -1, _motion_kernel(np.random.default_rng(int(draws[3] * 2**31))))
    if extreme > 0 and rng.random() < extreme:
        x = extreme_exposure(x, rng)
    out = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if flags[4]:  # JPEG quality 30..90
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(30 + 60 * draws[4])])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def add_noise(
    image: np.ndarray, valid: np.ndarray, rng: np.random.Generator, p: float = 0.5, max_std: float = 0.03
) -> np.ndarray:
    """Additive Gaussian noise (std up to ``max_std``) on valid pixels of a float image in [0, 1]."""
    std = rng.uniform(0.0, max_std)
    noise = rng.standard_normal(image.shape).astype(np.float32) * std
    if rng.random() >= p:
        return image
    return np.where(valid, np.clip(image + noise, 0.0, 1.0), image).astype(np.float32)
