import numpy as np
import pytest

pytest.importorskip("onnx")

from export.quantize import compare, quantize  # noqa: E402
from kpnet.backends import create_backend  # noqa: E402


def test_int8_quantisation_keeps_metadata_and_tail(tiny_onnx, tmp_path):
    rng = np.random.default_rng(0)
    calib = [rng.random((1, 1, 128, 160), dtype=np.float32) for _ in range(4)]
    out = tmp_path / "tiny.int8.onnx"
    kept = quantize(tiny_onnx, out, calib)
    assert kept, "the head/upsampling tail should stay in fp32"
    with create_backend(out) as be:
        assert be.info.precision == "int8"
        assert be.info.input_size == (128, 160)
    rep = compare(tiny_onnx, out, calib[:2], k=100)
    assert rep["images"] == 2
    assert rep["mean_abs_logit_error"] < 1.0  # close to fp32, but not identical
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_refuses_in_graph_postprocess(tiny_onnx_pp, tmp_path):
    with pytest.raises(ValueError, match="post-processing inside"):
        quantize(tiny_onnx_pp, tmp_path / "x.onnx", [np.zeros((1, 1, 128, 160), np.float32)])
