import numpy as np
import pytest

from kpnet import KeypointDetector
from kpnet.backends import create_backend
from kpnet.backends.base import check_batch
from kpnet.errors import (
    ConfigError,
    KpnetError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderUnavailableError,
    UnsupportedModelError,
)


def test_unknown_suffix(tmp_path):
    p = tmp_path / "model.tflite"
    p.write_bytes(b"x")
    with pytest.raises(
        UnsupportedModelError, match=r"unknown model file type '.tflite'.*supported: .engine, .onnx, .plan, .pt, .pth"
    ):
        create_backend(p)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        create_backend(tmp_path / "nope.onnx")


def test_corrupt_onnx(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match=r"cannot load .*re-export it with `python -m export.onnx`"):
        create_backend(p)


def test_corrupt_pt(tmp_path):
    pytest.importorskip("torch")
    p = tmp_path / "bad.pt"
    p.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="corrupt"):
        create_backend(p)


def test_tensorrt_engine_without_sidecar(tmp_path):
    p = tmp_path / "m.engine"
    p.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="no kpnet metadata sidecar"):
        create_backend(p)


def test_unknown_and_unavailable_provider(tiny_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider is available here; the unavailable-provider path cannot be exercised")
    with pytest.raises(
        ProviderUnavailableError,
        match=r"'cuda' \(CUDAExecutionProvider\) is not available.*pip install onnxruntime-gpu \(in a kpnet clone: pip install -e '.\[gpu\]'\)",
    ):
        create_backend(tiny_onnx, providers=["cuda"])
    # an unknown name lists the valid ones
    with pytest.raises(
        ConfigError, match=r"unknown ONNX Runtime provider 'gpu'; valid names: cpu, cuda, tensorrt, trt"
    ):
        create_backend(tiny_onnx, providers=["gpu"])


def test_cuda_device_unavailable_raises(tiny_ckpt):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; the unavailable-device path cannot be exercised")
    with pytest.raises(ProviderUnavailableError, match="CUDA is not available"):
        create_backend(tiny_ckpt, device="cuda")


def test_wrong_option_for_backend(tiny_onnx, tiny_ckpt):
    with pytest.raises(ValueError, match="does not apply to ONNX models"):
        create_backend(tiny_onnx, device="cuda")
    with pytest.raises(ValueError, match="only apply to .onnx models"):
        create_backend(tiny_ckpt, providers=["cpu"])


def test_input_check_names_tensor(tiny_onnx_fixed, tiny_onnx):
    with create_backend(tiny_onnx) as be:
        with pytest.raises(
            ConfigError, match=r"input tensor 'image' is 100x160 \(HxW\); the model needs multiples of 32"
        ):
            be.run(np.zeros((1, 1, 100, 160), np.float32))
    with create_backend(tiny_onnx_fixed) as be:
        assert be.info.input_shape == (None, 1, 128, 160)
        with pytest.raises(
            ValueError, match=r"input tensor 'image' has shape \(1, 1, 64, 64\); the model expects \?x1x128x160"
        ):
            be.run(np.zeros((1, 1, 64, 64), np.float32))
        with pytest.raises(ValueError, match="must be a float32"):
            be.run(np.zeros((1, 1, 128, 160), np.float64))
    with pytest.raises(KpnetError, match="is closed; create a new detector"):
        be.run(np.zeros((1, 1, 128, 160), np.float32))
    with pytest.raises(ValueError, match="expects 1x1x4x4"):
        check_batch(np.zeros((1, 1, 4, 5), np.float32), (1, 1, 4, 4))


def test_onnx_metadata(tiny_onnx):
    with create_backend(tiny_onnx, threads=1) as be:
        i = be.info
        assert i.name == "onnxruntime" and i.device == "CPUExecutionProvider"
        assert i.input_size == (128, 160) and i.threads == 1
        assert i.metadata["kpnet_postprocess"] == "false"
        assert '"fpn_width": 16' in i.metadata["kpnet_model_config"]


def test_torch_and_onnx_same_heatmap_and_keypoints(tiny_ckpt, tiny_onnx, sample_bgr):
    with KeypointDetector(tiny_ckpt, max_keypoints=300) as dt, KeypointDetector(tiny_onnx, max_keypoints=300) as do:
        ht, ho = dt.heatmap(sample_bgr), do.heatmap(sample_bgr)
        assert np.abs(ht - ho).max() < 1e-4
        kt, ko = dt.detect(sample_bgr), do.detect(sample_bgr)
    assert len(kt) == len(ko) >= 50
    d = np.linalg.norm(kt.xy[:, None] - ko.xy[None], axis=-1).min(axis=1)
    assert (d < 1e-3).mean() >= 0.99
    np.testing.assert_allclose(kt.scores, ko.scores, atol=1e-4)


def test_in_graph_postprocess_equals_host(tiny_ckpt, tiny_onnx, tiny_onnx_pp, sample_bgr):
    import cv2

    sample_bgr = cv2.resize(sample_bgr, (160, 128), interpolation=cv2.INTER_AREA)  # the graph's size: scale 1
    with KeypointDetector(tiny_onnx_pp) as dp:
        assert dp.info.postprocess_in_graph
        assert dp.config.nms_radius == 3 and dp.config.max_keypoints == 200
        kp = dp.detect(sample_bgr)
    with KeypointDetector(tiny_onnx, max_keypoints=200, nms_radius=3, border=4) as dh:
        kh = dh.detect(sample_bgr)
    assert len(kp) == len(kh) >= 50
    np.testing.assert_allclose(kp.xy, kh.xy, atol=1e-4)
    np.testing.assert_allclose(kp.scores, kh.scores, atol=1e-5)


def test_in_graph_settings_are_enforced(tiny_onnx_pp):
    with pytest.raises(ConfigError, match=r"post-processing inside the graph with nms_radius=3; got nms_radius=4"):
        KeypointDetector(tiny_onnx_pp, nms_radius=4)
    with pytest.raises(ConfigError, match=r"need the heatmap"):
        KeypointDetector(tiny_onnx_pp, min_distance=5.0)
    with pytest.raises(ConfigError, match=r"fixed input of 128x160; it cannot run at native aspect"):
        KeypointDetector(tiny_onnx_pp, size="native")
    with pytest.raises(ValueError, match="exceeds the K=200"):
        KeypointDetector(tiny_onnx_pp, max_keypoints=500)
    with KeypointDetector(tiny_onnx_pp, max_keypoints=50) as d:
        assert len(d.detect(np.full((64, 64), 128, np.uint8))) <= 50
