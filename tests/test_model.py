import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from kpnet.config import ModelConfig  # noqa: E402
from kpnet.errors import ModelLoadError, ModelNotFoundError  # noqa: E402
from kpnet.model import KpNet  # noqa: E402


@pytest.mark.parametrize("backbone", ["small", "large"])
@pytest.mark.parametrize("hw", [(32, 32), (64, 96), (96, 64), (128, 160)])
def test_output_shape_equals_input(backbone, hw):
    torch.manual_seed(0)
    m = KpNet(ModelConfig(backbone=backbone, fpn_width=8)).eval()
    with torch.no_grad():
        y = m(torch.rand(2, 1, *hw))
    assert y.shape == (2, 1, *hw)
    assert torch.isfinite(y).all()


def test_vga_default():
    m = KpNet().eval()
    assert m.config.input_size == (480, 640) and m.config.fpn_width == 64
    with torch.no_grad():
        assert m(torch.rand(1, 1, 480, 640)).shape == (1, 1, 480, 640)


@pytest.mark.parametrize("norm", ["image", "imagenet"])
def test_aggregation_equals_upsample_sum_then_conv(norm):
    """The head is applied per level before upsampling; by linearity this must equal the
    design's order (bilinear upsample, sum, 1x1 conv, bicubic)."""
    torch.manual_seed(1)
    m = KpNet(ModelConfig(fpn_width=16, input_norm=norm)).eval()
    x = torch.rand(1, 1, 96, 128)
    with torch.no_grad():
        got = m(x)
        z = m.normalize(x)  # the 3-channel input of the design (the model's stem takes a shortcut)
        feats = {}
        for i, layer in enumerate(m.backbone):
            z = layer(z)
            if i in m.taps:
                feats[f"p{len(feats)}"] = z
        levels = list(m.fpn(feats).values())
        agg = levels[0] + sum(
            F.interpolate(lvl, size=levels[0].shape[-2:], mode="bilinear", align_corners=False) for lvl in levels[1:]
        )
        ref = F.interpolate(m.head(agg), scale_factor=4, mode="bicubic", align_corners=False)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_downsample_pools_the_input_and_upsamples_x8():
    """The fast variant equals: average-pool 2x2, the full-resolution network's stride-4 logits,
    then bicubic x8 (``F.interpolate``) back to the input size."""
    torch.manual_seed(2)
    full = KpNet(ModelConfig(fpn_width=8, input_size=(128, 192))).eval()
    fast = KpNet(ModelConfig(fpn_width=8, input_size=(128, 192), downsample=2)).eval()
    fast.load_state_dict(full.state_dict())  # same weights: the conversion the trainer does
    x = torch.rand(2, 1, 128, 192)
    full.upsample = torch.nn.Identity()
    with torch.no_grad():
        logits = full(F.avg_pool2d(x, 2))  # [2, 1, 16, 24]: stride 4 of the pooled image
        ref = F.interpolate(logits, scale_factor=8, mode="bicubic", align_corners=False)
        got = fast(x)
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiples of 64, got 96x192"):
        fast(torch.rand(1, 1, 96, 192))


@pytest.mark.parametrize("downsample", [1, 2])
def test_cell_head_adds_per_pixel_cell_logits(downsample):
    """cell_head: zero-initialised (output = the bicubic model's), and its channels land on the
    pixels of each stride-s cell in depth-to-space order (channel ry*s + rx -> pixel (ry, rx))."""
    torch.manual_seed(3)
    size = (128, 192)
    plain = KpNet(ModelConfig(fpn_width=8, input_size=size, downsample=downsample)).eval()
    cell = KpNet(ModelConfig(fpn_width=8, input_size=size, downsample=downsample, cell_head=True)).eval()
    missing = cell.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["cell.bias", "cell.weight"]
    x = torch.rand(1, 1, *size)
    with torch.no_grad():
        base = plain(x)
        torch.testing.assert_close(cell(x), base)  # a new head starts at zero
        s = 4 * downsample
        assert cell.cell.out_channels == s * s
        ry, rx = 1, s - 1
        cell.cell.bias[ry * s + rx] = 5.0
        bump = cell(x) - base
    expected = torch.zeros_like(bump)
    expected[..., ry::s, rx::s] = 5.0
    torch.testing.assert_close(bump, expected, atol=1e-5, rtol=0)


