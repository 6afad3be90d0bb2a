"""Export a kpnet checkpoint to ONNX: trace -> check -> parity check -> calibrate -> metadata.

    python -m export.onnx models/kpnet-small.pt -o models/kpnet-small.onnx
    python -m export.onnx CKPT --calib-dir ../shared/data/train -o kp.onnx      # calibrate on photos too
    python -m export.onnx CKPT --with-postprocess --max-keypoints 1024 -o kp.onnx

By default the graph takes any batch, height and width (multiples of the model's stride) and
the decoding defaults (probability threshold, contrast floor) are calibrated on the exported
model (:mod:`export.calibrate`) and stored in its metadata. Each stage is a small function so
that scripts and tests can compose them; the file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpnet._deps import require
from kpnet.backends.base import (
    META_CALIBRATION,
    META_DECODE,
    META_DEFAULTS,
    META_INPUT_SIZE,
    META_KPNET_VERSION,
    META_MODEL_CONFIG,
    META_POSTPROCESS,
)
from kpnet.config import TENSORRT_MAX_TOPK, DecodeConfig, _check_hw
from kpnet.errors import ConfigError
from kpnet.io import atomic_path
from kpnet.sizing import parse_hw

DEFAULT_OPSET = 18
REPO_SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"


@dataclass(frozen=True)
class ExportOptions:
    """How to export.

    Attributes:
        input_size: nominal (H, W) (multiples of the stride): the traced size, the fixed size
            with ``dynamic_hw=False``, and the pixel budget of native-aspect working sizes;
            None = the model's own.
        dynamic_batch: batch dimension dynamic (else 1).
        dynamic_hw: height and width dynamic (any multiples of the stride at run time); False
            fixes them to ``input_size``. Default: dynamic for heatmap models, fixed with
            in-graph decoding (its top-k needs K <= H x W at export).
        calibrate: measure and store the default threshold and contrast floor
            (:mod:`export.calibrate`); heatmap models only.
        calib_dir: photos to calibrate on as well (a folder or glob), optional.
        opset: ONNX opset.
        decode: when set, NMS and top-k go inside the graph with these settings.
        exporter: "dynamo" (torch.export based) or "torchscript" (legacy tracer).
    """

    input_size: tuple[int, int] | None = None
    dynamic_batch: bool = True
    dynamic_hw: bool | None = None
    opset: int = DEFAULT_OPSET
    decode: DecodeConfig | None = None
    exporter: str = "dynamo"
    calibrate: bool = True
    calib_dir: str | Path | None = None
    calib_num: int = 200

    def __post_init__(self) -> None:
        if self.dynamic_hw is None:
            object.__setattr__(self, "dynamic_hw", self.decode is None)
        if self.input_size is not None:
            object.__setattr__(self, "input_size", _check_hw("input_size", tuple(self.input_size)))
        if self.exporter not in ("dynamo", "torchscript"):
            raise ConfigError(f"unknown exporter {self.exporter!r}; choose from: dynamo, torchscript")
        if not 13 <= self.opset <= 23:
            raise ConfigError(f"opset {self.opset} is not supported; choose 13..23 (default {DEFAULT_OPSET})")
        if self.decode is not None:
            if self.decode.subpixel:
                raise ConfigError("--with-postprocess cannot include sub-pixel refinement; refine on the host")
            if self.decode.max_keypoints > TENSORRT_MAX_TOPK:
                print(
                    f"note: K={self.decode.max_keypoints} exceeds TensorRT's TopK limit of {TENSORRT_MAX_TOPK}; "
                    "this ONNX file will run in ONNX Runtime but cannot be built into a TensorRT engine",
                    file=sys.stderr,
                )


def load_model(checkpoint: str | Path):
    """Stage 1: the KpNet from a checkpoint, in eval mode on CPU."""
    from kpnet.model import KpNet

    return KpNet.from_pretrained(checkpoint)


def build_export_module(model, decode: DecodeConfig | None):
    """Stage 2: the module to trace: heatmap only, or heatmap + fixed-K decoding."""
    torch = require("torch")
    from kpnet.postprocess_torch import FixedKDecoder

    class _WithDecode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.decoder = FixedKDecoder(decode)

        def forward(self, image):
            return self.decoder(self.net(image))

    return (model if decode is None else _WithDecode()).eval()


def trace(module, out_path: Path, opts: ExportOptions, size_hw: tuple[int, int], stride: int = 32) -> None:
    """Stage 3: trace to ONNX (bicubic upsampling included) and write ``out_path``.

    ``stride``: the model's ``config.stride``; dynamic height and width are multiples of it.
    """
    torch = require("torch")
    require("onnx")
    h, w = size_hw
    dummy = torch.rand(2 if opts.dynamic_batch else 1, 1, h, w)
    outputs = ["heatmap"] if opts.decode is None else ["keypoints", "scores", "counts"]
    kwargs = dict(input_names=["image"], output_names=outputs, opset_version=opts.opset)
    if opts.exporter == "dynamo":
        require("onnxscript")
        dims = {}
        if opts.dynamic_batch:
            dims[0] = torch.export.Dim("batch", min=1, max=256)
        if opts.dynamic_hw:
            dims[2] = stride * torch.export.Dim("h_cells", min=1, max=8192 // stride)
            dims[3] = stride * torch.export.Dim("w_cells", min=1, max=8192 // stride)
        torch.onnx.export(
            module,
            (dummy,),
            str(out_path),
            dynamo=True,
            dynamic_shapes={"image": dims} if dims else None,
            verbose=False,
            **kwargs,
        )
    else:
        axes = {}
        if opts.dynamic_batch:
            axes[0] = "batch"
        if opts.dynamic_hw:
            axes.update({2: "height", 3: "width"})
        dyn = {"image": axes} if axes else None
        if dyn and opts.decode is None:
            dyn["heatmap"] = dict(axes)
        torch.onnx.export(module, (dummy,), str(out_path), dynamo=False, dynamic_axes=dyn, **kwargs)


def check_and_tag(path: Path, metadata: dict[str, str]) -> None:
    """Stage 4: ``onnx.checker`` then write kpnet metadata into ``metadata_props``."""
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=True)
    onnx.checker.check_model(model)
    for k, v in metadata.items():
        entry = next((p for p in model.metadata_props if p.key == k), None)
        if entry is None:
            entry = model.metadata_props.add()
            entry.key = k
        entry.value = v
    onnx.save(model, str(path))  # single file; the student is a few MB
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()


def parity_image(path: str | Path | None, size_hw: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A real-looking float32 [H, W] image in [0, 1] for the parity check, and its source."""
    import cv2

    if path is None and REPO_SAMPLE.is_file():
        path = REPO_SAMPLE
    if path is not None:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"cannot read parity image {path}")
        src = str(path)
    else:
        # Synthetic scene: rectangles, circles and texture, so corners exist.
        rng = np.random.default_rng(0)
        img = np.full((480, 640), 90, np.uint8)
        for _ in range(40):
            x, y = rng.integers(0, 600), rng.integers(0, 440)
            cv2.rectangle(
                img,
                (int(x), int(y)),
                (int(x + rng.integers(10, 80)), int(y + rng.integers(10, 80))),
                int(rng.integers(0, 255)),
                -1,
            )
            cv2.circle(
                img,
                (int(rng.integers(0, 640)), int(rng.integers(0, 480))),
                int(rng.integers(3, 30)),
                int(rng.integers(0, 255)),
                -1,
            )
        src = "synthetic shapes"
    img = cv2.resize(img, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
    return img.astype(np.float32) / 255.0, src


@dataclass(frozen=True)
class ParityReport:
    max_abs_heatmap_diff: float | None
    keypoint_agreement: float
    num_keypoints: int
    max_keypoint_shift: float

    def __str__(self) -> str:
        hd = "n/a (keypoints only)" if self.max_abs_heatmap_diff is None else f"{self.max_abs_heatmap_diff:.3g}"
        return (
            f"parity vs PyTorch: max |heatmap diff| = {hd}; keypoint agreement = "
            f"{100 * self.keypoint_agreement:.2f}% of {self.num_keypoints}; max shift of matched keypoints = {self.max_keypoint_shift:.3g} px"
        )


def keypoint_agreement(xy_a: np.ndarray, xy_b: np.ndarray, tol: float = 0.5) -> tuple[float, float]:
    """Fraction of ``xy_a`` with a point of ``xy_b`` within ``tol`` px, and the max such distance."""
    if len(xy_a) == 0:
        return (1.0 if len(xy_b) == 0 else 0.0), 0.0
    if len(xy_b) == 0:
        return 0.0, 0.0
    d = np.linalg.norm(xy_a[:, None, :] - xy_b[None, :, :], axis=-1).min(axis=1)
    ok = d <= tol
    return float(ok.mean()), float(d[ok].max()) if ok.any() else 0.0


def verify_parity(
    model,
    onnx_path: Path,
    image: np.ndarray,
    decode: DecodeConfig | None,
    *,
    atol: float = 1e-3,
    min_agreement: float = 0.98,
) -> ParityReport:
    """Stage 5: run PyTorch and ONNX Runtime on the same image; raise past the tolerances."""
    torch = require("torch")
    from kpnet.backends.onnxruntime_backend import OnnxRuntimeBackend
    from kpnet.postprocess import decode as host_decode

    x = image[None, None].astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    cfg = decode or DecodeConfig()
    ref_xy, _ = host_decode(ref[0, 0], cfg)
    with OnnxRuntimeBackend(onnx_path, threads=None) as be:
        out = be.run(x)
    if out.heatmap is not None:
        diff = float(np.abs(out.heatmap - ref).max())
        got_xy, _ = host_decode(out.heatmap[0, 0], cfg)
    else:
        diff = None
        got_xy = out.keypoints[0, : int(out.counts[0])]
    agree, shift = keypoint_agreement(ref_xy, got_xy)
    report = ParityReport(diff, agree, len(ref_xy), shift)
    if (diff is not None and diff > atol) or agree < min_agreement or len(got_xy) != len(ref_xy):
        raise RuntimeError(
            f"ONNX export of {onnx_path} failed the parity check: {report} (tolerances: heatmap "
            f"{atol}, agreement {100 * min_agreement:.0f}%, ONNX gave {len(got_xy)} keypoints)"
        )
    return report


def export_onnx(
    checkpoint: str | Path,
    out_path: str | Path,
    opts: ExportOptions,
    *,
    parity_image_path: str | Path | None = None,
    atol: float = 1e-3,
    log=None,
) -> ParityReport:
    """All stages: load, trace, check, tag, parity, calibrate; the file appears only when every
    stage passed. Returns the parity report (the calibration is in the metadata)."""
    from kpnet import __version__

    out_path = Path(out_path)
    model = load_model(checkpoint)
    size = _check_hw("input_size", tuple(opts.input_size or model.config.input_size), model.config.stride)
    module = build_export_module(model, opts.decode)
    cfg = model.config.to_dict()
    cfg["input_size"] = list(size)
    meta = {
        META_KPNET_VERSION: __version__,
        META_MODEL_CONFIG: json.dumps(cfg),
        META_INPUT_SIZE: json.dumps(list(size)),
        META_POSTPROCESS: "true" if opts.decode is not None else "false",
        "kpnet_precision": "fp32",
        "kpnet_source_checkpoint": Path(checkpoint).name,
    }
    if opts.decode is not None:
        meta[META_DECODE] = json.dumps(opts.decode.to_dict())
    with atomic_path(out_path) as tmp:
        trace(module, tmp, opts, size, model.config.stride)
        check_and_tag(tmp, meta)
        img, _src = parity_image(parity_image_path, size)
        report = verify_parity(model, tmp, img, opts.decode, atol=atol)
        if opts.calibrate and opts.decode is None:
            from export.calibrate import calibrate, describe

            result = calibrate(tmp, calib_dir=opts.calib_dir, calib_num=opts.calib_num)
            check_and_tag(
                tmp, {META_DEFAULTS: json.dumps(result["defaults"]), META_CALIBRATION: json.dumps(result["figures"])}
            )
            if log is not None:
                log(describe(result))
    for extra in out_path.parent.glob(tmp.name + ".data"):
        extra.unlink()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.onnx",
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", help="kpnet checkpoint (.pt)")
    p.add_argument("-o", "--output", help="output .onnx (default: checkpoint name with .onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument(
        "--size", help="HxW nominal input size (traced size, pixel budget), e.g. 480x640 (default: the model's)"
    )
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 1 (default: dynamic)")
    p.add_argument(
        "--static-hw", action="store_true", help="fix height and width to --size (default: any multiples of the stride)"
    )
    p.add_argument(
        "--with-postprocess", action="store_true", help="put NMS and top-k inside the graph (no calibration)"
    )
    p.add_argument(
        "--max-keypoints", type=int, default=1024, help=f"K for --with-postprocess (TensorRT: <= {TENSORRT_MAX_TOPK})"
    )
    p.add_argument("--nms-radius", type=int, default=4, help="NMS radius for --with-postprocess, model pixels")
    p.add_argument("--border", type=int, default=4, help="border for --with-postprocess, model pixels")
    p.add_argument("--threshold", type=float, default=0.0, help="probability threshold for --with-postprocess")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo", help="ONNX exporter")
    p.add_argument("--parity-image", help="image for the parity check (default: examples/astronaut.jpg)")
    p.add_argument("--atol", type=float, default=1e-3, help="max allowed |heatmap diff| (logits)")
    p.add_argument(
        "--no-calibrate", action="store_true", help="skip calibrating the default threshold and contrast floor"
    )
    p.add_argument(
        "--calib-dir", help="also calibrate on these photos (folder, recursive, or glob); default: built-in frames only"
    )
    p.add_argument("--calib-num", type=int, default=200, help="photos to use from --calib-dir")
    a = p.parse_args(argv)
    try:
        size = parse_hw(a.size, "--size") if a.size else None
        decode = None
        if a.with_postprocess:
            decode = DecodeConfig(
                max_keypoints=a.max_keypoints, nms_radius=a.nms_radius, border=a.border, threshold=a.threshold
            )
        opts = ExportOptions(
            input_size=size,
            dynamic_batch=not a.static_batch,
            dynamic_hw=False if a.static_hw else None,
            opset=a.opset,
            decode=decode,
            exporter=a.exporter,
            calibrate=not a.no_calibrate,
            calib_dir=a.calib_dir,
            calib_num=a.calib_num,
        )
        out = Path(a.output) if a.output else Path(a.checkpoint).with_suffix(".onnx")
        report = export_onnx(a.checkpoint, out, opts, parity_image_path=a.parity_image, atol=a.atol, log=print)
    except Exception as exc:  # CLI boundary: one readable line, not a traceback
        print(f"export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
