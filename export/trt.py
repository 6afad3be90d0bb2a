"""Build a TensorRT engine from a kpnet ONNX model or checkpoint: ``python -m export.trt``.

    python -m export.trt student.onnx -o student.engine --fp16
    python -m export.trt student.pt --with-postprocess --max-keypoints 1024 --fp16
    python -m export.trt student.onnx --int8 --calib-images ../shared/data/train --calib-num 300
    python -m export.trt student.onnx --min 1x480x640 --opt 4x480x640 --max 8x480x640 --timing-cache trt.cache

Stages (each a small function, Polygraphy style; nothing before :func:`import_tensorrt`
imports TensorRT, so bad arguments fail fast on any machine):

1. :class:`TrtBuildOptions` validates the arguments (conflicting flags, K <= 3840, shapes,
   files);
2. :func:`inspect_onnx` / :func:`check_onnx` read the ONNX graph and its kpnet metadata;
3. :func:`import_tensorrt`, :func:`detect_gpu`, :func:`check_precision_supported`;
4. :func:`prepare_onnx` exports a checkpoint (``export.onnx``) and, for INT8, writes an
   explicitly quantised (Q/DQ, symmetric signed int8) copy (:func:`quantize_for_tensorrt`);
5. :func:`parse_network` -> :func:`build_config` (workspace, precision, optimisation profile,
   timing cache) -> :func:`build_serialized`;
6. :func:`save_engine` writes the engine and its metadata sidecar ``ENGINE.json``
   (:mod:`kpnet.backends.tensorrt.metadata`), and the timing cache is saved for the next build.

Precision. TensorRT 10.x: ``--fp16`` sets BuilderFlag.FP16 and Q/DQ models use
BuilderFlag.INT8 (weak typing). TensorRT 11.x removed those flags: networks are strongly
typed, INT8 comes from the Q/DQ nodes and FP16 from an ONNX converted to mixed precision with
NVIDIA ModelOpt AutoCast (``pip install nvidia-modelopt[onnx]``). Implicit INT8 calibrators
are not used. A precision the GPU cannot run raises; it never falls back to fp32 silently,
and after the build the engine's layer report is checked for reduced-precision layers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpnet.backends.tensorrt.metadata import EngineMetadata, ShapeProfile, file_sha256, write_engine_metadata
from kpnet.config import STRIDE, TENSORRT_MAX_TOPK, DecodeConfig, _check_hw
from kpnet.errors import ConfigError, KpnetError, MissingDependencyError, ProviderUnavailableError

ENGINE_SUFFIXES = (".engine", ".plan")
SOURCE_SUFFIXES = (".onnx", ".pt", ".pth")
DEFAULT_CALIB_NUM = 300
DEFAULT_MAX_BATCH = 8
#: Minimum compute capability for fast FP16 (sm_53; sm_61 consumer Pascal is slow) and INT8 (DP4A, sm_61).
FP16_CAPABILITIES = ((5, 3), (6, 0), (6, 2))
MIN_FP16_CC = (7, 0)
MIN_INT8_CC = (6, 1)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


class TrtBuildError(KpnetError, RuntimeError):
    """Building the engine failed; the message says why and what to do."""


class OnnxParseError(TrtBuildError):
    """TensorRT's ONNX parser rejected the model; the message lists every parser error."""


class PrecisionUnsupportedError(ProviderUnavailableError):
    """The requested precision cannot be built on this GPU / TensorRT."""


# ---------------------------------------------------------------------------- options
def parse_bhw(text: str, name: str = "shape") -> tuple[int, int, int]:
    """'4x480x640' -> (4, 480, 640): batch x height x width (the HxW part as :func:`parse_hw`)."""
    parts = str(text).lower().split("x", 1)
    try:
        b = int(parts[0])
        h, w = parse_hw(parts[1], f"--{name}")
    except (ValueError, IndexError):
        raise ConfigError(f"--{name} must be BxHxW (batch x height x width), e.g. 1x480x640, got {text!r}") from None
    return b, h, w


def parse_hw(text: str, name: str = "--size") -> tuple[int, int]:
    """'480x640' -> (480, 640): kpnet's one size parser (:func:`kpnet.sizing.parse_hw`)."""
    from kpnet.sizing import parse_hw as _parse

    return _parse(text, name)


