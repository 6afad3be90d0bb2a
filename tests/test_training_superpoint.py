"""SuperPoint teacher: decoding on synthetic logits, both weight layouts, errors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from training.teachers import TeacherConfig, build_teacher  # noqa: E402
from training.teachers.superpoint import (  # noqa: E402
    SuperPointTeacher,
    convert_state_dict,
    heatmap_from_logits,
    max_pool_nms,
    sample_descriptors,
    select_keypoints,
)

# (v1 name, v6 prefix, in, out, kernel) -- written out here, independent of the module
LAYERS = [
    ("conv1a", "backbone.0.0", 1, 64, 3),
    ("conv1b", "backbone.0.1", 64, 64, 3),
    ("conv2a", "backbone.1.0", 64, 64, 3),
    ("conv2b", "backbone.1.1", 64, 64, 3),
    ("conv3a", "backbone.2.0", 64, 128, 3),
    ("conv3b", "backbone.2.1", 128, 128, 3),
    ("conv4a", "backbone.3.0", 128, 128, 3),
    ("conv4b", "backbone.3.1", 128, 128, 3),
    ("convPa", "detector.0", 128, 256, 3),
    ("convPb", "detector.1", 256, 65, 1),
    ("convDa", "descriptor.0", 128, 256, 3),
    ("convDb", "descriptor.1", 256, 256, 1),
]


def v1_state_dict(seed: int = 0) -> dict:
    """Magic Leap superpoint_v1.pth key names and shapes, random (He-scaled) values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, _, c_in, c_out, k in LAYERS:
        sd[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * math.sqrt(2.0 / (c_in * k * k))
        sd[f"{name}.bias"] = torch.randn(c_out, generator=g) * 0.01
    return sd


def v6_state_dict(v1: dict) -> dict:
    """superpoint_v6_from_tf layout carrying the same convs and identity batch norms (eps 1e-3)."""
    sd = {}
    for name, prefix, _, c_out, _ in LAYERS:
        sd[f"{prefix}.conv.weight"] = v1[f"{name}.weight"].clone()
        sd[f"{prefix}.conv.bias"] = v1[f"{name}.bias"].clone()
        sd[f"{prefix}.bn.weight"] = torch.ones(c_out)
        sd[f"{prefix}.bn.bias"] = torch.zeros(c_out)
        sd[f"{prefix}.bn.running_mean"] = torch.zeros(c_out)
        sd[f"{prefix}.bn.running_var"] = torch.full((c_out,), 1.0 - 1e-3)  # (var + eps) = 1
        sd[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return sd


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sp")
    v1 = v1_state_dict()
    torch.save(v1, d / "superpoint_v1.pth")
    torch.save(v6_state_dict(v1), d / "superpoint_v6_from_tf.pth")
    return d / "superpoint_v1.pth", d / "superpoint_v6_from_tf.pth"


def _image(h: int = 64, w: int = 64) -> "torch.Tensor":
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, h, w, generator=g)


def test_heatmap_depth_to_space_known_answer():
    logits = torch.zeros(1, 65, 2, 3)
    logits[:, 64] = 10.0  # dustbin wins everywhere ...
    logits[0, 64, 1, 2] = 0.0
    logits[0, 19, 1, 2] = 10.0  # ... except channel 19 of cell (row 1, col 2)
    heat = heatmap_from_logits(logits)
    assert heat.shape == (1, 16, 24)
    # channel 19 -> (row, col) in cell = (19 // 8, 19 % 8) = (2, 3); pixel (y, x) = (8 + 2, 16 + 3)
    expected = math.exp(10) / (math.exp(10) + 64)
    assert heat[0, 10, 19].item() == pytest.approx(expected, rel=1e-5)
    assert torch.argmax(heat[0]).item() == 10 * 24 + 19
    kpts, scores = select_keypoints(max_pool_nms(heat, 4)[0], threshold=0.005, border=4, max_keypoints=10)
    assert kpts.tolist() == [[19.0, 10.0]]
    assert scores.tolist() == pytest.approx([expected], rel=1e-5)


def test_heatmap_cells_sum_to_one_minus_dustbin():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 65, 3, 4, generator=g)
    heat = heatmap_from_logits(logits)
    cell_sums = heat.reshape(2, 3, 8, 4, 8).sum(dim=(2, 4))
    dustbin = torch.softmax(logits, dim=1)[:, 64]
    assert torch.allclose(cell_sums + dustbin, torch.ones_like(dustbin), atol=1e-5)


