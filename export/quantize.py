"""Static INT8 quantisation of an exported kpnet ONNX model (ONNX Runtime, QDQ format).

    python -m export.quantize models/kpnet-small.onnx -o models/kpnet-small.int8.onnx --calib ../shared/data/train --num 64

Calibration images are resized to the model's input size exactly as the runtime does. After
quantising, the int8 model is compared with the fp32 model on held-out calibration-style
images and the keypoint agreement and heatmap error are printed. The decoding head and the
bicubic upsampling stay in fp32 (``--keep-fp32``), since quantising the last layers costs
keypoint accuracy for almost no speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from kpnet._deps import require


def list_images(folder: str | Path, limit: int) -> list[Path]:
    """Up to ``limit`` images under ``folder`` (recursive; or a glob), spread evenly over the
    sorted list (:func:`kpnet.io.list_images` finds them)."""
    from kpnet.io import list_images as _list

    files = _list(folder)
    idx = np.linspace(0, len(files) - 1, num=min(limit, len(files))).round().astype(int)
    return [files[i] for i in sorted(set(idx))]


def load_batch(paths: list[Path], size_hw: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    from kpnet.preprocess import prepare

    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            out.append(prepare(img, size_hw)[0][None, None])
    return out


def head_tail_nodes(model) -> list[str]:
    """Names of the output-head nodes to keep in fp32: from the first 1x1 convolution to one
    channel (the head) to the end, restricted to the ops of the head and the bicubic
    upsampling. They are small but sensitive (1-channel logits, bicubic kernel)."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = list(model.graph.node)

    def is_head(n) -> bool:
        w = inits.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        return w is not None and len(w.dims) == 4 and w.dims[0] == 1 and list(w.dims[2:]) == [1, 1]

    starts = [i for i, n in enumerate(nodes) if is_head(n)]
    if not starts:
        return []
    keep_ops = {"Conv", "Resize", "Add", "Pad", "DepthToSpace", "Reshape", "Mul", "Transpose"}
    return [n.name for n in nodes[min(starts) :] if n.op_type in keep_ops and n.name]


def quantize(
    src: str | Path,
    dst: str | Path,
    calib: list[np.ndarray],
    keep_fp32_tail: bool = True,
    per_channel: bool = True,
    *,
    symmetric: bool = False,
    op_types: Sequence[str] | None = None,
    tag: str = "qdq-int8",
) -> list[str]:
    """Write an INT8 QDQ copy of ``src`` calibrated on ``calib`` ([1,1,H,W] float32 arrays).

    Default: uint8 activations, int8 per-channel weights (ONNX Runtime's CPU kernels).
    ``symmetric=True``: signed int8 activations and weights with zero point 0 and unquantised
    biases, the explicit quantisation TensorRT accepts (see ``export.trt``); it also runs
    under ONNX Runtime. ``op_types`` restricts which operator types are quantised.
    Returns the names of the nodes kept in fp32."""
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calib:
        raise ValueError("INT8 calibration needs at least one image")
    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("kpnet_postprocess") == "true":
        raise ValueError(f"{src} has post-processing inside; quantise the heatmap-only export instead")
    input_name = model.graph.input[0].name
    keep = head_tail_nodes(model) if keep_fp32_tail else []

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    kwargs: dict = {}
    if op_types is not None:
        kwargs["op_types_to_quantize"] = list(op_types)
    if symmetric:
        kwargs["extra_options"] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep,
            **kwargs,
        )
    out = onnx.load(str(dst))
    del out.metadata_props[:]
    for k, v in {**meta, "kpnet_precision": "int8", "kpnet_quantization": tag}.items():
        e = out.metadata_props.add()
        e.key, e.value = k, v
    from kpnet.io import atomic_path

    with atomic_path(dst) as tmp:
        onnx.save(out, str(tmp))
    return keep


def compare(fp32: str | Path, int8: str | Path, images: list[np.ndarray], k: int = 1000) -> dict[str, float]:
    """Keypoint agreement (within 1 px) and heatmap logit error of int8 vs fp32."""
    from export.onnx import keypoint_agreement
    from kpnet.backends.onnxruntime_backend import OnnxRuntimeBackend
    from kpnet.config import DecodeConfig
    from kpnet.postprocess import decode

    cfg = DecodeConfig(max_keypoints=k)
    agree, err = [], []
    with OnnxRuntimeBackend(fp32) as a, OnnxRuntimeBackend(int8) as b:
        for x in images:
            ha, hb = a.run(x).heatmap[0, 0], b.run(x).heatmap[0, 0]
            err.append(float(np.abs(ha - hb).mean()))
            agree.append(keypoint_agreement(decode(ha, cfg)[0], decode(hb, cfg)[0], tol=1.0)[0])
    return {
        "keypoint_agreement_1px": float(np.mean(agree)),
        "mean_abs_logit_error": float(np.mean(err)),
        "images": len(images),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.quantize", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("model", help="fp32 kpnet .onnx (heatmap output)")
    p.add_argument("-o", "--output", help="output (default: MODEL.int8.onnx)")
    p.add_argument("--calib", required=True, help="folder of calibration images (recursive)")
    p.add_argument("--num", type=int, default=64, help="calibration images (default 64)")
    p.add_argument("--check", type=int, default=16, help="held-out images for the fp32/int8 comparison")
    p.add_argument("--quantize-tail", action="store_true", help="also quantise the head and upsampling")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weights")
    a = p.parse_args(argv)
    try:
        from kpnet.backends.onnxruntime_backend import OnnxRuntimeBackend

        with OnnxRuntimeBackend(a.model) as be:
            size = be.info.input_size
        paths = list_images(a.calib, a.num + a.check)
        calib_paths, check_paths = paths[::2][: a.num], paths[1::2][: a.check]
        out = Path(a.output) if a.output else Path(a.model).with_suffix(".int8.onnx")
        out.parent.mkdir(parents=True, exist_ok=True)
        kept = quantize(
            a.model,
            out,
            load_batch(calib_paths, size),
            keep_fp32_tail=not a.quantize_tail,
            per_channel=not a.per_tensor,
        )
        report = compare(a.model, out, load_batch(check_paths, size))
    except Exception as exc:  # CLI boundary
        print(f"quantize failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); {len(kept)} tail nodes kept in fp32")
    print(
        f"int8 vs fp32 on {report['images']} held-out images: keypoint agreement (1 px, K=1000) "
        f"{100 * report['keypoint_agreement_1px']:.1f}%, mean |logit diff| {report['mean_abs_logit_error']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