@dataclass(frozen=True)
class TrtBuildOptions:
    """Everything ``python -m export.trt`` accepts, validated at construction without
    importing TensorRT (see the CLI help for each field).

    Shapes are (B, H, W); either all of ``min_shape``/``opt_shape``/``max_shape`` or none.
    Without them the profile is batch 1..``max_batch`` (opt 1) at the model's size, or one
    static shape with ``static=True``.
    """

    source: Path
    output: Path | None = None
    fp16: bool = False
    int8: bool = False
    best: bool = False
    calib_images: Path | None = None
    calib_num: int = DEFAULT_CALIB_NUM
    min_shape: tuple[int, int, int] | None = None
    opt_shape: tuple[int, int, int] | None = None
    max_shape: tuple[int, int, int] | None = None
    static: bool = False
    max_batch: int = DEFAULT_MAX_BATCH
    size: tuple[int, int] | None = None
    workspace_mb: int | None = None
    timing_cache: Path | None = None
    with_postprocess: bool = False
    max_keypoints: int = 1024
    nms_radius: int = 4
    border: int = 4
    threshold: float = 0.0
    opt_level: int | None = None
    exporter: str = "dynamo"
    onnx_only: bool = False
    verbose: bool = False
    argv: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        src = Path(self.source)
        object.__setattr__(self, "source", src)
        if src.suffix.lower() not in SOURCE_SUFFIXES:
            raise ValueError(
                f"input {src} must be an .onnx model (python -m export.onnx) or a kpnet checkpoint (.pt/.pth)"
            )
        if not src.is_file():
            raise FileNotFoundError(f"input model not found: {src}")
        out = Path(self.output) if self.output is not None else src.with_suffix(".engine")
        if out.suffix.lower() not in ENGINE_SUFFIXES:
            raise ValueError(f"output {out} must end in .engine or .plan")
        object.__setattr__(self, "output", out)
        # precision flags
        if self.best and (self.fp16 or self.int8):
            raise ValueError("--best already means fp16 + int8; pass either --best or --fp16/--int8")
        if self.calib_images is not None:
            if not (self.int8 or self.best):
                raise ValueError("--calib-images is only used with --int8 or --best")
            cdir = Path(self.calib_images)
            if not cdir.is_dir():
                raise FileNotFoundError(f"--calib-images folder not found: {cdir}")
            object.__setattr__(self, "calib_images", cdir)
        if not isinstance(self.calib_num, int) or self.calib_num < 1:
            raise ValueError(f"--calib-num must be a positive int, got {self.calib_num!r}")
        if (self.int8 or self.best) and self.calib_images is None:
            if src.suffix.lower() != ".onnx":
                raise ValueError(
                    f"--{'best' if self.best else 'int8'} needs --calib-images DIR (a few hundred images like the deployment's) "
                    "to quantise the checkpoint, or an ONNX model that is already Q/DQ-quantised"
                )
            if not onnx_has_qdq(src):
                raise ValueError(
                    f"--{'best' if self.best else 'int8'} needs --calib-images DIR: {src.name} has no Q/DQ nodes, and "
                    "TensorRT INT8 is built from an explicitly quantised (Q/DQ) model (implicit calibration is deprecated)"
                )
        # in-graph decoding
        if self.with_postprocess:
            if (
                not isinstance(self.max_keypoints, int)
                or isinstance(self.max_keypoints, bool)
                or self.max_keypoints < 1
            ):
                raise ValueError(f"--max-keypoints must be a positive int, got {self.max_keypoints!r}")
            if self.max_keypoints > TENSORRT_MAX_TOPK:
                raise ValueError(
                    f"--max-keypoints {self.max_keypoints} exceeds TensorRT's TopK limit of {TENSORRT_MAX_TOPK}; use K <= "
                    f"{TENSORRT_MAX_TOPK}, or build without --with-postprocess and decode on the GPU in the runtime"
                )
            DecodeConfig(
                max_keypoints=self.max_keypoints,
                nms_radius=self.nms_radius,
                border=self.border,
                threshold=self.threshold,
            )
            if src.suffix.lower() == ".onnx":
                raise ValueError(
                    "--with-postprocess exports NMS + top-k from a checkpoint; pass the .pt checkpoint, or an .onnx that "
                    "was exported with `python -m export.onnx --with-postprocess` (without this flag)"
                )
            if (self.int8 or self.best) and self.calib_images is not None:
                raise ValueError(
                    "--int8 with --calib-images quantises the heatmap network only; NMS inside the graph compares "
                    "exact values and must stay unquantised. Build the int8 engine without --with-postprocess "
                    "(the TensorRT backend decodes on the GPU)"
                )
        # shapes
        given = [s is not None for s in (self.min_shape, self.opt_shape, self.max_shape)]
        if any(given) and not all(given):
            raise ValueError("pass all of --min, --opt and --max (BxHxW), or none")
        if all(given) and self.static:
            raise ValueError("--static conflicts with --min/--opt/--max; use one or the other")
        if self.size is not None:
            object.__setattr__(self, "size", _check_hw("--size", tuple(self.size)))
        if all(given):
            self.explicit_profile()  # validates min <= opt <= max and multiples of 32
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"--max-batch must be a positive int, got {self.max_batch!r}")
        if self.workspace_mb is not None and (not isinstance(self.workspace_mb, int) or self.workspace_mb < 1):
            raise ValueError(f"--workspace must be a positive number of MiB, got {self.workspace_mb!r}")
        if self.opt_level is not None and self.opt_level not in range(6):
            raise ValueError(f"--opt-level must be 0..5 (TensorRT builder optimisation level), got {self.opt_level!r}")
        if self.timing_cache is not None:
            tc = Path(self.timing_cache)
            if tc.exists() and not tc.is_file():
                raise ValueError(f"--timing-cache {tc} exists and is not a file")
            if not tc.parent.is_dir():
                raise FileNotFoundError(f"folder of --timing-cache {tc} does not exist")
            object.__setattr__(self, "timing_cache", tc)
        if self.exporter not in ("dynamo", "torchscript"):
            raise ValueError(f"unknown exporter {self.exporter!r}; choose dynamo or torchscript")

    @property
    def precision(self) -> str:
        if self.best or (self.fp16 and self.int8):
            return "best"
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @property
    def wants_int8(self) -> bool:
        return self.precision in ("int8", "best")

    @property
    def wants_fp16(self) -> bool:
        return self.precision in ("fp16", "best")

    def explicit_profile(self) -> ShapeProfile | None:
        if self.min_shape is None:
            return None
        as4 = lambda s: (int(s[0]), 1, int(s[1]), int(s[2]))  # noqa: E731
        return ShapeProfile(as4(self.min_shape), as4(self.opt_shape), as4(self.max_shape))

    @property
    def decode(self) -> DecodeConfig | None:
        if not self.with_postprocess:
            return None
        return DecodeConfig(
            max_keypoints=self.max_keypoints, nms_radius=self.nms_radius, border=self.border, threshold=self.threshold
        )

    def rebuild_command(self) -> str:
        """The command line that rebuilds this engine (stored in the sidecar)."""
        if self.argv is not None:
            return "python -m export.trt " + " ".join(shlex.quote(a) for a in self.argv)
        a = [str(self.source), "-o", str(self.output)]
        a += ["--best"] if self.best else []
        a += ["--fp16"] if self.fp16 else []
        a += ["--int8"] if self.int8 else []
        if self.calib_images is not None:
            a += ["--calib-images", str(self.calib_images), "--calib-num", str(self.calib_num)]
        if self.min_shape is not None:
            f = lambda s: "x".join(map(str, s))  # noqa: E731
            a += ["--min", f(self.min_shape), "--opt", f(self.opt_shape), "--max", f(self.max_shape)]
        a += ["--static"] if self.static else []
        if self.size is not None:
            a += ["--size", f"{self.size[0]}x{self.size[1]}"]
        if self.with_postprocess:
            a += [
                "--with-postprocess",
                "--max-keypoints",
                str(self.max_keypoints),
                "--nms-radius",
                str(self.nms_radius),
                "--border",
                str(self.border),
                "--threshold",
                str(self.threshold),
            ]
        if self.workspace_mb is not None:
            a += ["--workspace", str(self.workspace_mb)]
        if self.timing_cache is not None:
            a += ["--timing-cache", str(self.timing_cache)]
        return "python -m export.trt " + " ".join(shlex.quote(x) for x in a)


