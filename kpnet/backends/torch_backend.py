"""PyTorch backend for kpnet checkpoints (.pt/.pth), on CPU or CUDA."""

from __future__ import annotations

import json
from pathlib import Path

from .._deps import require
from ..errors import ConfigError, ProviderUnavailableError
from .base import BackendInfo, BackendOutput, BaseBackend


def resolve_device(device: str | None):
    """'cpu', 'cuda', 'cuda:N' (None -> 'cpu') -> torch.device; raise if CUDA is unavailable."""
    torch = require("torch")
    name = "cpu" if device is None else str(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown torch device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported torch device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ProviderUnavailableError(
                f"device {device!r} was requested but this torch ({torch.__version__}) is a CPU-only build; "
                "install a CUDA build of torch (https://pytorch.org/get-started/locally/) on a machine with an "
                "NVIDIA GPU, or use device='cpu'"
            )
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            raise ProviderUnavailableError(
                f"device {device!r} was requested but CUDA is not available: torch {torch.__version__} is a CUDA "
                f"{torch.version.cuda} build, but it sees no usable GPU (no NVIDIA GPU, no driver, or "
                "CUDA_VISIBLE_DEVICES hides it; check nvidia-smi). Use device='cpu' here"
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ProviderUnavailableError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        dev = torch.device("cuda", index)
    return dev


class TorchBackend(BaseBackend):
    """Runs :class:`kpnet.model.KpNet` from a checkpoint; output is the logit heatmap.

    Native kind: torch (``run`` on a tensor returns tensors on the model's device).
    ``threads`` sets torch's intra-op CPU pool, which is process-wide in PyTorch.
    """

    def __init__(self, path: str | Path, *, device: str | None = None, threads: int | None = None) -> None:
        super().__init__()
        torch = require("torch")
        from ..model import KpNet, load_checkpoint

        self._torch = torch
        self._device = resolve_device(device)
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise ConfigError(f"threads must be a positive int, got {threads!r}")
            if self._device.type != "cpu":
                raise ConfigError(
                    f"threads={threads} sets CPU inference threads; it does not apply to device {device!r}"
                )
            torch.set_num_threads(int(threads))
        ckpt = load_checkpoint(path, map_location="cpu")
        self.model = KpNet.from_pretrained(path, map_location="cpu").to(self._device).eval()
        cfg = self.model.config
        extra = ckpt.get("extra") or {}
        defaults = {
            k: float(v) for k, v in (extra.get("decode_defaults") or {}).items() if k in ("threshold", "min_contrast")
        }
        self.info = BackendInfo(
            name="torch",
            model_path=str(path),
            input_shape=(None, 1, None, None),
            input_size=cfg.input_size,
            device=str(self._device),
            precision="fp32",
            threads=torch.get_num_threads() if self._device.type == "cpu" else None,
            metadata={"kpnet_model_config": json.dumps(cfg.to_dict())},
            native="torch",
            torch_device=str(self._device),
            stride=cfg.stride,
            defaults=defaults,
        )

    def _run_impl(self, batch) -> BackendOutput:
        torch = self._torch
        with torch.inference_mode():
            y = self.model(batch.to(self._device, non_blocking=True))
        return BackendOutput(heatmap=y.float())

    def _close_impl(self) -> None:
        self.model = None  # type: ignore[assignment]
