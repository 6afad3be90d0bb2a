"""Phase 2 of distillation: homography consistency.

``python -m training.phase2 --cache CACHE --init PHASE1_CKPT [--loss huber|kl] ...``

Each sample is an image and its homography-warped copy (the cache's pairs, each view further
augmented and cropped; ``H`` maps view-0 crop pixels to view-1 crop pixels), with masks
``m``, ``m'`` built from the LightGlue-matched teacher keypoints as Gaussian blobs (peak
0.9, floor 0.1). Both views go through the student in one batch (logits ``p``, ``p'``) and:

* ``--loss huber``: ``Huber(sigmoid(warp(p, H)), m') + Huber(sigmoid(warp(p', H^-1)), m)``,
  delta ``--huber-delta``, over the pixels valid in the warped frame;
* ``--loss kl``: ``KL(log softmax(warp(p, H)), softmax(m')) + KL(log softmax(warp(p', H^-1)),
  softmax(m))``, softmax over the spatial dimensions, ``--kl-temperature T`` dividing the
  masks (T=1: exactly this loss).

``--direct-weight w`` (default 0: the consistency loss alone) adds ``w`` times the phase-1
loss (``--direct-loss``, ``--target``) of each view against its own labels.

Optional terms (each default 0, logged under its own name):

* ``--repeat-weight w``: teacher-free repeatability (:func:`training.losses.repeatability_loss`,
  the idea of R2D2): ``w * (cosine + --repeat-peaky * peakiness)`` with the local cosine
  similarity of ``--repeat-patch`` patches of the two views' probabilities warped onto each
  other and the peakiness ``1 - mean(local max - local mean)``; logged as ``train/repeat``,
  ``train/repeat_cosim``, ``train/repeat_peaky``.
* ``--subpixel-weight w``: soft-argmax localisation at the matched teacher keypoints of both
  views (:func:`training.losses.subpixel_loss`, ``train/subpixel`` in pixels).

Rotation and scale: ``--max-rotation-deg 180`` rotates each view uniformly over the circle
(so the pair differs by any angle), ``--scale-range`` scales each view (relative scale up to
HIGH/LOW); ``--pad-fill mean`` and ``--valid-erode N`` handle the rotated views' corners.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from .data import Phase2Dataset
from .losses import direct_loss, huber_consistency, kl_consistency, repeatability_loss, subpixel_loss, torch
from .train_config import TrainConfig
from .trainer import Batch, Forward, run


class Phase2Task:
    """Dataset and loss of phase 2."""

    phase = 2
    images_per_sample = 2

    def dataset(self, cache: Any, config: TrainConfig) -> Phase2Dataset:
        return Phase2Dataset(cache, config)

    def loss(self, forward: Forward, batch: Batch, config: TrainConfig) -> tuple[Any, dict[str, float], tuple]:
        logits = forward(torch.cat([batch["image0"], batch["image1"]]))
        l0, l1 = logits.chunk(2)
        args = (l0, l1, batch["mask0"], batch["mask1"], batch["H"], batch["valid0"], batch["valid1"])
        if config.loss == "huber":
            cons = huber_consistency(*args, delta=config.huber_delta)
        else:
            cons = kl_consistency(*args, temperature=config.kl_temperature)
        loss, parts = cons, {}
        if config.direct_weight > 0:
            d = sum(
                direct_loss(
                    config.direct_loss,
                    lg,
                    batch[f"target{v}"],
                    batch[f"valid{v}"],
                    config.focal_alpha,
                    config.focal_gamma,
                )
                for v, lg in ((0, l0), (1, l1))
            )
            loss = cons + config.direct_weight * d
            parts = {"consistency": float(cons.detach()), "direct": float(d.detach())}
        if config.repeat_weight > 0:
            cos, peaky = repeatability_loss(l0, l1, batch["H"], batch["valid0"], batch["valid1"], config.repeat_patch)
            rep = cos + config.repeat_peaky * peaky
            loss = loss + config.repeat_weight * rep
            parts.update(
                repeat=float(rep.detach()), repeat_cosim=float(cos.detach()), repeat_peaky=float(peaky.detach())
            )
        if config.subpixel_weight > 0:
            sp = 0.5 * sum(
                subpixel_loss(
                    lg,
                    batch[f"kpts{v}"],
                    batch[f"kpts{v}_valid"],
                    batch[f"valid{v}"],
                    config.subpixel_radius,
                    config.subpixel_temperature,
                )
                for v, lg in ((0, l0), (1, l1))
            )
            loss = loss + config.subpixel_weight * sp
            parts["subpixel"] = float(sp.detach())
        if parts:
            parts.setdefault("consistency", float(cons.detach()))
        return loss, parts, (batch["image1"][0], l1[0].detach(), batch["mask1"][0])


def main(argv: Optional[list[str]] = None) -> int:
    return run(Phase2Task(), argv, "Distillation phase 2: homography-consistency training from a phase-1 model.")


if __name__ == "__main__":
    sys.exit(main())