# ---------------------------------------------------------------------------- ONNX inspection (no TensorRT)
def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError(
            f"'onnx' is required to read ONNX models ({exc}); install it with: pip install 'kpnet[export]'"
        ) from exc
    return onnx


def onnx_has_qdq(path: str | Path) -> bool:
    """True when the model has QuantizeLinear/DequantizeLinear nodes (explicit quantisation)."""
    model = _onnx().load(str(path), load_external_data=False)
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


@dataclass(frozen=True)
class OnnxFacts:
    """What the build needs to know about an ONNX model."""

    path: Path
    input_name: str
    input_dims: tuple[int | None, ...]
    output_names: tuple[str, ...]
    metadata: dict[str, str]
    op_types: frozenset[str]
    is_qdq: bool
    qdq_problems: tuple[str, ...]

    @property
    def postprocess_in_graph(self) -> bool:
        return self.metadata.get("kpnet_postprocess", "false").lower() == "true"

    @property
    def decode(self) -> dict[str, Any] | None:
        d = self.metadata.get("kpnet_decode_config")
        return json.loads(d) if d else None

    @property
    def model_config(self) -> dict[str, Any] | None:
        d = self.metadata.get("kpnet_model_config")
        return json.loads(d) if d else None

    @property
    def nominal_size(self) -> tuple[int, int] | None:
        if self.input_dims[2] is not None and self.input_dims[3] is not None:
            return int(self.input_dims[2]), int(self.input_dims[3])
        s = self.metadata.get("kpnet_input_size")
        return tuple(int(v) for v in json.loads(s)) if s else None  # type: ignore[return-value]


def _constant_values(model) -> dict[str, Any]:
    """name -> TensorProto for initializers and Constant node outputs."""
    out = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t
    return out


def qdq_tensorrt_problems(model) -> list[str]:
    """Why TensorRT would reject this Q/DQ model (empty when fine): TensorRT quantises
    symmetrically to signed 8-bit (zero point 0, int8/fp8/int4 types), needs constant scales and
    zero points, and has no int32 DequantizeLinear (quantised biases)."""
    onnx = _onnx()
    from onnx import numpy_helper

    consts = _constant_values(model)
    ok_types = {onnx.TensorProto.INT8}
    for name in ("FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"):
        if hasattr(onnx.TensorProto, name):
            ok_types.add(getattr(onnx.TensorProto, name))
    problems: list[str] = []
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        label = f"{n.op_type} '{n.name or n.output[0]}'"
        if (
            n.op_type == "DequantizeLinear"
            and n.input[0] in consts
            and consts[n.input[0]].data_type == onnx.TensorProto.INT32
        ):
            problems.append(f"{label}: int32 input (a quantised bias); TensorRT has no int32 DequantizeLinear")
            continue
        if len(n.input) > 1 and n.input[1] not in consts:
            problems.append(f"{label}: scale is not a constant")
        if len(n.input) > 2 and n.input[2]:
            zp = consts.get(n.input[2])
            if zp is None:
                problems.append(f"{label}: zero point is not a constant")
            elif zp.data_type not in ok_types:
                problems.append(
                    f"{label}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)} (TensorRT needs signed INT8)"
                )
            elif np.any(numpy_helper.to_array(zp).astype(np.float32) != 0):
                problems.append(f"{label}: non-zero zero point (TensorRT quantises symmetrically)")
    return problems


