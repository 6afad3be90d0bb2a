import threading

import numpy as np
import pytest

from kpnet import KeypointDetector, Keypoints
from kpnet.backends.base import BackendInfo, BackendOutput, BaseBackend
from kpnet.preprocess import Resize


class ImageAsHeatmap(BaseBackend):
    """A fake backend whose logits are the (resized) image itself: bright pixels become keypoints.
    It makes coordinate mapping testable with exact, known answers."""

    def __init__(self, size=(96, 128)):
        super().__init__()
        self.info = BackendInfo(
            name="fake", model_path="fake", input_shape=(None, 1, *size), input_size=size, device="cpu"
        )

    def _run_impl(self, batch):
        return BackendOutput(heatmap=(batch * 20.0 - 10.0).astype(np.float32))


def test_resize_mapping_formula():
    rs = Resize(orig_size=(1280, 960), model_size=(640, 480))
    np.testing.assert_allclose(rs.to_original(np.array([[0.0, 0.0], [10.0, 20.0]])), [[0.5, 0.5], [20.5, 40.5]])


@pytest.mark.parametrize("orig_hw", [(96, 128), (192, 256), (300, 200), (77, 53)])
def test_keypoints_map_back_to_original_pixels(orig_hw):
    h, w = orig_hw
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0.2, 0.8, 3) * w, rng.uniform(0.2, 0.8, 3) * h], axis=1)
    yy, xx = np.mgrid[0:h, 0:w]
    sigma = max(h, w) / 40
    img = np.zeros((h, w), np.float32)
    for x, y in pts:
        img = np.maximum(img, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)))
    det = KeypointDetector.from_backend(ImageAsHeatmap(), max_keypoints=3, nms_radius=2, border=0, subpixel=True)
    kps = det.detect(img)
    assert kps.image_size == (w, h)
    got = kps.xy[np.lexsort((kps.xy[:, 1], kps.xy[:, 0]))]
    want = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    # Error budget: half a model pixel, in original pixels.
    tol = 0.6 * max(w / 128, h / 96, 1.0)
    np.testing.assert_allclose(got, want, atol=tol)


def test_upscaled_image_gives_scaled_keypoints(tiny_onnx, sample_bgr):
    import cv2

    det = KeypointDetector(tiny_onnx, max_keypoints=100)
    small = cv2.resize(sample_bgr, (160, 128), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (320, 256), interpolation=cv2.INTER_LINEAR)
    # nms_radius is in image pixels: twice the pixels, twice the radius for the same model-pixel NMS
    k1, k2 = det.detect(small), det.detect(big, nms_radius=8, border=8)
    expected = (k1.xy + 0.5) * 2 - 0.5
    d = np.linalg.norm(expected[:, None] - k2.xy[None], axis=-1).min(axis=1)
    assert (d <= 2.0).mean() > 0.7  # a wrong scale mapping gives ~0


def test_result_type_and_sorting(tiny_onnx, sample_bgr):
    kps = KeypointDetector(tiny_onnx, max_keypoints=64).detect(sample_bgr)
    assert isinstance(kps, Keypoints)
    assert kps.xy.dtype == np.float32 and kps.scores.dtype == np.float32
    assert kps.xy.shape == (64, 2) and kps.scores.shape == (64,)
    assert (np.diff(kps.scores) <= 0).all()
    assert kps.image_size == (512, 512)
    assert (kps.xy >= 0).all() and (kps.xy <= 511).all()


def test_accepted_image_forms_agree(tiny_onnx, sample_bgr):
    import cv2

    det = KeypointDetector(tiny_onnx, max_keypoints=50)
    gray = cv2.cvtColor(sample_bgr, cv2.COLOR_BGR2GRAY)
    ref = det.detect(gray)
    for img in (sample_bgr, gray[:, :, None], cv2.cvtColor(sample_bgr, cv2.COLOR_BGR2BGRA)):
        np.testing.assert_allclose(det.detect(img).xy, ref.xy, atol=1e-3)
    kf = det.detect(gray.astype(np.float32) / 255.0)
    d = np.linalg.norm(kf.xy[:, None] - ref.xy[None], axis=-1).min(axis=1)
    assert (d < 1e-3).mean() > 0.9


@pytest.mark.parametrize(
    "image, message",
    [
        ([[1, 2], [3, 4]], "got list"),
        (np.zeros((0, 10), np.uint8), "image is empty"),
        (np.zeros((10, 10, 2), np.uint8), "image has 2 channels"),
        (np.zeros((2, 10, 10, 3), np.uint8), "image has 4 dimensions"),
        (np.full((10, 10), np.nan, np.float32), "NaN or infinite"),
        (np.full((10, 10), 200.0, np.float32), r"float image values must lie in \[0, 1\]"),
        (np.zeros((10, 10), np.uint16), "dtype uint16 is not supported"),
        (np.zeros((10, 10), bool), "dtype bool is not supported"),
    ],
)
def test_bad_images_raise_clear_errors(tiny_onnx, image, message):
    det = KeypointDetector(tiny_onnx)
    with pytest.raises(ValueError, match=message):
        det.detect(image)


def test_bad_detector_settings_fail_before_loading(tmp_path):
    with pytest.raises(ValueError, match="max_keypoints must be >= 1"):
        KeypointDetector(tmp_path / "does-not-matter.onnx", max_keypoints=0)


def test_batch_equals_single(tiny_onnx, sample_bgr):
    det = KeypointDetector(tiny_onnx, max_keypoints=80)
    imgs = [sample_bgr, np.ascontiguousarray(sample_bgr[::-1]), sample_bgr[:300, :400]]
    batch = det.detect_batch(imgs)
    for img, kb in zip(imgs, batch):
        ks = det.detect(img)
        np.testing.assert_allclose(kb.xy, ks.xy, atol=1e-3)
        assert kb.image_size == ks.image_size
    with pytest.raises(ValueError, match="non-empty list"):
        det.detect_batch([])


def test_heatmap_shape(tiny_onnx, sample_bgr):
    det = KeypointDetector(tiny_onnx)
    hm = det.heatmap(sample_bgr)
    assert hm.shape == det.working_size(sample_bgr.shape[:2]) == (128, 128) and hm.dtype == np.float32
    assert 0.0 <= hm.min() and hm.max() <= 1.0


def test_concurrent_detect_is_thread_safe(tiny_onnx, sample_bgr):
    det = KeypointDetector(tiny_onnx, max_keypoints=100)
    imgs = [sample_bgr, np.ascontiguousarray(sample_bgr[:, ::-1]), sample_bgr[100:400, 50:450]]
    expected = [det.detect(im) for im in imgs]
    results, errors = {}, []

    def work(i):
        try:
            for r in range(5):
                results[(i, r)] = det.detect(imgs[i % 3])
        except Exception as e:  # collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (i, _), k in results.items():
        np.testing.assert_array_equal(k.xy, expected[i % 3].xy)
