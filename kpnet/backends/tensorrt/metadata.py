"""Engine metadata: the JSON sidecar ``MODEL.engine.json`` written by ``python -m export.trt``.

A serialized TensorRT engine holds no kpnet facts (input size, decoding, precision) and is
only valid for the TensorRT version and GPU architecture it was built with. The sidecar
records both, so that the runtime can describe the model and refuse an engine it cannot
run with a message that says how to rebuild it. Pure Python: nothing here imports TensorRT,
torch or CUDA, so it is tested on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import STRIDE, TENSORRT_MAX_TOPK
from ...errors import ModelLoadError

FORMAT = "kpnet-tensorrt-engine"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"
PRECISIONS = ("fp32", "fp16", "int8", "best")
REBUILD_HINT = "python -m export.trt MODEL.onnx -o MODEL.engine"


class EngineIncompatibleError(ModelLoadError):
    """The engine was built for another TensorRT version or GPU architecture; rebuild it."""


def sidecar_path(engine_path: str | Path) -> Path:
    """``student.engine`` -> ``student.engine.json``."""
    return Path(str(engine_path) + SIDECAR_SUFFIX)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def version_key(version: str) -> tuple[int, ...]:
    """'10.3.0.26' / '10.3.0' / '11.4.0.post1' -> (10, 3, 0): the part that must match."""
    nums = [int(m) for m in re.findall(r"\d+", str(version))[:3]]
    if not nums:
        raise ValueError(f"cannot parse a TensorRT version from {version!r}")
    return tuple(nums + [0] * (3 - len(nums)))


def _shape(name: str, v: Any) -> tuple[int, int, int, int]:
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)
    ):
        raise ValueError(f"profile shape {name} must be four positive ints (B, 1, H, W), got {v!r}")
    if v[1] != 1:
        raise ValueError(f"profile shape {name} must have 1 channel (B, 1, H, W), got {tuple(v)}")
    if v[2] % STRIDE or v[3] % STRIDE:
        raise ValueError(f"profile shape {name} {v[2]}x{v[3]}: height and width must be multiples of {STRIDE}")
    return tuple(int(d) for d in v)  # type: ignore[return-value]


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimisation profile of the [B, 1, H, W] input: min <= opt <= max."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        for k in ("min", "opt", "max"):
            object.__setattr__(self, k, _shape(k, getattr(self, k)))
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(
                f"optimisation profile needs min <= opt <= max in every dimension, got min {self.min}, opt {self.opt}, max {self.max}"
            )

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and all(a <= d <= c for a, d, c in zip(self.min, shape, self.max))

    def describe(self) -> str:
        f = lambda s: "x".join(str(d) for d in (s[0], s[2], s[3]))  # noqa: E731
        return f"BxHxW min {f(self.min)}, opt {f(self.opt)}, max {f(self.max)}"

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShapeProfile":
        return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class EngineMetadata:
    """What the runtime needs to know about an engine (see the module docstring).

    Attributes:
        kpnet_version: kpnet that built it.
        tensorrt_version: TensorRT that built it (engines only load in the same version).
        precision: "fp32", "fp16", "int8" (Q/DQ) or "best" (fp16 + int8).
        input_name / output_names: I/O tensor names (["heatmap"] or ["keypoints", "scores", "counts"]).
        profiles: optimisation profiles of the input (this version builds one).
        postprocess_in_graph: NMS + top-k inside the engine.
        decode: the decoding baked into the graph (a DecodeConfig dict), when in the graph.
        model_config: the student's ModelConfig dict, from the ONNX metadata.
        gpu_name / compute_capability: the GPU it was built on ("8.9"); engines are specific
            to the compute capability.
        built_at: ISO 8601 UTC time of the build.
        engine_sha256: hash of the engine file, to catch a sidecar that belongs to another engine.
        build_command: the command line that built it (used in "rebuild with ..." messages).
        source: the ONNX (or checkpoint) it was built from.
        onnx_metadata: the ONNX ``metadata_props`` it was built from.
    """

    kpnet_version: str
    tensorrt_version: str
    precision: str
    input_name: str
    output_names: tuple[str, ...]
    profiles: tuple[ShapeProfile, ...]
    postprocess_in_graph: bool = False
    decode: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None
    gpu_name: str = "unknown"
    compute_capability: str | None = None
    built_at: str = ""
    engine_sha256: str | None = None
    build_command: str | None = None
    source: str | None = None
    onnx_metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; one of {', '.join(PRECISIONS)}")
        version_key(self.tensorrt_version)
        object.__setattr__(self, "output_names", tuple(self.output_names))
        object.__setattr__(self, "profiles", tuple(self.profiles))
        if not self.profiles:
            raise ValueError("engine metadata needs at least one optimisation profile")
        expected = ("keypoints", "scores", "counts") if self.postprocess_in_graph else ("heatmap",)
        if self.output_names != expected:
            raise ValueError(
                f"outputs {list(self.output_names)} do not match a kpnet engine (expected {list(expected)})"
            )
        if self.postprocess_in_graph:
            k = (self.decode or {}).get("max_keypoints")
            if not isinstance(k, int) or not 1 <= k <= TENSORRT_MAX_TOPK:
                raise ValueError(f"in-graph decoding needs decode.max_keypoints in 1..{TENSORRT_MAX_TOPK}, got {k!r}")

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) images are resized to: the first profile's opt shape."""
        o = self.profiles[0].opt
        return o[2], o[3]

    @property
    def input_shape(self) -> tuple[int | None, int, int | None, int | None]:
        """(B, 1, H, W) with None for dimensions that vary within the profile."""
        p = self.profiles[0]
        return tuple(None if lo != hi else lo for lo, hi in zip(p.min, p.max))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kpnet_version": self.kpnet_version,
            "tensorrt_version": self.tensorrt_version,
            "precision": self.precision,
            "input_name": self.input_name,
            "output_names": list(self.output_names),
            "profiles": [p.to_dict() for p in self.profiles],
            "postprocess_in_graph": self.postprocess_in_graph,
            "decode": self.decode,
            "model_config": self.model_config,
            "gpu": {"name": self.gpu_name, "compute_capability": self.compute_capability},
            "built_at": self.built_at,
            "engine_sha256": self.engine_sha256,
            "build_command": self.build_command,
            "source": self.source,
            "onnx_metadata": dict(self.onnx_metadata),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineMetadata":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(
                f"not a kpnet engine sidecar (format is {d.get('format') if isinstance(d, dict) else type(d).__name__!r}, expected {FORMAT!r})"
            )
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"sidecar format version {d.get('format_version')} is newer than this kpnet reads ({FORMAT_VERSION}); upgrade kpnet"
            )
        missing = [
            k
            for k in ("kpnet_version", "tensorrt_version", "precision", "input_name", "output_names", "profiles")
            if k not in d
        ]
        if missing:
            raise ValueError(f"sidecar lacks keys {missing}")
        gpu = d.get("gpu") or {}
        return cls(
            kpnet_version=str(d["kpnet_version"]),
            tensorrt_version=str(d["tensorrt_version"]),
            precision=str(d["precision"]),
            input_name=str(d["input_name"]),
            output_names=tuple(d["output_names"]),
            profiles=tuple(ShapeProfile.from_dict(p) for p in d["profiles"]),
            postprocess_in_graph=bool(d.get("postprocess_in_graph", False)),
            decode=d.get("decode"),
            model_config=d.get("model_config"),
            gpu_name=str(gpu.get("name", "unknown")),
            compute_capability=gpu.get("compute_capability"),
            built_at=str(d.get("built_at", "")),
            engine_sha256=d.get("engine_sha256"),
            build_command=d.get("build_command"),
            source=d.get("source"),
            onnx_metadata=dict(d.get("onnx_metadata") or {}),
        )

    def flat(self) -> dict[str, str]:
        """String-valued view for :attr:`kpnet.backends.BackendInfo.metadata`."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.to_dict().items()}


def write_engine_metadata(engine_path: str | Path, meta: EngineMetadata) -> Path:
    """Write ``ENGINE.json`` next to the engine and return its path."""
    from ...io import atomic_write_text

    path = sidecar_path(engine_path)
    atomic_write_text(path, json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def _rebuild(meta: EngineMetadata | None, engine_path: str | Path | None = None) -> str:
    if meta is not None and meta.build_command:
        return meta.build_command
    if engine_path is not None:
        p = Path(engine_path)
        return f"python -m export.trt {p.with_suffix('.onnx').name} -o {p.name}"
    return REBUILD_HINT


def read_engine_metadata(engine_path: str | Path, *, verify_hash: bool = False) -> EngineMetadata:
    """Read and validate the sidecar of ``engine_path``; ModelLoadError (naming the fix) when
    it is missing, unreadable or (``verify_hash``) belongs to another engine file."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ModelLoadError(
            f"{engine_path} has no kpnet metadata sidecar ({side.name}): kpnet runs only engines built by "
            f"`python -m export.trt`, which records input size, precision, decoding and the TensorRT version there. "
            f"Rebuild it with: {_rebuild(None, engine_path)}"
        )
    try:
        meta = EngineMetadata.from_dict(json.loads(side.read_text()))
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ModelLoadError(
            f"cannot read the engine metadata {side}: {exc}. Rebuild the engine with: {_rebuild(None, engine_path)}"
        ) from exc
    if verify_hash and meta.engine_sha256 and engine_path.is_file():
        got = file_sha256(engine_path)
        if got != meta.engine_sha256:
            raise ModelLoadError(
                f"{side.name} does not belong to {engine_path.name} (engine hash {got[:12]}..., sidecar says "
                f"{meta.engine_sha256[:12]}...): the engine was replaced without its sidecar. Rebuild with: {_rebuild(meta, engine_path)}"
            )
    return meta


def check_engine_compatible(
    meta: EngineMetadata,
    tensorrt_version: str,
    compute_capability: str | None = None,
    engine_path: str | Path | None = None,
) -> None:
    """Raise EngineIncompatibleError when the engine cannot run with the installed TensorRT
    (versions must match to the patch level) or on this GPU (same compute capability)."""
    name = Path(engine_path).name if engine_path is not None else "this engine"
    built, have = version_key(meta.tensorrt_version), version_key(tensorrt_version)
    if built != have:
        raise EngineIncompatibleError(
            f"{name} was built with TensorRT {'.'.join(map(str, built))} but {'.'.join(map(str, have))} is installed; "
            f"TensorRT engines only load in the version that built them. Rebuild it with: {_rebuild(meta, engine_path)}"
        )
    if (
        compute_capability is not None
        and meta.compute_capability is not None
        and str(compute_capability) != str(meta.compute_capability)
    ):
        raise EngineIncompatibleError(
            f"{name} was built on {meta.gpu_name} (compute capability {meta.compute_capability}) but this GPU has compute "
            f"capability {compute_capability}; engines are specific to the GPU architecture. Rebuild it on this machine with: "
            f"{_rebuild(meta, engine_path)}"
        )