def inspect_onnx(path: str | Path) -> OnnxFacts:
    onnx = _onnx()
    path = Path(path)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ValueError(
            f"cannot read {path} as an ONNX model ({type(exc).__name__}: {str(exc)[:200]}); re-export it with python -m export.onnx"
        ) from exc
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{path} has {len(inputs)} inputs; a kpnet model has one, 'image' [B, 1, H, W]")
    dims = tuple((d.dim_value if d.HasField("dim_value") else None) for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4 or dims[1] not in (1, None):
        raise ValueError(f"{path}: input '{inputs[0].name}' has shape {dims}; a kpnet model takes [B, 1, H, W]")
    is_qdq = any(n.op_type in QDQ_OPS for n in model.graph.node)
    return OnnxFacts(
        path=path,
        input_name=inputs[0].name,
        input_dims=dims,
        output_names=tuple(o.name for o in model.graph.output),
        metadata={p.key: p.value for p in model.metadata_props},
        op_types=frozenset(n.op_type for n in model.graph.node),
        is_qdq=is_qdq,
        qdq_problems=tuple(qdq_tensorrt_problems(model)) if is_qdq else (),
    )


def check_onnx(facts: OnnxFacts, *, wants_int8: bool) -> None:
    """Consistency of the ONNX model with the options, before TensorRT is involved."""
    name = facts.path.name
    expected = ("keypoints", "scores", "counts") if facts.postprocess_in_graph else ("heatmap",)
    if facts.output_names != expected:
        raise ValueError(
            f"{name}: outputs {list(facts.output_names)}, expected {list(expected)}; export it with python -m export.onnx"
        )
    if facts.postprocess_in_graph:
        k = int((facts.decode or {}).get("max_keypoints", 0))
        if k > TENSORRT_MAX_TOPK:
            raise ValueError(
                f"{name} has in-graph top-k with K={k}, over TensorRT's TopK limit of {TENSORRT_MAX_TOPK}; re-export it with "
                f"--max-keypoints <= {TENSORRT_MAX_TOPK}, or without --with-postprocess"
            )
    if facts.is_qdq:
        if not wants_int8:
            raise ValueError(f"{name} is INT8-quantised (Q/DQ nodes); build it with --int8 (or --best)")
        if facts.qdq_problems:
            shown = "; ".join(facts.qdq_problems[:5]) + (
                f"; ... ({len(facts.qdq_problems)} in all)" if len(facts.qdq_problems) > 5 else ""
            )
            raise ValueError(
                f"{name} is quantised in a way TensorRT cannot build: {shown}. Quantise the fp32 model for TensorRT with "
                "python -m export.trt MODEL.onnx --int8 --calib-images DIR (symmetric signed int8, as TensorRT requires)"
            )
    if facts.nominal_size is None:
        raise ValueError(
            f"{name} has dynamic height/width and no kpnet_input_size metadata; re-export it with python -m export.onnx"
        )


def resolve_profile(opts: TrtBuildOptions, facts: OnnxFacts) -> ShapeProfile:
    """The optimisation profile: explicit --min/--opt/--max, --static, or batch 1..max_batch
    at the model's size; checked against the ONNX model's fixed dimensions."""
    prof = opts.explicit_profile()
    if prof is None:
        h, w = opts.size or facts.nominal_size  # type: ignore[misc]
        b = facts.input_dims[0]
        if opts.static:
            one = (b or 1, 1, h, w)
            prof = ShapeProfile(one, one, one)
        else:
            lo, hi = (b, b) if b is not None else (1, opts.max_batch)
            prof = ShapeProfile((lo, 1, h, w), (lo, 1, h, w), (hi, 1, h, w))
    for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
        d = facts.input_dims[axis]
        if d is not None and not prof.min[axis] == prof.max[axis] == d:
            fix = "--static-batch off (the default)" if axis == 0 else "--dynamic-hw"
            raise ValueError(
                f"{facts.path.name} has a fixed {label} of {d}, but the profile asks {prof.min[axis]}..{prof.max[axis]}; "
                f"use {label} {d} or re-export with python -m export.onnx {fix}"
            )
    stride = STRIDE * int((facts.model_config or {}).get("downsample", 1))
    for k in ("min", "opt", "max"):
        s = getattr(prof, k)
        if s[2] % stride or s[3] % stride:
            raise ValueError(
                f"profile shape {k} {s[2]}x{s[3]}: {facts.path.name} pools its input {stride // STRIDE}x, so height "
                f"and width must be multiples of {stride}"
            )
    return prof


# ---------------------------------------------------------------------------- INT8 (Q/DQ) for TensorRT
def quantize_for_tensorrt(
    src: str | Path,
    dst: str | Path,
    calib: list[np.ndarray],
    *,
    per_channel: bool = True,
    keep_fp32_tail: bool = True,
    op_types: tuple[str, ...] = ("Conv", "Add"),
) -> list[str]:
    """Write an explicitly quantised (Q/DQ) copy of the heatmap model ``src`` for TensorRT:
    ONNX Runtime static quantisation calibrated on ``calib`` ([1, 1, H, W] float32 arrays), with
    symmetric signed int8 activations and weights (zero point 0), per-channel weights and no
    quantised biases, which is what TensorRT's explicit quantisation accepts. The same file
    runs under ONNX Runtime on the CPU. Returns the names of the nodes kept in fp32."""
    from export.quantize import quantize

    onnx = _onnx()
    try:
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"onnxruntime.quantization is required for --int8 ({exc}); pip install onnxruntime"
        ) from exc
    keep = quantize(
        src,
        dst,
        calib,
        keep_fp32_tail=keep_fp32_tail,
        per_channel=per_channel,
        symmetric=True,
        op_types=op_types,
        tag="qdq-int8-symmetric",
    )
    out = onnx.load(str(dst))
    problems = qdq_tensorrt_problems(out)
    if problems:  # a change in onnxruntime.quantization defaults would land here
        raise TrtBuildError(f"the quantised model {dst} is not TensorRT-compatible: {'; '.join(problems[:3])}")
    return keep


