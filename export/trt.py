"""``python -m export.trt``: TensorRT engine building is not implemented in this version."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "export.trt: building TensorRT engines is not implemented in this version of kpnet. "
        "Meanwhile, run the exported .onnx on GPU with ONNX Runtime's TensorRT or CUDA provider: "
        "KeypointDetector('model.onnx', providers=['tensorrt']) after `pip install 'kpnet[gpu]'`.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
