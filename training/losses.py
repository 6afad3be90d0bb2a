"""Training losses (pure functions of tensors).

Shapes: ``logits``, ``target`` and ``valid`` are ``[B, 1, H, W]`` (``valid`` bool, or None for
all pixels); ``H`` is ``[B, 3, 3]`` mapping view-0 pixels to view-1 pixels (pixel centres at
integers). Per-pixel losses are averaged over valid pixels of the whole batch.

* Phase 1: :func:`focal_loss` (sigmoid focal loss, soft targets allowed) and :func:`bce_loss`.
* Phase 2: :func:`huber_consistency` and :func:`kl_consistency`, each the sum of the
  view-0 -> view-1 and view-1 -> view-0 terms; :func:`warp` warps maps by a homography.
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
        x.float(), H.to(x.device, torch.float32), dsize=(h, w), mode="bilinear", padding_mode="zeros", align_corners=True
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