def calibration_batches(folder: Path, num: int, size_hw: tuple[int, int]) -> list[np.ndarray]:
    """Up to ``num`` images from ``folder``, prepared exactly as the runtime does."""
    from export.quantize import list_images, load_batch

    batches = load_batch(list_images(folder, num), size_hw)
    if not batches:
        raise ValueError(f"no readable images in {folder}")
    return batches


# ---------------------------------------------------------------------------- TensorRT and the GPU
def import_tensorrt():
    """``import tensorrt``; MissingDependencyError naming ``pip install 'kpnet[gpu]'``."""
    from kpnet.backends.tensorrt.backend import import_tensorrt as _imp

    return _imp()


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def has_weak_typing(trt) -> bool:
    """TensorRT 10.x still has the precision builder flags; 11.x removed them."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")


@dataclass(frozen=True)
class GpuFacts:
    name: str
    capability: tuple[int, int] | None

    @property
    def capability_str(self) -> str | None:
        return None if self.capability is None else f"{self.capability[0]}.{self.capability[1]}"


def detect_gpu(trt) -> GpuFacts:
    """The GPU the engine is built for (CUDA device 0), via torch when installed. Raises
    TrtBuildError when no NVIDIA GPU is usable."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.version.cuda is None:
        torch = None  # a CPU-only torch build cannot see the GPU; ask TensorRT instead
    if torch is not None:
        if not torch.cuda.is_available():
            raise TrtBuildError(
                "no NVIDIA GPU is usable here (torch.cuda.is_available() is False): TensorRT builds engines on the GPU "
                "they will run on. Run python -m export.trt on that machine (with `pip install 'kpnet[gpu]'`), or use "
                "--onnx-only here to prepare the (Q/DQ) ONNX model"
            )
        return GpuFacts(torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0)))  # type: ignore[arg-type]
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # no driver / no device: the binding returns null and raises
        raise TrtBuildError(f"TensorRT cannot create a builder ({exc}): no usable NVIDIA GPU or driver") from exc
    return GpuFacts("unknown (install torch to record the GPU)", None)


def check_precision_supported(trt, gpu: GpuFacts, precision: str, builder: Any = None) -> None:
    """Raise PrecisionUnsupportedError when ``precision`` cannot run fast on ``gpu``."""
    cc = gpu.capability
    wants16, wants8 = precision in ("fp16", "best"), precision in ("int8", "best")
    if cc is not None:
        if wants16 and not (cc >= MIN_FP16_CC or cc in FP16_CAPABILITIES):
            raise PrecisionUnsupportedError(
                f"{gpu.name} (compute capability {gpu.capability_str}) has no fast FP16; build without --fp16/--best"
            )
        if wants8 and cc < MIN_INT8_CC:
            raise PrecisionUnsupportedError(
                f"{gpu.name} (compute capability {gpu.capability_str}) has no INT8 support (needs 6.1+); build without --int8/--best"
            )
    elif builder is not None:  # TensorRT 10.x still answers these (deprecated, removed in 11.x)
        if wants16 and hasattr(builder, "platform_has_fast_fp16") and not builder.platform_has_fast_fp16:
            raise PrecisionUnsupportedError("this GPU has no fast FP16 (TensorRT says so); build without --fp16/--best")
        if wants8 and hasattr(builder, "platform_has_fast_int8") and not builder.platform_has_fast_int8:
            raise PrecisionUnsupportedError("this GPU has no fast INT8 (TensorRT says so); build without --int8/--best")
    if wants16 and not has_weak_typing(trt):
        try:
            import modelopt.onnx.autocast  # noqa: F401
        except ImportError as exc:
            raise PrecisionUnsupportedError(
                f"TensorRT {trt.__version__} removed BuilderFlag.FP16: fp16 engines are built from an ONNX converted to mixed "
                "precision with NVIDIA ModelOpt AutoCast. Install it with: pip install 'nvidia-modelopt[onnx]'"
            ) from exc


