"""Create the randomly initialised (UNTRAINED) placeholder student shipped in models/.

    python models/make_untrained.py

Writes models/kpnet-small-untrained.pt and models/kpnet-small-untrained.onnx. These weights are
random (seed 0, ImageNet-free): they exercise the runtime end to end but detect nothing
meaningful. Trained models replace them once distillation has run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from export.onnx import ExportOptions, export_onnx
from kpnet.model import KpNet

HERE = Path(__file__).resolve().parent


def main() -> None:
    torch.manual_seed(0)
    ckpt = HERE / "kpnet-small-untrained.pt"
    KpNet().save_pretrained(ckpt, extra={"trained": False, "note": "random initialisation, seed 0; NOT trained"})
    report = export_onnx(ckpt, ckpt.with_suffix(".onnx"), ExportOptions())
    print(report)


if __name__ == "__main__":
    main()
