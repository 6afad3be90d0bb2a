"""Everything between the network's output and keypoints in image pixels, in one place.

- :func:`resolve_config`: the decoding settings for a model: calibrated defaults from its
  metadata, ``grid`` implying the grid distribution, and the rules of a graph with built-in
  decoding (what it fixes, what may still change);
- :func:`to_model_units`: radius and border from original-image pixels to heatmap pixels;
- :func:`unpack_fixed_k`: the fixed-K outputs of in-graph decoding -> valid rows;
- :func:`decode_output`: one image of a :class:`~kpnet.backends.BackendOutput` -> :class:`Keypoints`,
  on the host (numpy) or on the device (torch: plain top-k there, anything else through the
  host), with the mask, the contrast gate, greedy ``min_distance`` and the mapping to image pixels.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from .backends.base import BackendInfo, BackendOutput
from .config import DecodeConfig
from .errors import ConfigError, InvalidImageError
from .postprocess import CONTRAST_CELL, cell_contrast
from .postprocess import decode as host_decode
from .preprocess import Resize
from .types import DEFAULT_KEYPOINT_SIZE, Keypoints

#: Settings a graph with built-in decoding fixes at export.
IN_GRAPH_FIXED = ("nms_radius", "border")
#: Settings that need the heatmap (not available from a graph with built-in decoding).
NEEDS_HEATMAP = ("subpixel", "distribution", "min_distance")


def resolve_config(requested: dict[str, Any], info: BackendInfo) -> DecodeConfig:
    """DecodeConfig for ``info``'s model from the settings the caller passed (``requested``;
    absent keys take the model's calibrated defaults, then DecodeConfig's)."""
    req = dict(requested)
    if req.get("grid") is not None and "distribution" not in req:
        req["distribution"] = "grid"  # grid= implies the grid distribution
    for key, value in info.defaults.items():
        req.setdefault(key, value)
    if not info.postprocess_in_graph:
        return DecodeConfig(**req)
    baked = DecodeConfig.from_dict(info.decode or {})
    where = info.model_path
    for key in IN_GRAPH_FIXED:
        if key in req and req[key] != getattr(baked, key):
            raise ConfigError(
                f"{where} has post-processing inside the graph with {key}={getattr(baked, key)}; got "
                f"{key}={req[key]}. Re-export with the value you need or use a model without --with-postprocess"
            )
    if req.get("subpixel"):
        raise ConfigError(
            f"{where} decodes inside the graph, which has no sub-pixel refinement; use a model exported without --with-postprocess"
        )
    if req.get("distribution", "topk") != "topk" or req.get("min_distance", 0) > 0:
        raise ConfigError(
            f"{where} decodes inside the graph (plain NMS + top-k); distribution='grid'/'anms' "
            "and min_distance need the heatmap: use a model exported without --with-postprocess"
        )
    thr = req.get("threshold", baked.threshold)
    if thr < baked.threshold:
        raise ConfigError(
            f"{where} drops points at or below threshold={baked.threshold} inside the graph; got threshold={thr}. "
            "A higher threshold works; for a lower one re-export with --threshold"
        )
    k = req.get("max_keypoints", baked.max_keypoints)
    if k > baked.max_keypoints:
        raise ConfigError(
            f"max_keypoints={k} exceeds the K={baked.max_keypoints} baked into {where}; re-export with a larger --max-keypoints"
        )
    return replace(baked, max_keypoints=k, threshold=thr, min_contrast=req.get("min_contrast", 0.0))


def to_model_units(cfg: DecodeConfig, rs: Resize, in_graph: bool = False) -> DecodeConfig:
    """``cfg`` with ``nms_radius`` and ``border`` converted from original-image pixels to
    heatmap pixels of ``rs`` (radius rounded, border rounded up). Unchanged when the graph
    decodes (its values are in heatmap pixels already) or the scale is 1."""
    sx, sy = rs.scale
    if in_graph or (sx == 1.0 and sy == 1.0):
        return cfg
    s = 0.5 * (sx + sy)
    r = int(round(cfg.nms_radius / s))
    if cfg.nms_radius > 0:
        r = max(1, r)
    b = int(math.ceil(cfg.border / min(sx, sy) - 1e-6))
    return replace(cfg, nms_radius=r, border=b)


def unpack_fixed_k(out: BackendOutput, i: int, k: int):
    """Valid rows of image ``i`` of fixed-K outputs: (xy [n, 2] model pixels, scores [n]),
    numpy or torch as the outputs, n = min(counts[i], k)."""
    n = min(int(out.counts[i]), k)
    return out.keypoints[i, :n].float() if out.is_torch else out.keypoints[i, :n].astype(np.float32), (
        out.scores[i, :n].float() if out.is_torch else out.scores[i, :n].astype(np.float32)
    )


def check_mask(mask: object, size: tuple[int, int]) -> np.ndarray:
    """Validate a detection mask (HxW at the image size, non-zero = allowed) -> bool HxW."""
    w, h = size
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.shape != (h, w):
        got = tuple(mask.shape) if hasattr(mask, "shape") else type(mask).__name__
        raise InvalidImageError(f"mask must be a 2-D uint8 or bool numpy array of the image's size {h}x{w}, got {got}")
    if mask.dtype not in (np.uint8, np.bool_):
        raise InvalidImageError(f"mask dtype must be uint8 or bool (non-zero = allowed), got {mask.dtype}")
    return mask.astype(bool, copy=False)


def mask_to_model(mask: np.ndarray, model_size: tuple[int, int]) -> np.ndarray:
    """Original-size bool mask -> model-size (w, h) bool mask, allowed only where fully allowed."""
    import cv2

    if mask.shape[::-1] == tuple(model_size):
        return mask
    area = cv2.resize(mask.astype(np.float32), tuple(model_size), interpolation=cv2.INTER_AREA)
    return area >= 0.999


def _gate_points(xy: np.ndarray, contrast: np.ndarray, min_contrast: float) -> np.ndarray:
    c = CONTRAST_CELL
    cx = np.clip((np.rint(xy[:, 0]).astype(np.int64)) // c, 0, contrast.shape[1] - 1)
    cy = np.clip((np.rint(xy[:, 1]).astype(np.int64)) // c, 0, contrast.shape[0] - 1)
    return contrast[cy, cx] > min_contrast


def decode_output(
    out: BackendOutput,
    i: int,
    cfg: DecodeConfig,
    rs: Resize,
    *,
    image: Any = None,
    mask: np.ndarray | None = None,
    in_graph: bool = False,
    keypoint_size: float = DEFAULT_KEYPOINT_SIZE,
) -> Keypoints:
    """Image ``i`` of a backend output -> Keypoints in original-image pixels.

    Args:
        cfg: settings in original-image pixels (:func:`resolve_config`).
        rs: the image's Resize (model frame <-> original image).
        image: the prepared working image [H, W] (numpy) or [1, 1, H, W] / [H, W] (torch),
            for the contrast gate; needed when ``cfg.min_contrast`` > 0.
        mask: bool/uint8 HxW at the original size, non-zero = allowed.
    Torch outputs give torch Keypoints on their device; plain top-k decodes there, anything
    else (grid, ANMS, min_distance, sub-pixel, a mask) runs on the host and is moved back.
    """
    mcfg = to_model_units(cfg, rs, in_graph)
    meta = {"size": float(keypoint_size), "working_size": (rs.model_size[1], rs.model_size[0])}
    orig_mask = None if mask is None else check_mask(mask, rs.orig_size)
    device = None
    if out.is_torch:
        import torch

        ref = out.heatmap if out.heatmap is not None else out.keypoints
        device = ref.device
        gate_t = None
        if cfg.min_contrast > 0 and image is not None:
            from .postprocess_torch import cell_contrast as torch_contrast

            img_t = image if image.ndim == 4 else image[None, None]
            gate_t = torch_contrast(img_t)
        if out.heatmap is not None and mcfg.is_plain_topk_or_gated() and orig_mask is None:
            from .postprocess_torch import decode as torch_decode

            ((xy, sc),) = torch_decode(out.heatmap[i : i + 1].float(), mcfg, contrast=gate_t)
            return Keypoints(xy=rs.to_original(xy), scores=sc, image_size=rs.orig_size, meta=meta)
        # Host path for everything else; results go back to the device below.
        out = out.numpy()
        if image is not None:
            image = image.detach().float().cpu().numpy().reshape(image.shape[-2:])
    contrast = None
    if cfg.min_contrast > 0:
        if image is None:
            raise ConfigError("min_contrast > 0 needs the prepared image (decode_output(image=...))")
        contrast = cell_contrast(np.asarray(image, np.float32).reshape(image.shape[-2:]))
    if out.heatmap is not None:
        allowed = None if orig_mask is None else mask_to_model(orig_mask, rs.model_size)
        suppress = None
        if cfg.min_distance > 0:
            from .selection import greedy_suppress

            def suppress(xy_m: np.ndarray, key: np.ndarray) -> np.ndarray:
                return greedy_suppress(rs.to_original(xy_m), key, float(cfg.min_distance))

        xy, scores = host_decode(out.heatmap[i, 0], mcfg, allowed=allowed, contrast=contrast, suppress=suppress)
    else:
        xy, scores = unpack_fixed_k(out, i, cfg.max_keypoints)
        keep = scores > cfg.threshold
        if contrast is not None:
            keep &= _gate_points(xy, contrast, cfg.min_contrast)
        xy, scores = xy[keep], scores[keep]
    xy = rs.to_original(xy)
    if orig_mask is not None and len(xy):
        # Exact check in original pixels (the model-resolution mask is conservative already).
        w, h = rs.orig_size
        xi = np.clip(np.rint(xy[:, 0]).astype(np.int64), 0, w - 1)
        yi = np.clip(np.rint(xy[:, 1]).astype(np.int64), 0, h - 1)
        ok = orig_mask[yi, xi]
        xy, scores = xy[ok], scores[ok]
    if device is not None:
        import torch

        xy, scores = torch.from_numpy(xy).to(device), torch.from_numpy(scores).to(device)
    return Keypoints(xy=xy, scores=scores, image_size=rs.orig_size, meta=meta)
