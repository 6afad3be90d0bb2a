"""Random homographies and warping of images, points, heatmaps and masks.

The sampler follows SuperPoint's homographic adaptation: a centred patch of
``patch_ratio`` times the image is perturbed (perspective jitter of its
corners, scaling, translation, rotation), every step keeping the patch inside
the frame unless ``allow_artifacts``; the homography maps the perturbed patch
onto the whole frame. So the warped image is a view into the original with no
(or, with artifacts allowed, few) pixels from outside it.

Conventions: ``H`` maps pixel ``(x, y)`` of image 0 to pixel ``H (x, y, 1)`` of
image 1 (the warped image); pixel centres at integer coordinates; sizes are
``(width, height)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from ._deps import require

if TYPE_CHECKING:  # torch is imported where it is used (require), not at import time
    import torch

Size = tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class HomographyConfig:
    """Ranges of the random homography (SuperPoint homographic-adaptation style).

    Attributes:
        patch_ratio: side of the centred patch as a fraction of the image, (0, 1].
        perspective: enable perspective jitter of the patch corners.
        perspective_amplitude_x: max corner jitter as a fraction of the patch
            width, in [0, 0.5).
        perspective_amplitude_y: same for the height.
        scaling: enable scaling of the patch.
        scaling_amplitude: scales drawn around 1 with std ``amplitude / 2``,
            clipped to ``1 +- amplitude``; in [0, 1).
        n_scales: number of candidate scales (plus 1.0, always valid).
        translation: enable translation of the patch inside the frame.
        translation_overflow: allowed overflow outside the frame, as a
            fraction of the image size, when ``allow_artifacts``.
        rotation: enable rotation of the patch around its centre.
        max_angle_deg: largest rotation in degrees, in [0, 180].
        n_angles: number of candidate angles (plus 0, always valid).
        allow_artifacts: let the patch leave the frame (the warped image then
            has invalid pixels; see :func:`valid_mask`).
    """

    patch_ratio: float = 0.85
    perspective: bool = True
    perspective_amplitude_x: float = 0.1
    perspective_amplitude_y: float = 0.1
    scaling: bool = True
    scaling_amplitude: float = 0.2
    n_scales: int = 5
    translation: bool = True
    translation_overflow: float = 0.0
    rotation: bool = True
    max_angle_deg: float = 30.0
    n_angles: int = 25
    allow_artifacts: bool = False

    def __post_init__(self) -> None:
        checks = [
            (0 < self.patch_ratio <= 1, "patch_ratio must be in (0, 1]"),
            (0 <= self.perspective_amplitude_x < 0.5, "perspective_amplitude_x must be in [0, 0.5)"),
            (0 <= self.perspective_amplitude_y < 0.5, "perspective_amplitude_y must be in [0, 0.5)"),
            (0 <= self.scaling_amplitude < 1, "scaling_amplitude must be in [0, 1)"),
            (self.n_scales >= 1, "n_scales must be >= 1"),
            (self.n_angles >= 1, "n_angles must be >= 1"),
            (0 <= self.max_angle_deg <= 180, "max_angle_deg must be in [0, 180]"),
            (0 <= self.translation_overflow < 1, "translation_overflow must be in [0, 1)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"invalid HomographyConfig: {msg}; got {self}")


def _truncnorm(rng: np.random.Generator, amplitude: float, size: int) -> np.ndarray:
    """Normal(0, amplitude / 2) clipped to [-amplitude, amplitude]."""
    return np.clip(rng.normal(0.0, amplitude / 2.0, size), -amplitude, amplitude)


def _inside(corners: np.ndarray, half: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """corners [..., 4, 2] centre-relative; True where all lie in the frame + margin."""
    return np.all(np.abs(corners) <= half + margin + 1e-9, axis=(-2, -1))


def sample_homography(size: Size, config: HomographyConfig, rng: np.random.Generator) -> np.ndarray:
    """Draw a random homography for an image of ``size = (width, height)``.

    Returns:
        float64 ``[3, 3]`` mapping image-0 pixels to warped-image pixels.
    """
    cv2 = require("cv2")
    w, h = size
    half = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    margin = half * 2 * config.translation_overflow if config.allow_artifacts else np.zeros(2)
    pw, ph = config.patch_ratio * (w - 1), config.patch_ratio * (h - 1)
    # corners relative to the image centre: TL, TR, BR, BL
    corners = np.array([[-pw / 2, -ph / 2], [pw / 2, -ph / 2], [pw / 2, ph / 2], [-pw / 2, ph / 2]])

    if config.perspective:
        jitter = np.stack(
            [
                _truncnorm(rng, config.perspective_amplitude_x, 4) * pw,
                _truncnorm(rng, config.perspective_amplitude_y, 4) * ph,
            ],
            axis=1,
        )
        moved = corners + jitter
        if config.allow_artifacts or _inside(moved, half, margin):
            corners = moved

    def pick(candidates: np.ndarray) -> np.ndarray:
        ok = np.ones(len(candidates), bool) if config.allow_artifacts else _inside(candidates, half, margin)
        idx = np.flatnonzero(ok)
        return candidates[rng.choice(idx)] if len(idx) else candidates[0]

    if config.scaling:
        scales = np.concatenate([[1.0], 1.0 + _truncnorm(rng, config.scaling_amplitude, config.n_scales)])
        centre = corners.mean(axis=0)
        corners = pick((corners - centre)[None] * scales[:, None, None] + centre)

    if config.translation:
        lo = -half - margin - corners.min(axis=0)
        hi = half + margin - corners.max(axis=0)
        if np.all(hi >= lo):
            corners = corners + rng.uniform(lo, hi)

    if config.rotation and config.max_angle_deg > 0:
        amax = math.radians(config.max_angle_deg)
        angles = np.concatenate([[0.0], np.linspace(-amax, amax, config.n_angles)])
        c, s = np.cos(angles), np.sin(angles)
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], 1)  # [n, 2, 2]
        centre = corners.mean(axis=0)
        corners = pick(np.einsum("nij,kj->nki", rot, corners - centre) + centre)

    src = (corners + half).astype(np.float32)
    dst = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def rotation_homography(size: Size, angle_deg: float) -> np.ndarray:
    """float64 ``[3, 3]`` rotation of an image of ``size = (width, height)`` about its centre
    ``((w - 1) / 2, (h - 1) / 2)`` (pixel centres at integers) by ``angle_deg`` degrees,
    counter-clockwise as displayed (y points down), onto the same canvas. Exact (no rounding)
    for multiples of 90 degrees."""
    w, h = size
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    quarters = float(angle_deg) / 90.0
    if abs(quarters - round(quarters)) < 1e-12:
        c, s = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(round(quarters)) % 4]
    else:
        c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    # displayed counter-clockwise with y down: x' - cx = c (x - cx) + s (y - cy), y' - cy = -s (x - cx) + c (y - cy)
    return np.array([[c, s, cx - c * cx - s * cy], [-s, c, cy + s * cx - c * cy], [0.0, 0.0, 1.0]], np.float64)


ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821


def warp_points(H: ArrayLike, points: ArrayLike) -> ArrayLike:
    """Apply homography ``H [3, 3]`` to ``points [N, 2]`` (x, y) pixels.

    Works on numpy arrays and torch tensors; returns the same type.
    """
    if isinstance(points, np.ndarray):
        H = np.asarray(H, dtype=np.float64)
        p = points.astype(np.float64) @ H[:2, :2].T + H[:2, 2]
        z = points.astype(np.float64) @ H[2, :2] + H[2, 2]
        return (p / z[:, None]).astype(points.dtype if points.dtype.kind == "f" else np.float64)
    torch = require("torch")
    Ht = torch.as_tensor(H, dtype=torch.float64, device=points.device)
    pd = points.double()
    p = pd @ Ht[:2, :2].T + Ht[:2, 2]
    z = pd @ Ht[2, :2] + Ht[2, 2]
    out = p / z[:, None]
    return out.to(points.dtype) if points.is_floating_point() else out


def points_inside(points: ArrayLike, size: Size, border: float = 0.0) -> ArrayLike:
    """Boolean ``[N]``: points within ``[border, w-1-border] x [border, h-1-border]``."""
    w, h = size
    x, y = points[:, 0], points[:, 1]
    return (x >= border) & (x <= w - 1 - border) & (y >= border) & (y <= h - 1 - border)


def _as_batch_h(H: ArrayLike, batch: int, like: "torch.Tensor") -> "torch.Tensor":
    torch = require("torch")
    Ht = torch.as_tensor(np.asarray(H) if not isinstance(H, torch.Tensor) else H).to(like.device, torch.float32)
    if Ht.dim() == 2:
        Ht = Ht[None].expand(batch, 3, 3)
    if Ht.shape != (batch, 3, 3):
        raise ValueError(f"homography must be [3, 3] or [{batch}, 3, 3]; got {tuple(Ht.shape)}")
    return Ht


def warp_image(image: "torch.Tensor", H: ArrayLike, size: Size | None = None, mode: str = "bilinear") -> "torch.Tensor":
    """Warp ``image [B, C, h, w]`` by ``H`` into an image of ``size = (w', h')``.

    Pixels that come from outside the source are 0 (see :func:`valid_mask`).
    ``mode`` is ``'bilinear'`` for images and heatmaps, ``'nearest'`` for masks.
    """
    kornia = require("kornia")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"unknown warp mode {mode!r}; choose from: bilinear, nearest")
    if image.dim() != 4:
        raise ValueError(f"image must be [B, C, H, W]; got {tuple(image.shape)}")
    w, h = size if size is not None else (image.shape[-1], image.shape[-2])
    Hb = _as_batch_h(H, image.shape[0], image)
    dtype = image.dtype
    out = kornia.geometry.transform.warp_perspective(
        image.float(), Hb, dsize=(h, w), mode=mode, padding_mode="zeros", align_corners=True
    )
    return out.to(dtype)


def warp_heatmap(heatmap: "torch.Tensor", H: ArrayLike, size: Size | None = None) -> "torch.Tensor":
    """Warp a ``[B, 1, h, w]`` (or ``[h, w]``) score map bilinearly; 0 outside."""
    if heatmap.dim() == 2:
        return warp_image(heatmap[None, None], H, size)[0, 0]
    return warp_image(heatmap, H, size)


def warp_mask(mask: "torch.Tensor", H: ArrayLike, size: Size | None = None) -> "torch.Tensor":
    """Warp a binary ``[B, 1, h, w]`` (or ``[h, w]``) mask with nearest sampling; False outside."""
    m = mask[None, None] if mask.dim() == 2 else mask
    out = warp_image(m.float(), H, size, mode="nearest") > 0.5
    return out[0, 0] if mask.dim() == 2 else out


def valid_mask(H: ArrayLike, src_size: Size, dst_size: Size | None = None) -> np.ndarray:
    """Boolean ``[h', w']``: warped-image pixels whose source lies inside image 0.

    Exact (analytic): each destination pixel is mapped back by ``H^-1``.
    """
    w2, h2 = dst_size if dst_size is not None else src_size
    xs, ys = np.meshgrid(np.arange(w2, dtype=np.float64), np.arange(h2, dtype=np.float64))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    back = warp_points(np.linalg.inv(np.asarray(H, dtype=np.float64)), pts)
    return points_inside(back, src_size).reshape(h2, w2)
