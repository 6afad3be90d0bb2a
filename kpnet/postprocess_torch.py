"""Heatmap -> keypoints decoding in torch, with the semantics of :mod:`kpnet.postprocess`.

:func:`decode` matches the numpy version (variable N, deterministic tie-breaking).
:class:`FixedKDecoder` is the export-friendly variant: fixed K, no data-dependent shapes,
so it can go inside an ONNX/TensorRT graph. Its outputs are keypoints [B, K, 2], scores
[B, K] (0 marks padding) and counts [B] (number of valid rows). TensorRT's TopK limits K to
3840 (``kpnet.config.TENSORRT_MAX_TOPK``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecodeConfig
from .postprocess import logit


def nms_mask(prob: torch.Tensor, radius: int) -> torch.Tensor:
    """bool [..., H, W]: pixel equals the max of its (2r+1)^2 window (max-pool with -inf pad)."""
    if radius == 0:
        return torch.ones_like(prob, dtype=torch.bool)
    shape = prob.shape
    x = prob.reshape(-1, 1, shape[-2], shape[-1])
    pooled = F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return (x == pooled).reshape(shape)


def border_mask(h: int, w: int, border: int, device: torch.device | None = None) -> torch.Tensor:
    """bool [H, W]: False within ``border`` pixels of the edge."""
    m = torch.zeros(h, w, dtype=torch.bool, device=device)
    if 2 * border < h and 2 * border < w:
        m[border : h - border, border : w - border] = True
    return m


def cell_contrast(image: torch.Tensor, cell: int = 4) -> torch.Tensor:
    """Torch version of :func:`kpnet.postprocess.cell_contrast`: image [B, 1, H, W] in [0, 1]
    -> grey-level contrast [B, 1, H // cell, W // cell] (3x3-cell windows shrink at the edges
    instead of OpenCV's reflection, so edge cells can differ slightly)."""
    small = F.avg_pool2d(image.float(), cell) * 255.0
    m = F.avg_pool2d(small, 3, stride=1, padding=1, count_include_pad=False)
    m2 = F.avg_pool2d(small * small, 3, stride=1, padding=1, count_include_pad=False)
    return (m2 - m * m).clamp(min=0).sqrt()


def candidate_scores(
    heat: torch.Tensor, config: DecodeConfig, *, is_logits: bool = True, contrast: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, 1, H, W] -> [B, H*W]: the heatmap value (logit or probability) where a point
    survives NMS, border, threshold and (with ``contrast`` [B, 1, H/4, W/4] and
    ``config.min_contrast``) the contrast gate, else -inf."""
    work = heat[:, 0]
    h, w = work.shape[-2:]
    thr = logit(config.threshold) if is_logits else config.threshold
    keep = nms_mask(work, config.nms_radius)
    keep = keep & border_mask(h, w, config.border, work.device)
    keep = keep & (work > thr)
    if contrast is not None and config.min_contrast > 0:
        gate = (contrast > config.min_contrast).float()
        gate = F.interpolate(gate, size=(h, w), mode="nearest")[:, 0] > 0.5
        keep = keep & gate
    return torch.where(keep, work, torch.full_like(work, float("-inf"))).flatten(1)


def refine_subpixel(prob: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Quadratic 3x3 refinement as in the numpy version. prob [H, W], xy long [N, 2]."""
    h, w = prob.shape
    x, y = xy[:, 0], xy[:, 1]
    p = prob.double()
    c = p[y, x]
    left, right = p[y, (x - 1).clamp(0, w - 1)], p[y, (x + 1).clamp(0, w - 1)]
    up, down = p[(y - 1).clamp(0, h - 1), x], p[(y + 1).clamp(0, h - 1), x]

    def offset(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        den = a - 2.0 * c + b
        safe = torch.where(den < 0, den, torch.full_like(den, -1.0))
        d = torch.where(den < 0, 0.5 * (a - b) / safe, torch.zeros_like(den))
        return d.clamp(-0.5, 0.5)

    return torch.stack([x + offset(left, right), y + offset(up, down)], dim=1).float()


def decode(
    heat: torch.Tensor, config: DecodeConfig, *, is_logits: bool = True, contrast: torch.Tensor | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Decode a batch [B, 1, H, W] into a list of (xy float32 [N, 2], scores float32 [N]).

    Same results as :func:`kpnet.postprocess.decode` (plain top-k): ties broken by lower
    row-major index.
    """
    w = heat.shape[-1]
    cand = candidate_scores(heat, config, is_logits=is_logits, contrast=contrast)
    out = []
    for b in range(cand.shape[0]):
        s = cand[b]
        idx = torch.nonzero(torch.isfinite(s), as_tuple=False).squeeze(1)  # ascending index
        vals = s[idx]
        # Stable sort keeps ascending index among equal values.
        order = torch.sort(vals, descending=True, stable=True).indices[: config.max_keypoints]
        idx, vals = idx[order], vals[order]
        xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=1)
        xy = refine_subpixel(heat[b, 0], xy) if config.subpixel else xy.float()
        scores = torch.sigmoid(vals) if is_logits else vals
        out.append((xy, scores.float()))
    return out


class FixedKDecoder(nn.Module):
    """Export-friendly decoding with a fixed K.

    logits [B, 1, H, W] -> keypoints float32 [B, K, 2] (x, y in heatmap pixels, 0 for padding),
    scores float32 [B, K] (probabilities; 0 marks padding), counts int64 [B] (valid rows).
    ONNX TopK breaks ties by lower index, matching the host decoder. Sub-pixel refinement is
    not part of the graph. K must not exceed H*W.
    """

    def __init__(self, config: DecodeConfig) -> None:
        super().__init__()
        if config.subpixel:
            raise ValueError("in-graph decoding does not support subpixel=True; refine on the host")
        self.config = config

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = logits.shape[-1]
        cand = candidate_scores(logits, self.config)
        vals, idx = torch.topk(cand, self.config.max_keypoints, dim=1, largest=True, sorted=True)
        valid = torch.isfinite(vals)
        x = (idx % w).float()
        y = torch.div(idx, w, rounding_mode="floor").float()
        xy = torch.stack([x, y], dim=-1) * valid.unsqueeze(-1).float()
        scores = torch.where(valid, torch.sigmoid(vals), torch.zeros_like(vals))
        return xy, scores, valid.sum(dim=1)