def autocast_fp16(src: Path, dst: Path) -> Path:
    """TensorRT 11.x: mixed-precision FP16 copy of ``src`` (inputs/outputs stay fp32)."""
    onnx = _onnx()
    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = convert_to_mixed_precision(onnx_path=str(src), low_precision_type="fp16", keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


# ---------------------------------------------------------------------------- stages with TensorRT
def prepare_onnx(opts: TrtBuildOptions, log=print) -> tuple[Path, OnnxFacts]:
    """Export a checkpoint (when given one) and quantise for INT8; returns the ONNX to build
    and its facts. Needs no GPU (this is all ``--onnx-only`` does)."""
    out = opts.output
    assert out is not None
    src = opts.source
    if src.suffix.lower() in (".pt", ".pth"):
        from export.onnx import ExportOptions, export_onnx

        prof = opts.explicit_profile()
        dyn_batch = not opts.static and (prof is None or prof.min[0] != prof.max[0])
        dyn_hw = prof is not None and (prof.min[2:] != prof.max[2:])
        size = opts.size or (prof.opt[2:] if prof is not None else None)
        onnx_path = out.with_suffix(".onnx")
        log(f"exporting {src} -> {onnx_path} ({'with' if opts.with_postprocess else 'without'} in-graph NMS + top-k)")
        report = export_onnx(
            src,
            onnx_path,
            ExportOptions(
                input_size=size, dynamic_batch=dyn_batch, dynamic_hw=dyn_hw, decode=opts.decode, exporter=opts.exporter
            ),
        )
        log(str(report))
        src = onnx_path
    facts = inspect_onnx(src)
    if opts.wants_int8 and not facts.is_qdq:
        check_onnx(facts, wants_int8=False)  # outputs, K, size of the fp32 model
        assert opts.calib_images is not None  # TrtBuildOptions guarantees it
        size = facts.nominal_size
        calib = calibration_batches(opts.calib_images, opts.calib_num, size)  # type: ignore[arg-type]
        qdq = out.with_suffix(".int8.onnx")
        log(
            f"quantising {src.name} to INT8 Q/DQ with {len(calib)} calibration images from {opts.calib_images} -> {qdq}"
        )
        quantize_for_tensorrt(src, qdq, calib)
        src = qdq
        facts = inspect_onnx(src)
    check_onnx(facts, wants_int8=opts.wants_int8)
    return src, facts


def parse_network(trt, builder, logger, onnx_path: Path, *, strongly_typed: bool):
    """(network, parser) for ``onnx_path``; OnnxParseError listing every parser error."""
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    if not ok or parser.num_errors:
        lines = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            where = []
            for attr in ("node_name", "node_operator"):
                fn = getattr(e, attr, None)
                v = fn() if callable(fn) else None
                if v:
                    where.append(str(v))
            node = e.node() if hasattr(e, "node") else -1
            lines.append(f"  [{i + 1}] node {node} {' '.join(where)}: {e.desc()}".rstrip())
        raise OnnxParseError(
            f"TensorRT {trt.__version__} cannot parse {onnx_path.name} ({parser.num_errors} error(s)):\n"
            + "\n".join(lines or ["  (no details)"])
            + "\nCheck that the model comes from python -m export.onnx (opset <= what this TensorRT supports) and that "
            "every operator is supported (TensorRT's ONNX operator support matrix)."
        )
    return network, parser


def build_config(
    trt, builder, network, opts: TrtBuildOptions, profile: ShapeProfile, input_name: str, *, weak_typing: bool
):
    """IBuilderConfig: workspace, precision flags (TensorRT 10.x), optimisation profile,
    optimisation level and the timing cache (loaded from ``opts.timing_cache`` when present)."""
    config = builder.create_builder_config()
    if opts.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    if weak_typing:
        if opts.wants_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if opts.wants_int8:
            config.set_flag(trt.BuilderFlag.INT8)  # with Q/DQ nodes: explicit quantisation, no calibrator
    if opts.opt_level is not None:
        config.builder_optimization_level = int(opts.opt_level)
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets us verify layer precisions
    inp = network.get_input(0)
    if inp.name != input_name:
        raise TrtBuildError(f"network input is {inp.name!r}, expected {input_name!r}")
    dims = tuple(inp.shape)
    if any(d < 0 for d in dims):
        p = builder.create_optimization_profile()
        p.set_shape(input_name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(p)
    elif not (profile.is_static and dims == profile.min):
        raise TrtBuildError(f"the network input has a fixed shape {dims} but the profile is {profile.describe()}")
    blob = opts.timing_cache.read_bytes() if opts.timing_cache is not None and opts.timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        print(
            f"warning: timing cache {opts.timing_cache} does not match this TensorRT/GPU; starting a new one",
            file=sys.stderr,
        )
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return config


def build_serialized(trt, builder, network, config) -> bytes:
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise TrtBuildError(
            "TensorRT failed to build the engine (see its log above). Common fixes: a larger --workspace, a smaller "
            "--max shape, or a newer TensorRT"
        )
    return memoryview(data).tobytes()


def engine_layer_precisions(trt, engine_bytes: bytes) -> str | None:
    """The engine inspector's JSON layer report (None when unavailable)."""
    try:
        engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(engine_bytes)
        inspector = engine.create_engine_inspector()
        return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # informational only
        return None


def verify_precision(report: str | None, precision: str) -> None:
    """Refuse an engine in which TensorRT picked no reduced-precision layer although one was
    requested (TensorRT may fall back to fp32 kernels per layer; all of them means the
    request had no effect)."""
    if report is None or precision == "fp32":
        return
    text = report.lower()
    if not any(t in text for t in ("fp32", "float", "half", "fp16", "int8", "row major")):
        print("warning: the engine's layer report names no data types; precision not verified", file=sys.stderr)
        return
    found16 = any(t in text for t in ("half", "fp16", "float16"))
    found8 = any(t in text for t in ("int8", '"i8"'))
    if precision == "fp16" and not found16:
        raise PrecisionUnsupportedError(
            "TensorRT built no FP16 layer for --fp16 (all layers fell back to fp32); refusing to write an fp32 engine labelled fp16"
        )
    if precision in ("int8", "best") and not found8:
        raise PrecisionUnsupportedError(
            "TensorRT built no INT8 layer although the model is Q/DQ-quantised; refusing to write a non-int8 engine labelled int8"
        )


def save_engine(path: Path, data: bytes, meta: EngineMetadata) -> Path:
    """Write the engine atomically, then its sidecar (with the engine's hash)."""
    from dataclasses import replace

    from kpnet.io import atomic_write_bytes

    atomic_write_bytes(path, data)
    return write_engine_metadata(path, replace(meta, engine_sha256=file_sha256(path)))


def save_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    cache = config.get_timing_cache()
    if cache is not None:
        path.write_bytes(memoryview(cache.serialize()).tobytes())


@dataclass(frozen=True)
class BuildResult:
    engine: Path | None
    sidecar: Path | None
    onnx: Path
    metadata: EngineMetadata | None


def build_engine(opts: TrtBuildOptions, log=print) -> BuildResult:
    """All stages. ``opts.onnx_only`` stops after the ONNX (and Q/DQ) preparation."""
    from kpnet import __version__

    if opts.source.suffix.lower() == ".onnx":  # fail fast, before TensorRT or any long step
        check_onnx(inspect_onnx(opts.source), wants_int8=opts.wants_int8)
    if opts.onnx_only:
        onnx_path, facts = prepare_onnx(opts, log)
        prof = resolve_profile(opts, facts)
        log(
            f"prepared {onnx_path} (precision {opts.precision}, profile {prof.describe()}); --onnx-only: no engine built"
        )
        return BuildResult(None, None, onnx_path, None)
    trt = import_tensorrt()
    gpu = detect_gpu(trt)
    weak = has_weak_typing(trt)
    check_precision_supported(trt, gpu, opts.precision)
    onnx_path, facts = prepare_onnx(opts, log)
    profile = resolve_profile(opts, facts)
    build_from = onnx_path
    tmpdir = tempfile.TemporaryDirectory()
    try:
        if opts.wants_fp16 and not weak:
            build_from = autocast_fp16(onnx_path, Path(tmpdir.name) / "fp16.onnx")
        logger = trt.Logger(trt.Logger.VERBOSE if opts.verbose else trt.Logger.WARNING)
        builder = trt.Builder(logger)
        if builder is None:
            raise TrtBuildError("TensorRT could not create a builder (no usable GPU or driver?)")
        check_precision_supported(trt, gpu, opts.precision, builder)
        # 10.x: weak typing + precision flags; 11.x: strongly typed (precision from Q/DQ / AutoCast).
        network, _parser = parse_network(trt, builder, logger, build_from, strongly_typed=not weak)
        config = build_config(trt, builder, network, opts, profile, facts.input_name, weak_typing=weak)
        log(
            f"building {opts.output} with TensorRT {trt.__version__} on {gpu.name}: precision {opts.precision}, profile {profile.describe()}"
        )
        data = build_serialized(trt, builder, network, config)
        verify_precision(engine_layer_precisions(trt, data), opts.precision)
        save_timing_cache(config, opts.timing_cache)
    finally:
        tmpdir.cleanup()
    meta = EngineMetadata(
        kpnet_version=__version__,
        tensorrt_version=str(trt.__version__),
        precision=opts.precision,
        input_name=facts.input_name,
        output_names=facts.output_names,
        profiles=(profile,),
        postprocess_in_graph=facts.postprocess_in_graph,
        decode=facts.decode if facts.postprocess_in_graph else None,
        model_config=facts.model_config,
        gpu_name=gpu.name,
        compute_capability=gpu.capability_str,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_command=opts.rebuild_command(),
        source=str(onnx_path),
        onnx_metadata=facts.metadata,
    )
    assert opts.output is not None
    sidecar = save_engine(opts.output, data, meta)
    log(f"wrote {opts.output} ({len(data) / 1e6:.2f} MB) and {sidecar.name}")
    return BuildResult(opts.output, sidecar, onnx_path, meta)


# ---------------------------------------------------------------------------- CLI
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.trt",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Build a TensorRT engine (.engine + .engine.json metadata) from a kpnet ONNX model or checkpoint.",
        epilog="Needs an NVIDIA GPU and `pip install 'kpnet[gpu]'` (except --onnx-only and --help).",
    )
    p.add_argument(
        "model", help=".onnx from python -m export.onnx, or a kpnet checkpoint (.pt), which is exported first"
    )
    p.add_argument("-o", "--output", help="engine file, .engine or .plan (default: MODEL.engine)")
    g = p.add_argument_group("precision")
    g.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    g.add_argument(
        "--int8",
        action="store_true",
        help="INT8 from an explicitly quantised (Q/DQ) model; needs --calib-images unless MODEL is Q/DQ already",
    )
    g.add_argument("--best", action="store_true", help="FP16 + INT8 (same needs as --int8)")
    g.add_argument("--calib-images", help="folder of calibration images (recursive) for --int8/--best")
    g.add_argument(
        "--calib-num",
        type=int,
        default=DEFAULT_CALIB_NUM,
        help=f"calibration images to use (default {DEFAULT_CALIB_NUM})",
    )
    s = p.add_argument_group("shapes (input B x 1 x H x W; H, W multiples of %d)" % STRIDE)
    s.add_argument("--min", dest="min_shape", help="smallest BxHxW of the optimisation profile")
    s.add_argument("--opt", dest="opt_shape", help="BxHxW TensorRT tunes for (also the size images are resized to)")
    s.add_argument("--max", dest="max_shape", help="largest BxHxW of the optimisation profile")
    s.add_argument("--static", action="store_true", help="one static shape: batch 1 at --size (or the model's size)")
    s.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest batch without --min/--opt/--max (default {DEFAULT_MAX_BATCH})",
    )
    s.add_argument("--size", help="HxW (default: the model's input size)")
    b = p.add_argument_group("build")
    b.add_argument(
        "--workspace", type=int, dest="workspace_mb", help="workspace memory limit in MiB (default: TensorRT's)"
    )
    b.add_argument(
        "--timing-cache", help="timing cache file, read if present and updated after the build (reuse it across builds)"
    )
    b.add_argument("--opt-level", type=int, help="builder optimisation level 0..5 (TensorRT default 3)")
    b.add_argument("--verbose", action="store_true", help="TensorRT verbose log")
    b.add_argument(
        "--onnx-only",
        action="store_true",
        help="only export/quantise and check the ONNX that would be built (no GPU needed)",
    )
    d = p.add_argument_group("in-graph post-processing (checkpoint input)")
    d.add_argument("--with-postprocess", action="store_true", help="put NMS + top-k inside the engine")
    d.add_argument("--max-keypoints", type=int, default=1024, help=f"K (<= {TENSORRT_MAX_TOPK}, TensorRT's TopK limit)")
    d.add_argument("--nms-radius", type=int, default=4, help="NMS radius, model pixels")
    d.add_argument("--border", type=int, default=4, help="border, model pixels")
    d.add_argument("--threshold", type=float, default=0.0, help="probability threshold (exclusive)")
    d.add_argument(
        "--exporter", choices=["dynamo", "torchscript"], default="dynamo", help="ONNX exporter for checkpoints"
    )
    return p


