"""Model export tools: ``python -m export.onnx`` (ONNX) and, later, ``python -m export.trt``."""
