"""Training losses (pure functions of tensors).

Shapes: ``logits``, ``target`` and ``valid`` are ``[B, 1, H, W]`` (``valid`` bool, or None for
all pixels); ``H`` is ``[B, 3, 3]`` mapping view-0 pixels to view-1 pixels (pixel centres at
integers). Per-pixel losses are averaged over valid pixels of the whole batch.

* Phase 1: :func:`focal_loss` (sigmoid focal loss, soft targets allowed) and :func:`bce_loss`.
* Phase 2: :func:`huber_consistency` and :func:`kl_consistency`, each the sum of the
  view-0 -> view-1 and view-1 -> view-0 terms; :func:`warp` warps maps by a homography.
* Phase 2, teacher-free: :func:`repeatability_loss` (R2D2-style local cosine similarity of the
  warped maps, :func:`local_cosine_loss`, and :func:`peakiness_loss`).
* Both phases: :func:`subpixel_loss`, soft-argmax localisation against sub-pixel keypoints.
"""

from __future__ import annotations

from typing import Optional

from ._deps import require

torch = require("torch")
F = torch.nn.functional
Tensor = torch.Tensor

#: A warped pixel counts as valid when its bilinear support lies this much inside the source.
VALID_THRESHOLD = 0.999


def _masked_mean(per_pixel: Tensor, valid: Optional[Tensor]) -> Tensor:
    if valid is None:
        return per_pixel.mean()
    v = valid.to(per_pixel.dtype)
    return (per_pixel * v).sum() / v.sum().clamp_min(1.0)