def options_from_args(a: argparse.Namespace, argv: list[str] | None = None) -> TrtBuildOptions:
    return TrtBuildOptions(
        source=Path(a.model),
        output=Path(a.output) if a.output else None,
        fp16=a.fp16,
        int8=a.int8,
        best=a.best,
        calib_images=Path(a.calib_images) if a.calib_images else None,
        calib_num=a.calib_num,
        min_shape=parse_bhw(a.min_shape, "min") if a.min_shape else None,
        opt_shape=parse_bhw(a.opt_shape, "opt") if a.opt_shape else None,
        max_shape=parse_bhw(a.max_shape, "max") if a.max_shape else None,
        static=a.static,
        max_batch=a.max_batch,
        size=parse_hw(a.size) if a.size else None,
        workspace_mb=a.workspace_mb,
        timing_cache=Path(a.timing_cache) if a.timing_cache else None,
        with_postprocess=a.with_postprocess,
        max_keypoints=a.max_keypoints,
        nms_radius=a.nms_radius,
        border=a.border,
        threshold=a.threshold,
        opt_level=a.opt_level,
        exporter=a.exporter,
        onnx_only=a.onnx_only,
        verbose=a.verbose,
        argv=tuple(argv) if argv is not None else None,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = make_parser().parse_args(argv)
    try:
        opts = options_from_args(a, argv)
    except (ValueError, FileNotFoundError) as exc:  # bad arguments: exit 2, like argparse
        print(f"export.trt: error: {exc}", file=sys.stderr)
        return 2
    try:
        build_engine(opts)
    except (ValueError, FileNotFoundError) as exc:
        print(f"export.trt: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # CLI boundary: a readable message, not a traceback
        kind = "" if isinstance(exc, KpnetError) else f"{type(exc).__name__}: "
        print(f"export.trt: failed: {kind}{exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
