"""TensorRT engine backend (.engine/.plan built by ``python -m export.trt``).

Device memory and streams are PyTorch CUDA tensors and ``torch.cuda.Stream`` (install
``kpnet[gpu,torch]``). The engine is deserialised once; device buffers (and pinned host
staging buffers) are allocated once, for the largest shape of the optimisation profile, and
reused by every call. Execution uses TensorRT's named-tensor API: ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` on the backend's own CUDA stream.

It is a pure runner (the Backend contract): :meth:`TensorRTBackend.run` takes a float32
[B, 1, H, W] numpy array or torch tensor and returns the same kind. A contiguous float32 CUDA
tensor on the engine's GPU is bound as the engine input without a copy and the outputs stay
on the GPU; a host array goes through pinned staging memory. Pre-processing and decoding on
the GPU are :class:`kpnet.KeypointDetector`'s (give it a torch tensor).

Calls are serialised by a lock (one execution context and one set of buffers per backend).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..._deps import require
from ...config import STRIDE
from ...errors import ConfigError, MissingDependencyError, ModelLoadError
from ..base import BackendInfo, BackendOutput, BaseBackend
from .metadata import ShapeProfile, check_engine_compatible, read_engine_metadata

GPU_EXTRA_HINT = (
    "pip install tensorrt and a CUDA build of torch (in a kpnet clone: pip install -e '.[gpu,torch]'); torch holds "
    "the device memory and streams"
)


def import_tensorrt():
    """``import tensorrt`` or MissingDependencyError that names the extra to install."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependencyError(
            f"'tensorrt' is required for TensorRT engines but is not installed ({exc}); install it with: "
            "pip install tensorrt (in a kpnet clone: pip install -e '.[gpu]') on a machine with an NVIDIA GPU and driver"
        ) from exc
    return trt


def resolve_cuda_device(device: str | None):
    """(torch, torch.device) for a CUDA device; clear errors when torch or CUDA is missing."""
    if device is not None and str(device).split(":")[0] != "cuda":
        raise ConfigError(f"TensorRT engines run on NVIDIA GPUs; use device='cuda' or 'cuda:N', got {device!r}")
    try:
        torch = require("torch")
    except MissingDependencyError as exc:
        raise MissingDependencyError(
            f"the TensorRT backend keeps device buffers and streams in PyTorch CUDA tensors, but torch is not installed; "
            f"{GPU_EXTRA_HINT}"
        ) from exc
    from ..torch_backend import resolve_device

    return torch, resolve_device(device or "cuda:0")


def _torch_dtype(trt, torch, dt):
    table = {}
    for trt_name, torch_name in (
        ("FLOAT", "float32"),
        ("HALF", "float16"),
        ("BF16", "bfloat16"),
        ("INT32", "int32"),
        ("INT64", "int64"),
        ("INT8", "int8"),
        ("UINT8", "uint8"),
        ("BOOL", "bool"),
    ):
        if hasattr(trt.DataType, trt_name):
            table[getattr(trt.DataType, trt_name)] = getattr(torch, torch_name)
    if dt not in table:
        raise ModelLoadError(f"engine tensor type {dt} is not supported by the kpnet TensorRT backend")
    return table[dt]


