import json

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export.onnx import ExportOptions, export_onnx, keypoint_agreement, main, verify_parity  # noqa: E402
from kpnet.backends import create_backend  # noqa: E402
from kpnet.config import DecodeConfig  # noqa: E402


def test_metadata_and_checker(tiny_onnx):
    m = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(m)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["kpnet_postprocess"] == "false"
    assert json.loads(meta["kpnet_input_size"]) == [128, 160]
    assert json.loads(meta["kpnet_model_config"])["backbone"] == "small"
    assert meta["kpnet_version"]
    ops = {n.op_type for n in m.graph.node}
    # The bicubic upsampling is traced as Pad + Conv + DepthToSpace, not a slow cubic Resize.
    assert "DepthToSpace" in ops
    assert not any(
        n.op_type == "Resize" and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute) for n in m.graph.node
    )


def test_in_graph_metadata(tiny_onnx_pp):
    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx_pp)).metadata_props}
    assert meta["kpnet_postprocess"] == "true"
    assert json.loads(meta["kpnet_decode_config"])["max_keypoints"] == 200


def test_static_batch_and_dynamic_hw(tiny_ckpt, tmp_path):
    out = tmp_path / "dyn.onnx"
    export_onnx(tiny_ckpt, out, ExportOptions(dynamic_batch=False, dynamic_hw=True, exporter="torchscript"))
    with create_backend(out) as be:
        assert be.info.input_shape == (1, 1, None, None)
        assert be.info.input_size == (128, 160)  # from metadata
        for hw in [(64, 96), (160, 224)]:
            assert be.run(np.random.rand(1, 1, *hw).astype(np.float32)).heatmap.shape == (1, 1, *hw)
        with pytest.raises(ValueError, match="expects 1x1x"):
            be.run(np.zeros((2, 1, 64, 64), np.float32))


def test_custom_size(tiny_ckpt, tmp_path):
    out = tmp_path / "s.onnx"
    export_onnx(tiny_ckpt, out, ExportOptions(input_size=(96, 128), exporter="torchscript", calibrate=False))
    with create_backend(out) as be:
        assert be.info.input_shape == (None, 1, None, None) and be.info.input_size == (96, 128)
    export_onnx(
        tiny_ckpt, out, ExportOptions(input_size=(96, 128), dynamic_hw=False, exporter="torchscript", calibrate=False)
    )
    with create_backend(out) as be:
        assert be.info.input_shape == (None, 1, 96, 128)


def test_parity_failure_is_loud(tiny_ckpt, tiny_onnx, tmp_path):
    from export.onnx import load_model

    model = load_model(tiny_ckpt)
    with pytest.raises(RuntimeError, match="failed the parity check"):
        # Perturb PyTorch's weights so they no longer match the exported graph.
        import torch

        with torch.no_grad():
            model.head.bias.add_(3.0)
            model.head.weight.mul_(-1.0)
        verify_parity(model, tiny_onnx, np.random.rand(128, 160).astype(np.float32), None)


def test_keypoint_agreement():
    a = np.array([[0, 0], [10, 10]], np.float32)
    assert keypoint_agreement(a, a) == (1.0, 0.0)
    assert keypoint_agreement(a, a + 5)[0] == 0.0


def test_options_validation():
    with pytest.raises(ValueError, match="unknown exporter 'tf'; choose from: dynamo, torchscript"):
        ExportOptions(exporter="tf")
    with pytest.raises(ValueError, match="multiples of 32"):
        ExportOptions(input_size=(100, 100))
    with pytest.raises(ValueError, match="sub-pixel"):
        ExportOptions(decode=DecodeConfig(subpixel=True))


def test_cli(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main([str(tiny_ckpt), "-o", str(out), "--exporter", "torchscript", "--static-batch"]) == 0
    text = capsys.readouterr().out
    assert "max |heatmap diff|" in text and "keypoint agreement = 100.00%" in text
    assert main([str(tmp_path / "missing.pt"), "-o", str(out)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_fast_variant_exports_and_detects_in_original_pixels(tmp_path, sample_bgr):
    """downsample=2 with the sub-cell head (the fast variant): ONNX keeps the in-graph pooling,
    the x8 bicubic as convolutions and the cell head as DepthToSpace, ONNX Runtime matches PyTorch, and keypoints come back in original pixels."""
    import torch

    from kpnet import KeypointDetector
    from kpnet.config import ModelConfig
    from kpnet.model import KpNet

    torch.manual_seed(0)
    model = KpNet(ModelConfig(fpn_width=16, input_size=(128, 192), downsample=2, cell_head=True))
    with torch.no_grad():
        model.head.weight.mul_(30.0)
        model.cell.weight.normal_(0.0, 0.5)  # a trained sub-cell head is not zero
    ckpt = tmp_path / "fast.pt"
    model.save_pretrained(ckpt)
    out = tmp_path / "fast.onnx"
    export_onnx(ckpt, out, ExportOptions(exporter="torchscript", calibrate=False))
    m = onnx.load(str(out))
    cfg = json.loads({p.key: p.value for p in m.metadata_props}["kpnet_model_config"])
    assert cfg["downsample"] == 2 and cfg["cell_head"] is True
    assert not any(
        n.op_type == "Resize" and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute) for n in m.graph.node
    )
    with KeypointDetector(ckpt, max_keypoints=200) as dt, KeypointDetector(out, max_keypoints=200) as do:
        assert do.input_size == (128, 192) and do.stride == 64
        ht, ho = dt.heatmap(sample_bgr), do.heatmap(sample_bgr)
        # a 512x512 frame at the 128x192 pixel budget, rounded to multiples of 64
        assert (
            ht.shape == ho.shape == do.working_size(sample_bgr.shape[:2]) == (128, 128) and np.abs(ht - ho).max() < 1e-4
        )
        kt, ko = dt.detect(sample_bgr), do.detect(sample_bgr)
    assert len(kt) == len(ko) >= 50
    np.testing.assert_allclose(kt.xy, ko.xy, atol=1e-3)
    h, w = sample_bgr.shape[:2]
    assert ko.xy[:, 0].max() > 0.8 * w and ko.xy[:, 1].max() > 0.8 * h  # mapped back to the full image
    with pytest.raises(ValueError, match="multiples of 64, got 96x192"):
        export_onnx(ckpt, tmp_path / "bad.onnx", ExportOptions(input_size=(96, 192), exporter="torchscript"))
