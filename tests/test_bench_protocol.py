"""The shared benchmark protocol, the rotation/scale sweep and the stability benchmark (synthetic data)."""

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from kpnet.selection import duplicate_fraction, neighbour_pairs

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


P = _load("_protocol")


def _scene(h=240, w=320, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 60, np.uint8)
    for _ in range(30):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(
            img, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), int(rng.integers(100, 255)), -1
        )
    return img


def _duplicating_detector(gray, n):
    """A fake detector returning every corner three times (as ORB's pyramid levels or SIFT's
    orientations do): at the corner and 0.7 px and 1.5 px away, with lower scores."""
    rng = np.random.default_rng(0)
    base = np.stack(np.meshgrid(np.arange(10, 300, 12), np.arange(10, 220, 12)), -1).reshape(-1, 2).astype(np.float32)
    s = rng.uniform(0.5, 1.0, len(base)).astype(np.float32)
    xy = np.concatenate([base, base + [0.7, 0.0], base + [0.0, 1.5]])
    scores = np.concatenate([s, s * 0.9, s * 0.8])
    order = np.argsort(-scores)
    return xy[order][:n], scores[order][:n]


def test_shared_suppression_removes_a_fake_detectors_duplicates():
    img = _scene()
    n_corners = len(np.arange(10, 300, 12)) * len(np.arange(10, 220, 12))
    det = P.Detector("dups", _duplicating_detector, P.Protocol(radius=4.0, pool_factor=4), kind="classical")
    d = det.detect(img, 10_000)
    assert len(d.xy) == n_corners  # one point per corner survives
    i, _ = neighbour_pairs(d.xy, 4.0)
    assert i.size == 0
    assert d.dup == 1.0  # every raw point had another within 2 px
    # the survivor of each corner is its strongest copy: the corner itself (on the 12 px lattice)
    assert np.all((d.xy - 10) % 12 == 0)
    # raw (--raw-baselines) keeps them: its top-K is full of duplicates
    raw = P.Detector("dups [raw]", _duplicating_detector, P.Protocol(), raw=True).detect(img, 300)
    assert len(raw.xy) == 300 and duplicate_fraction(raw.xy, 2.0) > 0.5
    # grid bucketing after suppression spreads the same budget
    g = P.Detector("dups", _duplicating_detector, P.Protocol(distribution="grid", grid=(2, 2))).detect(img, 40)
    assert len(g.xy) == 40 and np.all(np.diff(g.scores) <= 0)
    assert min(((g.xy[:, 0] < 160) & (g.xy[:, 1] < 120)).sum(), ((g.xy[:, 0] >= 160) & (g.xy[:, 1] >= 120)).sum()) >= 8


def test_every_detector_kind_gets_the_same_protocol(tiny_onnx):
    img = _scene()
    proto = P.Protocol(radius=4.0)
    for name in ("orb", "sift", "gftt", str(tiny_onnx)):
        det = P.build_detector(name, proto, threads=1)
        d = det.detect(img, 100)
        assert 0 < len(d.xy) <= 100 and np.all(np.diff(d.scores) <= 0), name
        i, _ = neighbour_pairs(d.xy, 4.0)
        assert i.size == 0, name
    assert P.build_detector("orb", P.Protocol(raw_baselines=True)).label == "orb [raw]"
    with pytest.raises(FileNotFoundError, match="model not found"):
        P.build_detector("nope.onnx", proto)


def test_size_and_grid_options():
    assert P.parse_hw("480x640") == (480, 640)
    for bad in ("640", "axb", "480x0"):
        with pytest.raises(ValueError, match="size"):
            P.parse_hw(bad)
    assert P.parse_grid("12x16") == (12, 16)
    with pytest.raises(ValueError, match="ROWSxCOLS"):
        P.parse_grid("12")
    with pytest.raises(ValueError, match="unknown distribution 'anms'"):
        P.Protocol(distribution="anms")


