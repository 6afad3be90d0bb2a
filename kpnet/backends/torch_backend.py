"""PyTorch backend for kpnet checkpoints (.pt/.pth), on CPU or CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._deps import require
from ..errors import ProviderUnavailableError
from .base import BackendInfo, BackendOutput, BaseBackend


def resolve_device(device: str | None):
    """'cpu', 'cuda', 'cuda:N' (None -> 'cpu') -> torch.device; raise if CUDA is unavailable."""
    torch = require("torch")
    name = "cpu" if device is None else str(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown torch device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported torch device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ProviderUnavailableError(
                f"device {device!r} was requested but CUDA is not available to torch "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use device='cpu' "
                "or install a CUDA build of torch on a machine with an NVIDIA GPU"
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ProviderUnavailableError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        dev = torch.device("cuda", index)
    return dev


class TorchBackend(BaseBackend):
    """Runs :class:`kpnet.model.KpNet` from a checkpoint; output is the logit heatmap."""

    def __init__(self, path: str | Path, *, device: str | None = None, threads: int | None = None) -> None:
        super().__init__()
        torch = require("torch")
        from ..model import KpNet

        self._torch = torch
        self._device = resolve_device(device)
        if threads is not None:
            # torch's thread pool is process-wide; only set it when asked.
            torch.set_num_threads(int(threads))
        self.model = KpNet.from_pretrained(path, map_location="cpu").to(self._device).eval()
        cfg = self.model.config
        self.info = BackendInfo(
            name="torch",
            model_path=str(path),
            input_shape=(None, 1, None, None),
            input_size=cfg.input_size,
            device=str(self._device),
            precision="fp32",
            threads=torch.get_num_threads() if self._device.type == "cpu" else None,
            metadata={"kpnet_model_config": json.dumps(cfg.to_dict())},
        )

    def _run_impl(self, batch: np.ndarray) -> BackendOutput:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device)
            y = self.model(x)
        return BackendOutput(heatmap=y.float().cpu().numpy())

    @property
    def device(self):
        """The torch.device the model runs on."""
        return self._device

    def run_device(self, batch) -> dict:
        """float32 [B, 1, H, W] torch tensor (moved to the model's device if needed) ->
        {"heatmap": logits [B, 1, H, W]} on the device; nothing is copied to the host."""
        torch = self._torch
        if not isinstance(batch, torch.Tensor) or batch.dtype != torch.float32 or batch.ndim != 4 or batch.shape[1] != 1:
            got = f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"input tensor 'image' must be a float32 torch tensor [B, 1, H, W], got {got}")
        with torch.inference_mode():
            return {"heatmap": self.model(batch.to(self._device, non_blocking=True))}

    def _close_impl(self) -> None:
        self.model = None  # type: ignore[assignment]
