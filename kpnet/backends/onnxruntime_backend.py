"""ONNX Runtime backend for .onnx models, with explicit execution providers."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._deps import require
from ..errors import ConfigError, ModelLoadError, ProviderUnavailableError
from .base import BackendInfo, BackendOutput, BaseBackend, decode_defaults, model_stride, parse_metadata

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}
ProviderSpec = str | tuple[str, dict[str, Any]]
#: How to get ONNX Runtime's CUDA/TensorRT providers (pip from PyPI, or the extra in a clone).
GPU_INSTALL_HINT = "pip install onnxruntime-gpu (in a kpnet clone: pip install -e '.[gpu]')"


def _trt_cache_dir() -> str:
    import os

    return os.environ.get("KPNET_TRT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kpnet", "ort-tensorrt")


def default_provider_options(full: str) -> dict[str, Any]:
    """Engine caching for ONNX Runtime's TensorRT EP (building an engine takes minutes; the
    cache, keyed by model and GPU, makes later sessions start in seconds) and cuDNN algorithm
    search for the CUDA EP. Precision is never changed here: pass
    ("tensorrt", {"trt_fp16_enable": True}) to opt in. User options override these."""
    if full == "TensorrtExecutionProvider":
        cache = _trt_cache_dir()
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": cache,
        }
    if full == "CUDAExecutionProvider":
        return {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    return {}


def resolve_providers(providers: Sequence[ProviderSpec] | None, available: Sequence[str]) -> list[ProviderSpec]:
    """Map aliases to ONNX Runtime provider names and check each is available; never fall back."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    out: list[ProviderSpec] = []
    for p in providers:
        name, opts = p if isinstance(p, tuple) else (p, None)
        full = PROVIDER_ALIASES.get(str(name).lower(), name)
        if not str(full).endswith("ExecutionProvider"):
            raise ConfigError(
                f"unknown ONNX Runtime provider {name!r}; valid names: {', '.join(PROVIDER_ALIASES)} "
                "(or a full ONNX Runtime name such as 'CUDAExecutionProvider')"
            )
        if full not in available:
            hint = ""
            if full in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
                hint = f" On a machine with an NVIDIA GPU, install the GPU runtime: {GPU_INSTALL_HINT}."
            raise ProviderUnavailableError(
                f"ONNX Runtime provider {name!r} ({full}) is not available; available here: "
                f"{', '.join(available)}.{hint}"
            )
        opts = {**default_provider_options(full), **(opts or {})}
        if full == "TensorrtExecutionProvider" and opts.get("trt_engine_cache_enable"):
            Path(str(opts["trt_engine_cache_path"])).mkdir(parents=True, exist_ok=True)
        out.append((full, opts) if opts else full)
    return out


#: Input shapes that get a session of their own (see OnnxRuntimeBackend); beyond, the dynamic one.
MAX_SPECIALISED_SHAPES = 4


class OnnxRuntimeBackend(BaseBackend):
    """Runs an exported kpnet .onnx model in an ONNX Runtime InferenceSession.

    A model with dynamic dimensions runs each of its first ``MAX_SPECIALISED_SHAPES`` input
    shapes in a session specialised to that shape (ONNX Runtime's free-dimension overrides:
    the graph is optimised as if the shape were fixed, as fast as a static export; about 50 ms
    to build, once per shape, the first time it is seen); other shapes use the dynamic session.

    ``run`` is thread-safe: ONNX Runtime allows concurrent ``InferenceSession.run`` calls.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        providers: Sequence[ProviderSpec] | None = None,
        threads: int | None = None,
        optimized_model_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        ort = require("onnxruntime")
        chosen = resolve_providers(providers, ort.get_available_providers())
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise ConfigError(f"threads must be a positive int, got {threads!r}")
            so.intra_op_num_threads = threads
        if optimized_model_path is not None:
            so.optimized_model_filepath = str(optimized_model_path)
        self._ort, self._path, self._chosen, self._threads = ort, str(path), chosen, threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=chosen)
        except Exception as exc:  # ORT raises its own pybind exception types
            raise ModelLoadError(
                f"ONNX Runtime cannot load {path}: {type(exc).__name__}: {str(exc)[:300]}. The file is "
                "corrupt or not an ONNX model; re-export it with `python -m export.onnx`."
            ) from exc
        wanted = [p if isinstance(p, str) else p[0] for p in chosen]
        used = self.session.get_providers()
        missing = [p for p in wanted if p not in used]
        if missing:
            # ORT drops a provider whose libraries fail to load (e.g. CUDA/cuDNN); refuse that.
            raise ProviderUnavailableError(
                f"ONNX Runtime could not enable {', '.join(missing)} for {path} (session uses "
                f"{', '.join(used)}); check the CUDA/cuDNN/TensorRT libraries or request 'cpu'"
            )
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        # axis -> symbolic dimension name, for shape-specialised sessions
        self._free_dims = {i: d for i, d in enumerate(inp.shape) if isinstance(d, str) and d}
        self._specialised: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()
        shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        if len(shape) != 4:
            raise ModelLoadError(f"{path}: input '{inp.name}' has shape {inp.shape}; a kpnet model takes [B, 1, H, W]")
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        size, in_graph, decode = parse_metadata(meta)
        if shape[2] is not None and shape[3] is not None:
            size = (shape[2], shape[3])
        if size is None:
            raise ModelLoadError(
                f"{path} has dynamic height/width and no '{'kpnet_input_size'}' metadata; "
                "re-export it with `python -m export.onnx`"
            )
        self._outputs = [o.name for o in self.session.get_outputs()]
        expected = ["keypoints", "scores", "counts"] if in_graph else ["heatmap"]
        if self._outputs != expected:
            raise ModelLoadError(f"{path}: outputs {self._outputs}, expected {expected} for a kpnet model")
        precision = meta.get("kpnet_precision", "fp32")
        intra = so.intra_op_num_threads or None
        stride = model_stride(meta)
        self.info = BackendInfo(
            name="onnxruntime",
            model_path=str(path),
            input_shape=(shape[0], 1, shape[2], shape[3]),
            input_size=size,
            device=",".join(used),
            precision=precision,
            postprocess_in_graph=in_graph,
            decode=decode,
            threads=intra,
            metadata=meta,
            native="numpy",
            stride=stride,
            defaults=decode_defaults(meta),
        )

    def _session_for(self, shape: tuple[int, ...]):
        sess = self._specialised.get(shape)
        if sess is not None or not self._free_dims:
            return sess or self.session
        with self._lock:
            sess = self._specialised.get(shape)
            if sess is None:
                if len(self._specialised) >= MAX_SPECIALISED_SHAPES:
                    return self.session
                ort = self._ort
                so = ort.SessionOptions()
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                if self._threads is not None:
                    so.intra_op_num_threads = self._threads
                for axis, name in self._free_dims.items():
                    so.add_free_dimension_override_by_name(name, int(shape[axis]))
                sess = ort.InferenceSession(self._path, sess_options=so, providers=self._chosen)
                self._specialised[shape] = sess
        return sess

    def _run_impl(self, batch: np.ndarray) -> BackendOutput:
        outs = self._session_for(tuple(batch.shape)).run(self._outputs, {self._input_name: batch})
        if self.info.postprocess_in_graph:
            kp, sc, n = outs
            return BackendOutput(keypoints=kp, scores=sc, counts=n.astype(np.int64))
        return BackendOutput(heatmap=outs[0])

    def _close_impl(self) -> None:
        self.session = None  # type: ignore[assignment]
        self._specialised.clear()


def describe(meta: dict[str, str]) -> str:
    return json.dumps(meta, indent=2, sort_keys=True)
