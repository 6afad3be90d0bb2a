"""The student network: MobileNetV3 backbone + FPN -> one-channel keypoint logits at input size.

This module needs the ``torch`` extra (torch, torchvision). It holds the network only;
decoding the heatmap into keypoints lives in :mod:`kpnet.postprocess`.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from ._deps import require
from .config import ModelConfig
from .errors import ModelLoadError, ModelNotFoundError
from .upsample import BicubicUpsample

#: Per backbone: indices of ``mobilenet_v3_*().features`` tapped at strides 4, 8, 16, 32,
#: their channel counts, and the torchvision ImageNet weights file name.
_TAPS: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {
    "small": ((1, 3, 8, 11), (16, 24, 48, 96), "mobilenet_v3_small-047dcff4.pth"),
    "large": ((3, 6, 12, 15), (24, 40, 112, 160), "mobilenet_v3_large-8738ca79.pth"),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "kpnet-checkpoint-v1"
#: Floor of the per-image standard deviation (2 grey levels), so that near-uniform images do not
#: amplify quantisation noise without bound.
_MIN_STD = 2.0 / 255.0


def _is_exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


class KpNet(nn.Module):
    """MobileNetV3 + FPN keypoint student.

    Input: float [B, 1, H, W] grayscale in [0, 1], H and W multiples of ``config.stride`` (32,
    or 64 with ``downsample=2``, where the input is first average-pooled 2x2). Inside, it is
    normalised (``config.input_norm``: each image by its own mean and standard deviation, so a
    global brightness or contrast change leaves the input unchanged; or fixed ImageNet
    statistics) and replicated to 3 channels.
    Output: float [B, 1, H, W] keypoint logits (apply a sigmoid for probabilities).

    Aggregation: the four FPN levels (strides 4, 8, 16, 32) are bilinearly upsampled to stride
    4 and summed, reduced to one channel by a 1x1 convolution, and bicubically upsampled x4
    (x8 with ``downsample=2``) to the input resolution. With ``cell_head``, per-pixel logits of
    each cell, predicted from the finest FPN level and rearranged depth-to-space, are added.
    Because the 1x1 convolution and bilinear upsampling are both linear, the convolution is
    applied to each level before upsampling (same result, 1 channel to resize instead of C).
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        tv = require("torchvision")
        taps, channels, _ = _TAPS[self.config.backbone]
        ctor = tv.models.mobilenet_v3_small if self.config.backbone == "small" else tv.models.mobilenet_v3_large
        features = ctor(weights=None).features
        self.backbone = nn.Sequential(*list(features.children())[: taps[-1] + 1])
        self.taps = taps
        self.fpn = tv.ops.FeaturePyramidNetwork(list(channels), self.config.fpn_width)
        self.head = nn.Conv2d(self.config.fpn_width, 1, kernel_size=1)
        # Prior of 1% keypoint probability (as in RetinaNet) so training starts from a sparse map.
        nn.init.constant_(self.head.bias, -math.log(99.0))
        scale = 4 * self.config.downsample
        self.upsample = BicubicUpsample(scale)
        if self.config.cell_head:
            self.cell = nn.Conv2d(self.config.fpn_width, scale * scale, kernel_size=1)
            nn.init.zeros_(self.cell.weight)
            nn.init.zeros_(self.cell.bias)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 1, H, W] in [0, 1] -> logits [B, 1, H, W]."""
        if not _is_exporting():
            if image.ndim != 4 or image.shape[1] != 1:
                raise ValueError(f"KpNet expects a grayscale batch [B, 1, H, W], got shape {tuple(image.shape)}")
            h, w = image.shape[-2:]
            stride = self.config.stride
            if h % stride or w % stride:
                raise ValueError(
                    f"KpNet input height and width must be multiples of {stride}, got {h}x{w}; "
                    "resize or pad the image (KeypointDetector does this for you)"
                )
        if self.config.downsample > 1:
            image = F.avg_pool2d(image, self.config.downsample)
        feats: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        x = self._stem(image)
        for i, layer in enumerate(self.backbone):
            if i == 0:
                continue  # the stem, above
            x = layer(x)
            if i in self.taps:
                feats[f"p{len(feats)}"] = x
        levels = list(self.fpn(feats).values())
        # 1x1 conv per level (no bias), upsample to stride 4, sum, then add the bias once.
        out = F.conv2d(levels[0], self.head.weight)
        for k, lvl in enumerate(levels[1:], start=1):
            y = F.conv2d(lvl, self.head.weight)
            out = out + F.interpolate(y, scale_factor=float(2**k), mode="bilinear", align_corners=False)
        out = out + self.head.bias.view(1, 1, 1, 1)
        if not self.config.cell_head:
            return self.upsample(out)
        # bicubic(out) + depth_to_space(cell) == depth_to_space(bicubic phases + cell): one
        # depth-to-space and an addition at cell resolution instead of at full resolution.
        return F.pixel_shuffle(self.upsample.phases(out) + self.cell(levels[0]), self.upsample.scale)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 1, H, W] in [0, 1] -> normalised [B, 3, H, W] backbone input."""
        if self.config.input_norm == "image":
            return self._standardize(image).expand(-1, 3, -1, -1)
        return (image.expand(-1, 3, -1, -1) - self.mean) / self.std

    @staticmethod
    def _standardize(image: torch.Tensor) -> torch.Tensor:
        mean = image.mean(dim=(2, 3), keepdim=True)
        var = (image - mean).square().mean(dim=(2, 3), keepdim=True)
        return (image - mean) * torch.rsqrt(var + _MIN_STD**2)

    def _stem(self, image: torch.Tensor) -> torch.Tensor:
        """``backbone[0](normalize(image))``.

        With per-image normalisation the three input channels are identical, so the stem's
        convolution runs on one channel with its weights summed over the input channels: the
        same result without materialising a 3-channel full-resolution tensor.
        """
        stem = self.backbone[0]
        if self.config.input_norm != "image":
            return stem(self.normalize(image))
        conv = stem[0]
        x = F.conv2d(
            self._standardize(image),
            conv.weight.sum(dim=1, keepdim=True),
            conv.bias,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )
        return stem[2](stem[1](x))

    # ------------------------------------------------------------------ weights
    def load_imagenet_backbone(self, path: str | os.PathLike | None = None) -> "KpNet":
        """Initialise the backbone from torchvision's ImageNet MobileNetV3 weights.

        ``path`` is a local weights file; with None, the torchvision/torch hub cache
        (``$TORCH_HOME/hub/checkpoints``) is searched. Nothing is downloaded.
        """
        fname = _TAPS[self.config.backbone][2]
        if path is None:
            path = Path(torch.hub.get_dir()) / "checkpoints" / fname
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(
                f"ImageNet weights for mobilenet_v3_{self.config.backbone} not found at {path}. "
                f"kpnet never downloads. On a machine with internet, get them with "
                f'`python -c "import torchvision; torchvision.models.mobilenet_v3_{self.config.backbone}'
                f"(weights='IMAGENET1K_V1')\"` (caches {fname} under torch.hub.get_dir()/checkpoints) "
                f"or download https://download.pytorch.org/models/{fname}, then pass its path."
            )
        sd = _torch_load(path)
        n = len(self.backbone)
        sub = {}
        for k, v in sd.items():
            if not k.startswith("features."):
                continue  # classifier
            idx = int(k.split(".")[1])
            if idx < n:
                sub[k[len("features.") :]] = v
        _strict_load(self.backbone, sub, str(path))
        return self

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "KpNet":
        """Build the network from a kpnet checkpoint (its config is inside) with strict keys."""
        ckpt = load_checkpoint(path, map_location)
        model = cls(ModelConfig.from_dict(ckpt["config"]))
        _strict_load(model, ckpt["state_dict"], str(path))
        return model.eval()

    def save_pretrained(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """Write a self-describing checkpoint (config + weights + kpnet version)."""
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "kpnet_version": __version__,
            "config": self.config.to_dict(),
            "state_dict": self.state_dict(),
            "extra": dict(extra or {}),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, path)


def _torch_load(path: Path, map_location: str | torch.device = "cpu") -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ModelLoadError(
            f"cannot read {path} as a PyTorch file ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file is corrupt or not a checkpoint. Re-download or re-create it."
        ) from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a kpnet checkpoint dict (keys: format, config, state_dict, ...)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"checkpoint not found: {path}")
    ckpt = _torch_load(path, map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ModelLoadError(
            f"{path} is not a kpnet checkpoint (expected keys 'config' and 'state_dict', found {keys}); "
            "create one with KpNet.save_pretrained or the training scripts"
        )
    return ckpt


def _strict_load(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad_shape = sorted(
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or bad_shape:

        def fmt(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f" ... ({len(xs)} in all)" if len(xs) > 8 else "")

        raise ModelLoadError(
            f"weights in {source} do not match the network: missing keys [{fmt(missing)}]; "
            f"unexpected keys [{fmt(unexpected)}]; shape mismatches [{fmt(bad_shape)}]. "
            "Check that the checkpoint's config (backbone, fpn_width) matches."
        )
    module.load_state_dict(state_dict, strict=True)
