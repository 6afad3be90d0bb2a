"""Pre-processing and decoding on the device, in torch (TensorRT and PyTorch backends).

They keep frames on the GPU: an image (uint8 or float, gray/BGR/BGRA, host numpy or a torch
tensor already on the device) is converted to gray, resized and scaled there, and the
heatmap is decoded there, so that only keypoints are copied back to the host. The functions
are device-agnostic (they run on CPU tensors too, which is how they are tested without a GPU).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ._deps import require
from .config import DecodeConfig
from .preprocess import Resize
from .types import Keypoints

# OpenCV's BGR -> gray weights (cv2.COLOR_BGR2GRAY).
_GRAY_BGR = (0.114, 0.587, 0.299)


def to_device_image(image: Any, device: Any):
    """numpy array or torch tensor (HxW, HxWx1, HxWx3 BGR, HxWx4 BGRA; uint8 or float in [0, 1])
    -> torch tensor on ``device`` (no copy when it is already there)."""
    torch = require("torch")
    if isinstance(image, np.ndarray):
        from .preprocess import validate_image

        image = torch.from_numpy(np.ascontiguousarray(validate_image(image)))
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    if image.numel() == 0 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image tensor must be HxW or HxWxC with C in (1, 3, 4) and non-empty, got shape {tuple(image.shape)}")
    if image.dtype not in (torch.uint8, torch.float32, torch.float16, torch.float64):
        raise ValueError(f"image tensor dtype must be uint8 or float in [0, 1], got {image.dtype}")
    return image.to(device, non_blocking=True)


def _area_weights(n_in: int, n_out: int, device):
    """[n_out, n_in] matrix of INTER_AREA weights for shrinking n_in -> n_out samples."""
    torch = require("torch")
    scale = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64, device=device)[:, None] * scale
    hi = lo + scale
    j = torch.arange(n_in, dtype=torch.float64, device=device)[None, :]
    overlap = (torch.minimum(hi, j + 1) - torch.maximum(lo, j)).clamp(min=0)
    return (overlap / scale).float()


def preprocess_device(image, size_hw: tuple[int, int]):
    """One image tensor (see :func:`to_device_image`) -> (float32 [1, 1, H, W] in [0, 1] on the
    image's device, Resize mapping model pixels back to the image).

    Mirrors :func:`kpnet.preprocess.prepare`: OpenCV's gray weights, area averaging
    (INTER_AREA) when shrinking both sides, bilinear (pixel-centre aligned, INTER_LINEAR)
    otherwise, uint8 results rounded as OpenCV does. Not bit-exact (OpenCV uses fixed-point
    arithmetic for uint8): values differ by at most a grey level or two.
    """
    torch = require("torch")
    F = torch.nn.functional
    x = image
    is_u8 = x.dtype == torch.uint8
    x = x.float()
    if x.ndim == 3:
        c = x.shape[2]
        if c == 1:
            x = x[:, :, 0]
        else:
            b, g, r = x[:, :, 0], x[:, :, 1], x[:, :, 2]
            x = _GRAY_BGR[0] * b + _GRAY_BGR[1] * g + _GRAY_BGR[2] * r
            if is_u8:
                x = torch.round(x)
    h0, w0 = x.shape
    h, w = size_hw
    x = x[None, None]
    if (h0, w0) != (h, w):
        if h < h0 and w < w0:
            # OpenCV's INTER_AREA: each output pixel averages the input area it covers, with
            # fractional weights at the edges; separable, so two small matrix products.
            wy = _area_weights(h0, h, x.device)
            wx = _area_weights(w0, w, x.device)
            x = (wy @ x[0, 0] @ wx.T)[None, None]
        else:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        if is_u8:
            x = torch.round(x)  # cv2.resize returns uint8
    if is_u8:
        x = x * (1.0 / 255.0)
    return x.contiguous(), Resize((int(w0), int(h0)), (int(w), int(h)))


def decode_on_device(heatmap, config: DecodeConfig, nms_radii: Sequence[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode logits [B, 1, H, W] on their device with :func:`kpnet.postprocess_torch.decode`;
    only the keypoints ([N, 2] model pixels, float32) and scores ([N]) come back to the host.

    Plain NMS + top-k (and sub-pixel refinement) run on the device. The grid/ANMS
    distributions and ``min_distance`` are host algorithms: for those the heatmap is copied to
    the host and decoded with :func:`kpnet.postprocess.decode`, with the same results.
    ``nms_radii`` overrides the NMS radius per image (host path; the detector raises it to
    honour ``min_distance`` in original pixels).
    """
    if config.distribution != "topk" or config.min_distance > 0 or nms_radii is not None:
        from .postprocess import decode as host_decode

        hm = heatmap.float().cpu().numpy()
        radii = list(nms_radii) if nms_radii is not None else [config.nms_radius] * hm.shape[0]
        return [host_decode(hm[i, 0], config, nms_radius=radii[i]) for i in range(hm.shape[0])]
    from .postprocess_torch import decode

    out = decode(heatmap.float(), config)
    return [(xy.cpu().numpy().astype(np.float32), sc.cpu().numpy().astype(np.float32)) for xy, sc in out]


def detect_on_device(
    images: Sequence[Any],
    run_device: Callable[[Any], dict[str, Any]],
    *,
    device: Any,
    input_size: tuple[int, int],
    config: DecodeConfig,
    postprocess_in_graph: bool = False,
    dynamic_batch: bool = True,
) -> list[Keypoints]:
    """The whole pipeline on the device: upload (when on the host), pre-process, run the
    network (``run_device``: float32 [B, 1, H, W] device tensor -> dict of device tensors
    "heatmap" or "keypoints"/"scores"/"counts"), decode, and map keypoints back to the
    original pixels. Returns the same :class:`Keypoints` as :class:`kpnet.KeypointDetector`.
    """
    torch = require("torch")
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError("detect_on_device expects a non-empty list of images")
    prepped = [preprocess_device(to_device_image(im, device), input_size) for im in images]
    groups = [list(range(len(prepped)))] if dynamic_batch else [[i] for i in range(len(prepped))]
    results: list[Keypoints | None] = [None] * len(prepped)
    for idx in groups:
        batch = torch.cat([prepped[i][0] for i in idx], dim=0)
        out = run_device(batch)
        if postprocess_in_graph:
            kp = out["keypoints"].float().cpu().numpy()
            sc = out["scores"].float().cpu().numpy()
            n = out["counts"].cpu().numpy()
            decoded = []
            for j in range(len(idx)):
                k = min(int(n[j]), config.max_keypoints)
                xy_j, s_j = kp[j, :k], sc[j, :k]
                keep = s_j > config.threshold
                decoded.append((xy_j[keep].astype(np.float32), s_j[keep].astype(np.float32)))
        else:
            radii = None
            if config.min_distance > 0:  # as KeypointDetector: NMS radius covering min_distance
                radii = [max(config.nms_radius, int(np.ceil(config.min_distance / min(prepped[i][1].scale)))) for i in idx]
            decoded = decode_on_device(out["heatmap"], config, radii)
        for j, i in enumerate(idx):
            xy, scores = decoded[j]
            rs = prepped[i][1]
            results[i] = Keypoints(
                xy=rs.to_original(xy.reshape(-1, 2)),
                scores=scores,
                image_size=rs.orig_size,
                meta={"size": float(2 * config.nms_radius + 1) * float(np.mean(rs.scale))},
            )
    return results  # type: ignore[return-value]