def test_holdout_hash_is_the_training_split_hash():
    pytest.importorskip("torch")
    from training.data import split_indices

    paths = [f"bsds500/{i}.jpg" for i in range(400)]
    _, val = split_indices(paths, 0.05)
    assert {paths[i] for i in val} == {p for p in paths if P.holdout_hash(p) < 0.05}


# --------------------------------------------------------------------------- invariance
INV = _load("invariance")


def _dots(size=129, n=60, seed=0):
    """Isolated bright pixels of distinct values on black, away from the border."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    cells = rng.choice((size - 20) ** 2, n, replace=False)
    vals = rng.choice(np.arange(40, 256), n, replace=False)
    img[10 + cells // (size - 20), 10 + cells % (size - 20)] = vals
    return img


def _dot_detector(gray, n):
    ys, xs = np.nonzero(gray)
    s = gray[ys, xs].astype(np.float32)
    o = np.argsort(-s)[:n]
    return np.stack([xs, ys], 1)[o].astype(np.float32), s[o]


def test_centre_transform_is_exact():
    img = _scene(128, 128)
    H = INV.centre_transform((128, 128), 90.0)
    np.testing.assert_array_equal(cv2.warpAffine(img, H[:2], (128, 128)), np.rot90(img))  # counter-clockwise
    H = INV.centre_transform((320, 240), 33.0, 1.7)
    c = np.array([[159.5, 119.5, 1.0]])
    np.testing.assert_allclose((H @ c.T).ravel(), c.ravel(), atol=1e-9)  # the centre stays put
    assert np.isclose(np.linalg.det(H[:2, :2]), 1.7**2)


def test_rotation_equivariant_detector_scores_one_at_90_and_180():
    det = P.Detector("dots", _dot_detector, P.Protocol(radius=4.0))
    res = INV.evaluate(det, [_dots(), _dots(seed=1)], INV.cases([90.0, 180.0], []), 50, margin=8.0)
    for case in ("rot 90", "rot 180"):
        r = res["cases"][case]
        assert r["rep@3"] == 1.0 and r["rep@1"] == 1.0 and r["loc_err"] < 1e-6 and r["n"] == 50
    # the sweep itself is not trivial: at 45 degrees isolated pixels do not survive interpolation
    res45 = INV.evaluate(det, [_dots()], INV.cases([45.0], []), 50, margin=8.0)
    assert res45["cases"]["rot 45"]["rep@1"] < 1.0


def test_fill_margin_and_shared_area():
    img = np.full((100, 160), 128, np.uint8)
    H = INV.centre_transform((160, 100), 45.0)
    img2, v1, v2 = INV.warp_case(img, H, margin=8.0)
    assert img2[0, 0] == 0 and v2[0, 0] == 0 and v2[50, 80] and v1[50, 80]
    # every valid pixel of image 2 is >= 8 px from the black fill
    fill = (cv2.warpAffine(np.full_like(img, 255), H[:2], (160, 100), flags=cv2.INTER_NEAREST) == 0).astype(np.uint8)
    dist = cv2.distanceTransform(1 - fill, cv2.DIST_L2, 5)
    assert dist[v2 > 0].min() >= 8.0


def test_invariance_cli(tmp_path, tiny_onnx):
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(photos / f"{i}.png"), _scene(120, 160, seed=i))
    out = tmp_path / "out"
    args = [
        str(tmp_path / "photos"),
        "--model",
        str(tiny_onnx),
        "--baselines",
        "gftt,orb",
        "-k",
        "50",
        "--angles",
        "15,90",
        "--scales",
        "0.5,2",
        "--holdout",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert INV.main(args) == 0
    res = json.loads((out / "invariance.json").read_text())
    assert set(res["detectors"]) == {"tiny.onnx", "gftt", "orb"} and res["settings"]["photos"] == 2
    assert set(res["detectors"]["gftt"]["cases"]) == {"rot 15", "rot 90", "scale 0.5", "scale 2"}
    assert 0 <= res["detectors"]["gftt"]["cases"]["rot 90"]["rep@3"] <= 1
    md = (out / "invariance.md").read_text()
    assert "| gftt |" in md and "repeatability @1 px" in md
    assert (out / "invariance.png").is_file()
    assert (
        INV.main(
            [
                str(tmp_path / "photos"),
                "--every",
                "2",
                "--limit",
                "1",
                "--baselines",
                "fast",
                "--angles",
                "30",
                "--scales",
                "",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads((out / "invariance.json").read_text())["settings"]["files"] == ["sub/0.png"]
    with pytest.raises(SystemExit):
        INV.main([str(tmp_path / "photos"), "--size", "160"])
    assert INV.main([str(tmp_path / "missing")]) == 2


# --------------------------------------------------------------------------- accuracy and stability
def _hpatches(root):
    seq = root / "v_synth"
    seq.mkdir(parents=True)
    img = _scene()
    H = np.array([[1.0, 0.02, 12.0], [-0.01, 1.0, 7.0], [0, 0, 1]])
    cv2.imwrite(str(seq / "1.png"), img)
    cv2.imwrite(str(seq / "2.png"), cv2.warpPerspective(img, H, (320, 240)))
    np.savetxt(seq / "H_1_2", H)


def test_accuracy_protocol_options(tmp_path):
    acc = _load("accuracy")
    _hpatches(tmp_path / "data")
    out = tmp_path / "out"
    assert (
        acc.main(
            [
                str(tmp_path / "data"),
                "--baselines",
                "orb,sift,gftt",
                "--k",
                "100",
                "--size",
                "240x320",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "accuracy.json").read_text())
    assert res["settings"]["protocol"]["suppression_radius"] == 4.0 and res["settings"]["size"] == "240x320"
    assert "fast" in res["settings"]["protocol"]["classical_settings"]
    orb = res["detectors"]["orb"]["100"]["mean"]
    assert 0 <= orb["dup2"] <= 1
    assert "| dup@2 |" in (out / "accuracy.md").read_text()
    assert (
        acc.main(
            [
                str(tmp_path / "data"),
                "--baselines",
                "orb",
                "--k",
                "100",
                "--size",
                "240x320",
                "--raw-baselines",
                "--distribution",
                "grid",
                "--grid",
                "4x4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "accuracy.json").read_text())
    assert list(res["detectors"]) == ["orb [raw]"] and res["settings"]["protocol"]["distribution"] == "grid"
    with pytest.raises(SystemExit):
        acc.main([str(tmp_path / "data"), "--size", "320"])
    with pytest.raises(SystemExit):
        acc.main([str(tmp_path / "data"), "--baselines", "surf"])


def test_stability_cli(tmp_path, tiny_onnx):
    st = _load("stability")
    frames = tmp_path / "frames"
    frames.mkdir()
    img = _scene()
    for i in range(4):
        M = np.float32([[1, 0, 2 * i], [0, 1, i]])
        cv2.imwrite(str(frames / f"{i:03d}.png"), cv2.warpAffine(img, M, (320, 240)))
    out = tmp_path / "out"
    assert (
        st.main(
            [
                str(frames),
                "--model",
                str(tiny_onnx),
                "--baselines",
                "orb,gftt",
                "-k",
                "100",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "stability.json").read_text())
    assert set(res["results"]) == {"tiny.onnx", "orb", "gftt"}
    assert res["results"]["gftt"]["redetection_rate"] > 0.5  # a pure translation of sharp rectangles
    assert res["settings"]["protocol"]["distribution"] == "topk"
    assert "| dup@2 |" in (out / "stability.md").read_text()
    assert st.main([str(frames), "--baselines", "orb", "--distribution", "grid", "--out", str(out)]) == 0
    assert st.main([str(tmp_path / "missing")]) == 2