class TensorRTBackend(BaseBackend):
    """Runs a kpnet TensorRT engine on one CUDA device (see the module docstring).

    Args:
        path: the .engine/.plan file; its sidecar ``PATH.json`` must be next to it.
        device: "cuda" or "cuda:N" (default "cuda:0").
        threads: must be None: CPU inference threads do not apply to a GPU engine.
        verify_hash: check that the sidecar was written for this engine file.
    """

    def __init__(
        self, path: str | Path, *, device: str | None = None, threads: int | None = None, verify_hash: bool = True
    ) -> None:
        super().__init__()
        path = Path(path)
        if threads is not None:
            raise ConfigError(
                f"threads={threads} sets CPU inference threads; a TensorRT engine runs on the GPU (leave threads unset)"
            )
        # Order matters: each step fails with the message that names its fix.
        meta = read_engine_metadata(path, verify_hash=verify_hash)
        trt = import_tensorrt()
        torch, dev = resolve_cuda_device(device)
        cap = "%d.%d" % torch.cuda.get_device_capability(dev)
        check_engine_compatible(meta, trt.__version__, cap, path)
        self._trt, self._torch, self._device, self.metadata = trt, torch, dev, meta
        self._lock = threading.Lock()
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(dev):
            self._runtime = trt.Runtime(self._logger)
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise ModelLoadError(
                    f"TensorRT {trt.__version__} could not deserialise {path} (see the TensorRT log above); the file is "
                    f"corrupt or was built elsewhere. Rebuild it with: {meta.build_command or 'python -m export.trt'}"
                )
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise ModelLoadError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
            self._setup_io(path)
            self._stream = torch.cuda.Stream(device=dev)
        in_graph = meta.postprocess_in_graph
        p = self._profile
        self.info = BackendInfo(
            name="tensorrt",
            model_path=str(path),
            input_shape=tuple(None if lo != hi else lo for lo, hi in zip(p.min, p.max)),  # type: ignore[arg-type]
            input_size=(p.opt[2], p.opt[3]),
            device=f"{dev} ({torch.cuda.get_device_name(dev)})",
            precision=meta.precision,
            postprocess_in_graph=in_graph,
            decode=meta.decode if in_graph else None,
            threads=None,
            metadata=meta.flat(),
            native="torch",
            torch_device=str(dev),
            stride=STRIDE * int((meta.model_config or {}).get("downsample", 1) or 1),
            size_range=None if p.min[2:] == p.max[2:] else ((p.min[2], p.min[3]), (p.max[2], p.max[3])),
            defaults={
                k: float(v) for k, v in json.loads(meta.onnx_metadata.get("kpnet_decode_defaults", "{}")).items()
            },
        )

    # ------------------------------------------------------------------ set-up
    def _setup_io(self, path: Path) -> None:
        trt, torch, eng, meta = self._trt, self._torch, self._engine, self.metadata
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        inputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [meta.input_name] or sorted(outputs) != sorted(meta.output_names):
            raise ModelLoadError(
                f"{path}: engine tensors (inputs {inputs}, outputs {outputs}) do not match its sidecar "
                f"(input {meta.input_name!r}, outputs {list(meta.output_names)}); rebuild with python -m export.trt"
            )
        self._input = meta.input_name
        self._outputs = list(meta.output_names)
        static = tuple(int(d) for d in eng.get_tensor_shape(self._input))
        if all(d > 0 for d in static):  # built without a dynamic dimension: no profile to ask
            lo = opt = hi = static
        else:
            lo, opt, hi = (tuple(int(d) for d in s) for s in eng.get_tensor_profile_shape(self._input, 0))
        self._profile = ShapeProfile(lo, opt, hi)  # type: ignore[arg-type]
        self._in_dtype = _torch_dtype(trt, torch, eng.get_tensor_dtype(self._input))
        dev = self._device
        numel = int(np.prod(hi))
        self._in_dev = torch.empty(numel, dtype=self._in_dtype, device=dev)
        self._in_host = torch.empty(numel, dtype=torch.float32, pin_memory=True)
        # Output sizes at the largest input shape of the profile bound every other shape.
        if not self._context.set_input_shape(self._input, hi):
            raise ModelLoadError(f"{path}: TensorRT refused the profile's max input shape {hi}")
        self._out_dev: dict[str, Any] = {}
        self._out_host: dict[str, Any] = {}
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ModelLoadError(f"{path}: output {name!r} has no fixed shape at input {hi} ({shape})")
            dt = _torch_dtype(trt, torch, eng.get_tensor_dtype(name))
            n = int(np.prod(shape))
            self._out_dev[name] = torch.empty(n, dtype=dt, device=dev)
            self._out_host[name] = torch.empty(n, dtype=dt, pin_memory=True)
            self._context.set_tensor_address(name, self._out_dev[name].data_ptr())

    # ------------------------------------------------------------------ helpers
    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if not self._profile.contains(tuple(shape)):
            b, _, h, w = (tuple(shape) + (0, 0, 0, 0))[:4]
            raise ConfigError(
                f"input shape {tuple(shape)} is outside the optimisation profile of {self.info.model_path} "
                f"({self._profile.describe()}); rebuild the engine with a wider profile, e.g. "
                f"python -m export.trt MODEL.onnx --min ... --opt ... --max {b}x{h}x{w}"
            )

    def _execute(self, x_dev) -> dict[str, Any]:
        """Bind ``x_dev`` (device tensor, engine dtype, contiguous) and enqueue on our stream.
        Returns views of the output buffers with this call's shapes. Caller holds the lock."""
        ctx = self._context
        if not ctx.set_input_shape(self._input, tuple(x_dev.shape)):
            raise ConfigError(f"TensorRT rejected input shape {tuple(x_dev.shape)} for {self.info.model_path}")
        ctx.set_tensor_address(self._input, x_dev.data_ptr())
        views = {}
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            ctx.set_tensor_address(name, self._out_dev[name].data_ptr())
            views[name] = self._out_dev[name][: int(np.prod(shape))].view(shape)
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed for {self.info.model_path} (see the TensorRT log)")
        return views

    # ------------------------------------------------------------------ the Backend contract
    def _run_impl(self, batch) -> BackendOutput:
        """float32 [B, 1, H, W] torch tensor (CPU or GPU) -> outputs as new tensors on the GPU.

        Work is ordered after the caller's current stream and the results are ready for it.
        A CPU tensor is staged through pinned memory; a contiguous float32 tensor on the
        engine's GPU is bound directly (zero copy)."""
        torch = self._torch
        self._check_shape(tuple(batch.shape))
        with self._lock, torch.cuda.device(self._device):
            caller = torch.cuda.current_stream(self._device)
            stream = self._stream
            if batch.device.type == "cpu":
                n = batch.numel()
                host_in = self._in_host[:n].view(tuple(batch.shape))
                host_in.copy_(batch)  # into pinned memory, so the upload is asynchronous
                x = self._in_dev[:n].view(tuple(batch.shape))
                with torch.cuda.stream(stream):
                    x.copy_(host_in, non_blocking=True)
            else:
                x = batch.to(self._device, dtype=self._in_dtype, non_blocking=True).contiguous()  # no-op when it fits
            stream.wait_stream(caller)  # the frame (and the previous results' clones) are ready
            views = self._execute(x)
            if batch.device.type != "cpu":
                x.record_stream(stream)  # keep the caching allocator from reusing x while TensorRT reads it
            caller.wait_stream(stream)
            out = {k: v.clone() for k, v in views.items()}  # on the caller's stream
        if self.info.postprocess_in_graph:
            return BackendOutput(
                keypoints=out["keypoints"].float(), scores=out["scores"].float(), counts=out["counts"].long()
            )
        return BackendOutput(heatmap=out["heatmap"].float())

    def _close_impl(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.synchronize()
        for attr in ("_context", "_engine", "_runtime", "_in_dev", "_in_host", "_out_dev", "_out_host"):
            setattr(self, attr, None)


def load_tensorrt(
    path: str | Path, *, device: str | None = None, providers: Any = None, threads: int | None = None
) -> TensorRTBackend:
    """Factory entry for .engine/.plan files (see :func:`kpnet.backends.create_backend`)."""
    if providers is not None:
        raise ConfigError(
            f"providers={providers!r} only apply to .onnx models; a TensorRT engine runs on device='cuda' or 'cuda:N'"
        )
    return TensorRTBackend(path, device=device, threads=threads)


__all__ = ["TensorRTBackend", "load_tensorrt", "import_tensorrt", "resolve_cuda_device"]
