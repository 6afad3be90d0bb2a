"""Ensemble teacher: the mean of several teachers' dense score maps.

Named by joining members with ``+`` (``--teacher aliked-n16+aliked-n16rot``). Rule for the
sparse labels (documented in the manifest's teacher settings):

* dense map: the per-pixel mean of the members' :meth:`dense_map` (each in [0, 1]);
* keypoints and scores: the mean map decoded by the **first** member's own detector
  (:meth:`Teacher.keypoints_from_map`; for ALIKED its DKD with sub-pixel refinement), with the
  ensemble's ``max_keypoints``, ``detection_threshold`` and ``nms_radius``;
* descriptors: the first member's descriptors at those keypoints, so LightGlue matches the
  pairs with the first member's weights (``aliked`` for ALIKED models, ``disk`` for DISK).
"""

from __future__ import annotations

from typing import Any

from .._deps import require
from .base import Features, Teacher, check_images

torch = require("torch")


class EnsembleTeacher(Teacher):
    """Mean of the members' dense maps; keypoints and descriptors by the first member.

    Args:
        members: built teachers, at least two; the first decodes and describes.
    """

    def __init__(self, members: list[Teacher]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two teachers; got {len(members)}")
        first = members[0]
        for method in ("keypoints_from_map", "describe"):
            if getattr(type(first), method) is getattr(Teacher, method):
                raise ValueError(
                    f"teacher {first.name!r} cannot lead an ensemble (no {method}); put another member first"
                )
        self.members = list(members)
        self.name = "+".join(m.name for m in members)
        self.descriptor_dim = first.descriptor_dim
        self.lightglue_features = first.lightglue_features

    def to(self, device: "str | torch.device") -> "EnsembleTeacher":
        for m in self.members:
            m.to(device)
        self.device = torch.device(device)
        return self

    def settings(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "members": [m.settings() for m in self.members],
            "dense": "mean of the members' dense maps",
            "keypoints": f"the mean map decoded by {self.members[0].name}'s detector",
            "descriptors": f"{self.members[0].name} at those keypoints",
        }

    @torch.inference_mode()
    def dense_map(self, images: "torch.Tensor") -> "torch.Tensor":
        images = check_images(images)
        total = self.members[0].dense_map(images).float()
        for m in self.members[1:]:
            total = total + m.dense_map(images).float()
        return (total / len(self.members)).contiguous()

    @torch.inference_mode()
    def detect(self, images: "torch.Tensor") -> list[Features]:
        images = check_images(images)
        first = self.members[0]
        found = first.keypoints_from_map(self.dense_map(images))
        descriptors = first.describe(images, [k for k, _ in found])
        return [Features(k, s, d) for (k, s), d in zip(found, descriptors)]