def focal_loss(
    logits: Tensor, target: Tensor, valid: Optional[Tensor] = None, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over valid pixels.

    ``loss = alpha_t * BCE(logits, t) * (1 - p_t) ** gamma`` with ``p = sigmoid(logits)``,
    ``p_t = p t + (1 - p)(1 - t)`` and ``alpha_t = alpha t + (1 - alpha)(1 - t)``. For binary
    ``t`` this is torchvision's ``sigmoid_focal_loss``; soft targets in [0, 1] use the same
    formula (the usual generalisation). ``alpha < 0`` disables the class weighting.
    """
    t = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t).clamp_min(0) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _masked_mean(loss, valid)


def bce_loss(logits: Tensor, target: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """Binary cross-entropy with logits against (soft) targets in [0, 1], mean over valid pixels."""
    return _masked_mean(F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none"), valid)


def direct_loss(
    name: str, logits: Tensor, target: Tensor, valid: Optional[Tensor], alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """``focal`` or ``bce`` by name (the phase-1 loss, and phase 2's optional direct term)."""
    if name == "focal":
        return focal_loss(logits, target, valid, alpha, gamma)
    if name == "bce":
        return bce_loss(logits, target, valid)
    raise ValueError(f"unknown loss {name!r}; choose from: focal, bce")


# ---------------------------------------------------------------------- warping
def warp(x: Tensor, H: Tensor, size: Optional[tuple[int, int]] = None) -> Tensor:
    """Bilinearly warp ``x [B, C, h, w]`` by ``H [B, 3, 3]`` into ``size = (w', h')``.

    Output pixel ``q`` takes ``x`` at ``H^-1 q``; pixels whose source is outside are 0.
    Differentiable with respect to ``x``.
    """
    kornia = require("kornia")
    w, h = size if size is not None else (x.shape[-1], x.shape[-2])
    return kornia.geometry.transform.warp_perspective(
        x.float(),
        H.to(x.device, torch.float32),
        dsize=(h, w),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )


def warped_valid(valid_src: Tensor, H: Tensor, valid_dst: Tensor) -> Tensor:
    """bool ``[B, 1, h, w]``: destination pixels valid in their own view and whose source
    (through ``H``) is a valid pixel of the source view."""
    return (warp(valid_src.float(), H, (valid_dst.shape[-1], valid_dst.shape[-2])) > VALID_THRESHOLD) & valid_dst


def _huber_term(logits_src: Tensor, H: Tensor, mask_dst: Tensor, valid: Tensor, delta: float) -> Tensor:
    pred = torch.sigmoid(warp(logits_src, H, (mask_dst.shape[-1], mask_dst.shape[-2])))
    per_pixel = F.huber_loss(pred, mask_dst.to(pred.dtype), reduction="none", delta=delta)
    return _masked_mean(per_pixel, valid)


def huber_consistency(
    logits0: Tensor,
    logits1: Tensor,
    mask0: Tensor,
    mask1: Tensor,
    H: Tensor,
    valid0: Tensor,
    valid1: Tensor,
    delta: float = 0.1,
) -> Tensor:
    """``Huber(sigmoid(warp(p0, H)), m1) + Huber(sigmoid(warp(p1, H^-1)), m0)``.

    Args:
        logits0, logits1: the student's logits of view 0 and view 1, ``[B, 1, h, w]``.
        mask0, mask1: blob masks of the matched teacher keypoints in each view, in [0, 1].
        H: ``[B, 3, 3]`` view 0 -> view 1.
        valid0, valid1: bool, pixels of each view that come from the image (not padding).
        delta: Huber delta, in probability units.

    Each term is averaged over the pixels valid in the warped frame (inside the other view
    and valid there).
    """
    Hinv = torch.linalg.inv(H.double()).float()
    a = _huber_term(logits0, H, mask1, warped_valid(valid0, H, valid1), delta)
    b = _huber_term(logits1, Hinv, mask0, warped_valid(valid1, Hinv, valid0), delta)
    return a + b


def spatial_kl(pred_logits: Tensor, target: Tensor, valid: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(target / T) || softmax(pred_logits))`` over the valid pixels of each map,
    averaged over the batch. Inputs ``[B, 1, h, w]``; each image is one distribution."""
    b = pred_logits.shape[0]
    v = valid.reshape(b, -1)
    neg = torch.finfo(torch.float32).min
    logq = torch.log_softmax(pred_logits.float().reshape(b, -1).masked_fill(~v, neg), dim=1)
    t = (target.float().reshape(b, -1) / temperature).masked_fill(~v, neg)
    logp = torch.log_softmax(t, dim=1)
    per = torch.where(v, logp.exp() * (logp - logq), torch.zeros_like(logq)).sum(dim=1)
    has = v.any(dim=1)
    return per[has].sum() / has.sum().clamp_min(1)


def kl_consistency(
    logits0: Tensor,
    logits1: Tensor,
    mask0: Tensor,
    mask1: Tensor,
    H: Tensor,
    valid0: Tensor,
    valid1: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """``KL(log softmax(warp(p0, H)), softmax(m1)) + KL(log softmax(warp(p1, H^-1)), softmax(m0))``.

    Softmax runs over the spatial dimensions of each image (restricted to the pixels valid in
    the warped frame), so each heatmap is treated as a probability distribution. KL is
    ``sum target * (log target - log pred)`` per image, averaged over the batch.
    ``temperature`` divides the masks before their softmax (1: exactly the specified loss).
    Arguments as in :func:`huber_consistency`.
    """
    Hinv = torch.linalg.inv(H.double()).float()
    size0 = (logits0.shape[-1], logits0.shape[-2])
    size1 = (logits1.shape[-1], logits1.shape[-2])
    a = spatial_kl(warp(logits0, H, size1), mask1, warped_valid(valid0, H, valid1), temperature)
    b = spatial_kl(warp(logits1, Hinv, size0), mask0, warped_valid(valid1, Hinv, valid0), temperature)
    return a + b


# ---------------------------------------------------------------------- teacher-free repeatability
def local_cosine_loss(a: Tensor, b: Tensor, valid: Optional[Tensor], patch: int = 16, min_valid: float = 0.5) -> Tensor:
    """``1 - mean`` cosine similarity of co-located ``patch x patch`` patches of two maps.

    Patches overlap by half (stride ``patch // 2``); a patch counts when at least
    ``min_valid`` of its pixels are valid, and its cosine is taken over its valid pixels only.
    Inputs ``[B, 1, h, w]`` (non-negative maps, e.g. probabilities). 0 for identical maps;
    0 when no patch counts.
    """
    v = torch.ones_like(a) if valid is None else valid.to(a.dtype)
    a, b = a.float() * v, b.float() * v
    stride = max(1, patch // 2)

    def pool(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, patch, stride)

    ab, aa, bb, frac = pool(a * b), pool(a * a), pool(b * b), pool(v.float())
    # eps acts as one extra, shared pixel: identical (even all-zero) patches give exactly 1,
    # the cosine stays <= 1, and the root's gradient stays finite on empty patches
    eps = 1e-12
    cos = (ab + eps) / ((aa + eps) * (bb + eps)).sqrt()
    ok = frac >= min_valid
    if not bool(ok.any()):
        return (a * 0).sum()
    return 1 - cos[ok].mean()


def peakiness_loss(prob: Tensor, valid: Optional[Tensor], patch: int = 16) -> Tensor:
    """``1 - mean(local max - local mean)`` of a probability map over its valid pixels.

    Local max and mean over a ``(patch + 1)`` window (odd) centred on each pixel, counting
    valid pixels only. Input ``[B, 1, h, w]`` in [0, 1]; 1 for a flat map, towards 0 for
    isolated peaks on a zero background with at least one peak in every window.
    """
    k = patch + 1 if patch % 2 == 0 else patch
    pad = k // 2
    v = torch.ones_like(prob) if valid is None else valid.to(prob.dtype)
    p = prob.float() * v
    mx = F.max_pool2d(p, k, 1, pad)
    mean = F.avg_pool2d(p, k, 1, pad) / F.avg_pool2d(v.float(), k, 1, pad).clamp_min(1e-6)
    return 1 - _masked_mean(mx - mean, v > 0)


def repeatability_loss(
    logits0: Tensor,
    logits1: Tensor,
    H: Tensor,
    valid0: Tensor,
    valid1: Tensor,
    patch: int = 16,
) -> tuple[Tensor, Tensor]:
    """Teacher-free repeatability (the idea of R2D2's cosine and peakiness losses).

    The student's probabilities of each view are warped into the other (``H``: view 0 ->
    view 1, ``[B, 3, 3]``) and compared patch by patch with :func:`local_cosine_loss` over
    the pixels valid in both; :func:`peakiness_loss` asks each view's map for sharp local
    maxima. Both directions and both views are averaged.

    Returns:
        ``(cosine, peakiness)`` scalar losses, each in [0, 1].
    """
    p0, p1 = torch.sigmoid(logits0.float()), torch.sigmoid(logits1.float())
    Hinv = torch.linalg.inv(H.double()).float()
    size0 = (p0.shape[-1], p0.shape[-2])
    size1 = (p1.shape[-1], p1.shape[-2])
    c01 = local_cosine_loss(warp(p0, H, size1), p1, warped_valid(valid0, H, valid1), patch)
    c10 = local_cosine_loss(warp(p1, Hinv, size0), p0, warped_valid(valid1, Hinv, valid0), patch)
    peaky = 0.5 * (peakiness_loss(p0, valid0, patch) + peakiness_loss(p1, valid1, patch))
    return 0.5 * (c01 + c10), peaky


# ---------------------------------------------------------------------- sub-pixel localisation
def soft_argmax_windows(
    logits: Tensor, points: Tensor, radius: int = 2, temperature: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-argmax of ``logits`` in a ``(2r+1)^2`` window around each point's nearest pixel.

    Args:
        logits: ``[B, 1, h, w]``.
        points: ``[B, K, 2]`` (x, y) pixels.

    Returns:
        ``(xy [B, K, 2]`` soft-argmax positions in pixels (weights ``softmax(logits / T)``
        over the window); ``inside [B, K]`` bool, the whole window lies in the map;
        ``index [B, K, S]`` flat pixel indices of each window, clamped to the map)``.
    """
    b, _, h, w = logits.shape
    k = points.shape[1]
    centre = torch.round(points.detach().float()).long()  # [B, K, 2]
    r = torch.arange(-radius, radius + 1, device=logits.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    dx, dy = dx.reshape(1, 1, -1), dy.reshape(1, 1, -1)  # [1, 1, S]
    xs = centre[..., 0:1] + dx
    ys = centre[..., 1:2] + dy
    inside = ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)).all(dim=-1)
    index = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)  # [B, K, S]
    vals = logits.float().reshape(b, h * w).gather(1, index.reshape(b, -1)).reshape(b, k, -1)
    wts = torch.softmax(vals / temperature, dim=-1)
    off = torch.stack([(wts * dx.float()).sum(-1), (wts * dy.float()).sum(-1)], dim=-1)
    return centre.float() + off, inside, index


def subpixel_loss(
    logits: Tensor,
    points: Tensor,
    point_valid: Tensor,
    valid: Optional[Tensor] = None,
    radius: int = 2,
    temperature: float = 1.0,
) -> Tensor:
    """Mean distance in pixels between the student's soft-argmax near each target point and
    the point (e.g. the teacher's sub-pixel keypoint).

    Args:
        logits: ``[B, 1, h, w]`` student logits.
        points: ``[B, K, 2]`` (x, y) target positions in pixels (padded to K).
        point_valid: ``[B, K]`` bool, False for padding.
        valid: ``[B, 1, h, w]`` bool valid pixels; a point counts only when its whole window
            is valid and inside the map.

    Differentiable with respect to ``logits``; 0 when no point counts.
    """
    xy, inside, index = soft_argmax_windows(logits, points, radius, temperature)
    ok = point_valid.bool() & inside
    if valid is not None:
        b = valid.shape[0]
        win = valid.reshape(b, -1).gather(1, index.reshape(b, -1)).reshape(index.shape)
        ok = ok & win.all(dim=-1)
    if not bool(ok.any()):
        return (logits.float() * 0).sum()
    d = ((xy - points.float()) ** 2).sum(-1).add(1e-8).sqrt()
    return d[ok].mean()