def test_nms_threshold_border_topk():
    s = torch.zeros(1, 32, 32)
    s[0, 10, 10] = 0.9
    s[0, 11, 12] = 0.5  # suppressed by the stronger neighbour within radius 4
    s[0, 25, 20] = 0.3
    s[0, 2, 16] = 0.8  # inside the border
    s[0, 20, 5] = 0.004  # below threshold
    kpts, scores = select_keypoints(max_pool_nms(s, 4)[0], threshold=0.005, border=4, max_keypoints=0)
    assert kpts.tolist() == [[10.0, 10.0], [20.0, 25.0]]
    assert scores.tolist() == pytest.approx([0.9, 0.3])
    kpts1, _ = select_keypoints(max_pool_nms(s, 4)[0], threshold=0.005, border=4, max_keypoints=1)
    assert kpts1.tolist() == [[10.0, 10.0]]


def test_sample_descriptors_at_cell_centre_is_that_cell():
    dense = torch.nn.functional.normalize(torch.randn(8, 2, 2), dim=0)
    # the centre of cell (row 1, col 0) is pixel (x, y) = (3.5, 11.5)
    d = sample_descriptors(torch.tensor([[3.5, 11.5]]), dense)
    assert torch.allclose(d[0], dense[:, 1, 0], atol=1e-5)
    assert d.norm(dim=1).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("which", ["v1", "v6"])
def test_superpoint_from_synthetic_weights_runs_end_to_end(weight_files, which):
    path = weight_files[0] if which == "v1" else weight_files[1]
    teacher = build_teacher(TeacherConfig(name="superpoint", weights=str(path), max_keypoints=50))
    assert isinstance(teacher, SuperPointTeacher)
    assert teacher.layout == which
    assert not any(p.requires_grad for p in teacher.net.parameters()) and not teacher.net.training
    feats = teacher.detect(_image())
    assert len(feats) == 1
    f = feats[0]
    assert 0 < len(f) <= 50
    assert f.keypoints.shape == (len(f), 2) and f.descriptors.shape == (len(f), 256)
    assert torch.allclose(f.descriptors.norm(dim=1), torch.ones(len(f)), atol=1e-4)
    assert bool((f.keypoints >= 4).all() and (f.keypoints <= 59).all())
    assert bool((f.scores[:-1] >= f.scores[1:]).all())
    dense = teacher.dense_map(_image())
    assert dense.shape == (1, 64, 64) and 0 <= dense.min() and dense.max() <= 1


def test_both_layouts_give_the_same_detections(weight_files):
    a = SuperPointTeacher(weight_files[0], max_keypoints=30).detect(_image())[0]
    b = SuperPointTeacher(weight_files[1], max_keypoints=30).detect(_image())[0]
    assert torch.equal(a.keypoints, b.keypoints)
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.allclose(a.descriptors, b.descriptors, atol=1e-4)


def test_non_multiple_of_eight_input_keeps_its_size(weight_files):
    teacher = SuperPointTeacher(weight_files[0])
    assert teacher.dense_map(_image(60, 70)).shape == (1, 60, 70)


def test_missing_weights_error_names_both_sources_and_licence():
    with pytest.raises(FileNotFoundError) as exc:
        build_teacher(TeacherConfig(name="superpoint"))
    msg = str(exc.value)
    assert "magicleap/SuperPointPretrainedNetwork" in msg
    assert "rpautrat/SuperPoint" in msg
    assert "non-commercial" in msg


def test_unknown_layout_and_wrong_shapes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unrecognised SuperPoint weights layout"):
        convert_state_dict({"foo.weight": torch.zeros(1)})
    bad = v1_state_dict()
    bad["convPb.weight"] = torch.zeros(64, 256, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit the architecture"):
        SuperPointTeacher(tmp_path / "bad.pth")
