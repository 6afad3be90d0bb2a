"""Typed result containers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Keypoints:
    """Keypoints detected in one image.

    Attributes:
        xy: float32 [N, 2], (x, y) in pixels of the *original* image given to ``detect``.
            Pixel centres are at integer coordinates (OpenCV convention): the top-left pixel's
            centre is (0, 0).
        scores: float32 [N], detection probability in [0, 1], sorted in descending order.
        image_size: (width, height) of the original image.
    """

    xy: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.xy.ndim != 2 or self.xy.shape[1] != 2:
            raise ValueError(f"Keypoints.xy must have shape [N, 2], got {self.xy.shape}")
        if self.scores.shape != (self.xy.shape[0],):
            raise ValueError(
                f"Keypoints.scores must have shape [{self.xy.shape[0]}], got {self.scores.shape}"
            )

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def to_cv(self, size: float | None = None) -> list:
        """``cv2.KeyPoint`` list (pt, size, response set; angle -1 = none, octave 0), so that
        OpenCV descriptor extractors and ``cv2.drawKeypoints`` work directly. ``size`` is the
        keypoint diameter in pixels; by default the NMS window in original pixels."""
        import cv2

        s = float(size if size is not None else self.meta.get("size", 7.0))
        return [cv2.KeyPoint(float(x), float(y), s, -1.0, float(r), 0, -1) for (x, y), r in zip(self.xy, self.scores)]

    @classmethod
    def from_cv(cls, keypoints: list, image_size: tuple[int, int]) -> "Keypoints":
        """Build from ``cv2.KeyPoint``s (scores from ``response``), sorted by score."""
        xy = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
        sc = np.array([k.response for k in keypoints], np.float32)
        order = np.argsort(-sc, kind="stable")
        return cls(xy=xy[order], scores=sc[order], image_size=tuple(image_size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: ``{"image_size": [w, h], "keypoints": [[x, y], ...], "scores": [...]}``."""
        return {
            "image_size": list(self.image_size),
            "keypoints": self.xy.astype(float).round(3).tolist(),
            "scores": self.scores.astype(float).round(6).tolist(),
        }


@dataclass(frozen=True)
class TorchKeypoints:
    """Keypoints as torch tensors on the device that produced them (GPU pipelines need no
    round trip through the host).

    Attributes:
        xy: float32 [N, 2] (x, y) in original-image pixels, as :class:`Keypoints`.
        scores: float32 [N], probabilities sorted in descending order.
        image_size: (width, height) of the original image.
    """

    xy: Any
    scores: Any
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def numpy(self) -> Keypoints:
        """Copy to the host as :class:`Keypoints`."""
        return Keypoints(
            xy=self.xy.detach().float().cpu().numpy(), scores=self.scores.detach().float().cpu().numpy(), image_size=self.image_size
        )
