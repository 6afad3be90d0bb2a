"""Phase 1 of distillation: keypointness.

``python -m training.phase1 --cache CACHE [--target sparse|blob|dense] [--loss focal|bce] ...``

Fine-tunes the whole student (backbone + FPN + head) on teacher labels from a label cache:
each image is photometrically and geometrically augmented (random scale, rotation, small
perspective, crop), its labels moved with it, and the logits at crop resolution are trained
against the target with the sigmoid focal loss (the original design: ``--target sparse
--loss focal``) or BCE. Defaults: ``--target dense --loss bce`` (the teacher's dense score map;
needs a cache built with ``--dense``). ``--subpixel-weight w`` (default 0) adds ``w`` times
:func:`training.losses.subpixel_loss` at the teacher's sub-pixel keypoints (logged as
``train/subpixel``, in pixels). AdamW, linear warm-up then cosine decay. See
:mod:`training.train_config` for every option and :mod:`training.trainer` for checkpoints,
resume, logging, validation and multi-process runs (``torchrun --nproc_per_node N -m
training.phase1 ...``).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from .data import Phase1Dataset
from .losses import direct_loss, subpixel_loss
from .train_config import TrainConfig
from .trainer import Batch, Forward, run


class Phase1Task:
    """Dataset and loss of phase 1."""

    phase = 1
    images_per_sample = 1

    def dataset(self, cache: Any, config: TrainConfig) -> Phase1Dataset:
        return Phase1Dataset(cache, config)

    def loss(self, forward: Forward, batch: Batch, config: TrainConfig) -> tuple[Any, dict[str, float], tuple]:
        logits = forward(batch["image"])
        loss = direct_loss(config.loss, logits, batch["target"], batch["valid"], config.focal_alpha, config.focal_gamma)
        parts: dict[str, float] = {}
        if config.subpixel_weight > 0:
            sp = subpixel_loss(
                logits,
                batch["kpts"],
                batch["kpts_valid"],
                batch["valid"],
                config.subpixel_radius,
                config.subpixel_temperature,
            )
            parts = {"direct": float(loss.detach()), "subpixel": float(sp.detach())}
            loss = loss + config.subpixel_weight * sp
        return loss, parts, (batch["image"][0], logits[0].detach(), batch["target"][0])


def main(argv: Optional[list[str]] = None) -> int:
    return run(Phase1Task(), argv, "Distillation phase 1: train the student on teacher keypoint labels.")


if __name__ == "__main__":
    sys.exit(main())
