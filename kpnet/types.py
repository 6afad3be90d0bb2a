"""Typed result containers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Diameter (original-image pixels) given to ``cv2.KeyPoint.size``: ORB's default patch size, so
#: ORB/BRIEF descriptors describe the neighbourhood they were designed for. Fixed, whatever the
#: image size.
DEFAULT_KEYPOINT_SIZE = 31.0


def _host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.detach().float().cpu().numpy()


@dataclass(frozen=True)
class Keypoints:
    """Keypoints detected in one image.

    One type for host and device results: ``xy`` and ``scores`` are numpy arrays for numpy
    input, torch tensors on the model's device for torch input (:meth:`numpy` copies them to
    the host).

    Attributes:
        xy: float32 [N, 2], (x, y) in pixels of the *original* image given to ``detect``.
            Pixel centres are at integer coordinates (OpenCV convention): the top-left pixel's
            centre is (0, 0).
        scores: float32 [N], detection probability in [0, 1], sorted in descending order.
        image_size: (width, height) of the original image (OpenCV's order, as ``cv2.Size``).
        meta: extra facts: ``size`` (cv2.KeyPoint diameter, image pixels), ``working_size``
            ((H, W) the network ran at).
    """

    xy: Any
    scores: Any
    image_size: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.xy.ndim != 2 or self.xy.shape[1] != 2:
            raise ValueError(f"Keypoints.xy must have shape [N, 2], got {tuple(self.xy.shape)}")
        if tuple(self.scores.shape) != (self.xy.shape[0],):
            raise ValueError(f"Keypoints.scores must have shape [{self.xy.shape[0]}], got {tuple(self.scores.shape)}")

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    @property
    def is_torch(self) -> bool:
        return not isinstance(self.xy, np.ndarray)

    def numpy(self) -> "Keypoints":
        """Host copy with numpy arrays (itself when already on the host)."""
        if not self.is_torch:
            return self
        return Keypoints(xy=_host(self.xy), scores=_host(self.scores), image_size=self.image_size, meta=dict(self.meta))

    def to_cv(self, size: float | None = None) -> list:
        """``cv2.KeyPoint`` list (pt, size, response set; angle -1 = none, octave 0), so that
        OpenCV descriptor extractors and ``cv2.drawKeypoints`` work directly. ``size`` is the
        keypoint diameter in original-image pixels (default: the detector's ``keypoint_size``,
        31 px, the same for every image size)."""
        import cv2

        s = float(size if size is not None else self.meta.get("size", DEFAULT_KEYPOINT_SIZE))
        xy, sc = _host(self.xy), _host(self.scores)
        return [cv2.KeyPoint(float(x), float(y), s, -1.0, float(r), 0, -1) for (x, y), r in zip(xy, sc)]

    @classmethod
    def from_cv(cls, keypoints: list, image_size: tuple[int, int]) -> "Keypoints":
        """Build from ``cv2.KeyPoint``s (scores from ``response``), sorted by score."""
        xy = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
        sc = np.array([k.response for k in keypoints], np.float32)
        order = np.argsort(-sc, kind="stable")
        return cls(xy=xy[order], scores=sc[order], image_size=tuple(image_size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: ``{"image_size": [width, height], "keypoints": [[x, y], ...],
        "scores": [...]}`` (image_size is width first, as OpenCV sizes)."""
        return {
            "image_size": list(self.image_size),
            "keypoints": _host(self.xy).astype(float).round(3).tolist(),
            "scores": _host(self.scores).astype(float).round(6).tolist(),
        }


#: Former name of device results; they are :class:`Keypoints` with torch tensors now.
TorchKeypoints = Keypoints