def test_bad_input_shapes():
    m = KpNet(ModelConfig(fpn_width=8)).eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        m(torch.rand(1, 1, 100, 128))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        m(torch.rand(1, 3, 64, 64))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown backbone 'mnv4'; choose from: small, large"):
        ModelConfig(backbone="mnv4")
    with pytest.raises(ValueError, match="multiples of 32"):
        ModelConfig(input_size=(100, 640))
    with pytest.raises(ValueError, match="fpn_width"):
        ModelConfig(fpn_width=0)
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"backbone": "small", "width": 3})
    with pytest.raises(ValueError, match="unknown input_norm 'batch'; choose from: image, imagenet"):
        ModelConfig(input_norm="batch")
    with pytest.raises(ValueError, match="downsample must be one of 1, 2, got 4"):
        ModelConfig(downsample=4)
    with pytest.raises(ValueError, match="multiples of 64, got 480x640; e.g. use 512x640"):
        ModelConfig(downsample=2)
    assert ModelConfig(input_size=(448, 640), downsample=2).stride == 64
    with pytest.raises(ValueError, match="cell_head must be a bool"):
        ModelConfig(cell_head=1)


def test_legacy_config_loads_with_imagenet_normalisation():
    # Checkpoints written before input_norm existed were trained with ImageNet statistics.
    assert ModelConfig.from_dict({"backbone": "small", "fpn_width": 8}).input_norm == "imagenet"
    assert ModelConfig().input_norm == "image"
    assert ModelConfig.from_dict(ModelConfig(input_norm="image").to_dict()).input_norm == "image"
    assert ModelConfig.from_dict({"backbone": "small", "fpn_width": 8}).downsample == 1
    assert ModelConfig.from_dict({"backbone": "small", "fpn_width": 8}).cell_head is False


def test_image_normalisation_is_brightness_and_contrast_invariant():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 96)
    dimmed = 0.3 * x + 0.6  # lower contrast, brighter; still inside [0, 1]
    m = KpNet(ModelConfig(fpn_width=8, input_norm="image")).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(dimmed), m(x), atol=2e-3, rtol=1e-3)
        # the per-image statistics really are per image: batch neighbours do not interact
        torch.testing.assert_close(m(torch.cat([x[:1], dimmed[1:]]))[0], m(x[:1])[0], atol=1e-5, rtol=1e-5)
    legacy = KpNet(ModelConfig(fpn_width=8, input_norm="imagenet")).eval()
    legacy.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert (legacy(dimmed) - legacy(x)).abs().max() > 1e-2


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = KpNet(ModelConfig(backbone="small", fpn_width=8, input_size=(64, 96)))
    m.save_pretrained(tmp_path / "a.pt")
    m2 = KpNet.from_pretrained(tmp_path / "a.pt")
    assert m2.config == m.config
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), m2(x))


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="checkpoint not found"):
        KpNet.from_pretrained(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="corrupt"):
        KpNet.from_pretrained(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(ModelLoadError, match="not a kpnet checkpoint"):
        KpNet.from_pretrained(other)
    # Strict keys: drop one tensor and add a stray one.
    m = KpNet(ModelConfig(fpn_width=8))
    m.save_pretrained(tmp_path / "c.pt")
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    ck["state_dict"].pop("head.weight")
    ck["state_dict"]["stray.bias"] = torch.zeros(1)
    torch.save(ck, tmp_path / "c.pt")
    with pytest.raises(ModelLoadError, match=r"missing keys \[head.weight\]; unexpected keys \[stray.bias\]"):
        KpNet.from_pretrained(tmp_path / "c.pt")
    # Config and weights disagree (fpn width).
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    ck["config"]["fpn_width"] = 16
    torch.save(ck, tmp_path / "d.pt")
    with pytest.raises(ModelLoadError, match="shape mismatches"):
        KpNet.from_pretrained(tmp_path / "d.pt")


def test_imagenet_backbone_from_local_file(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    ref = tv.models.mobilenet_v3_small(weights=None)
    path = tmp_path / "mobilenet_v3_small-047dcff4.pth"
    torch.save(ref.state_dict(), path)
    m = KpNet(ModelConfig(fpn_width=8)).load_imagenet_backbone(path)
    torch.testing.assert_close(m.backbone[3].block[0][0].weight, ref.features[3].block[0][0].weight)


def test_imagenet_backbone_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"never downloads.*mobilenet_v3_small-047dcff4.pth"):
        KpNet(ModelConfig(fpn_width=8)).load_imagenet_backbone()
