"""FID: the Frechet distance against closed forms, the image pipeline with a small injected
network, and our FID Inception against the published architecture (keys, shapes, counts).

The real weights file is not needed: its layout is checked through an independent table of the
published layers, and loading is checked with files saved from our random-init network.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from factordiff.errors import FactordiffError
from factordiff.metrics.fid import (
    WEIGHTS_ENV,
    FIDWeightsError,
    activation_statistics,
    fid,
    frechet_distance,
    load_inception,
    resolve_weights,
)
from factordiff.metrics.inception import (
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    TORCH_FIDELITY_WEIGHTS_FILE,
    FIDInceptionV3,
)
from factordiff.metrics.utils import MetricInputError

# --- Frechet distance ---------------------------------------------------------------------------


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _frechet_independent(mu1, s1, mu2, s2) -> float:
    """tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD root (no sqrtm)."""
    r = _psd_sqrt(s1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * _psd_sqrt(r @ s2 @ r)))


def test_identical_gaussians_have_zero_distance() -> None:
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=6), _spd(rng, 6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_covariances_closed_form() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-10)


def test_rotated_commuting_covariances_closed_form() -> None:
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a, b = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    mu1, mu2 = np.zeros(4), np.ones(4)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(4 + np.sum(a + b - 2 * np.sqrt(a * b)), rel=1e-9)


def test_full_covariances_match_independent_computation_and_are_symmetric() -> None:
    rng = np.random.default_rng(3)
    mu1, mu2, s1, s2 = rng.normal(size=7), rng.normal(size=7), _spd(rng, 7), _spd(rng, 7)
    d12 = frechet_distance(mu1, s1, mu2, s2)
    assert d12 == pytest.approx(_frechet_independent(mu1, s1, mu2, s2), rel=1e-8)
    assert d12 == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)
    assert d12 > 0


def test_singular_covariances_give_a_finite_value() -> None:
    # fewer points than dimensions: rank-deficient sample covariances, as with small FID samples
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 20)), rng.normal(size=(5, 20)) + 1
    mx, sx = x.mean(0), np.cov(x, rowvar=False)
    my, sy = y.mean(0), np.cov(y, rowvar=False)
    assert np.isfinite(frechet_distance(mx, sx, my, sy))
    assert frechet_distance(mx, sx, mx, sx) == pytest.approx(0.0, abs=1e-6)


def test_bad_statistics_raise() -> None:
    with pytest.raises(MetricInputError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(MetricInputError, match="one length"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(MetricInputError, match="covariances"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# --- the image pipeline with an injected network -----------------------------------------------


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def _images(seed: int, n: int = 96, lo: int = 0, hi: int = 256, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (n, size, size, 3), dtype=np.uint8)


def test_same_set_is_zero_and_shifted_set_is_farther() -> None:
    net = _tiny_net()
    real = _images(0, lo=0, hi=160)
    same_dist = _images(1, lo=0, hi=160)
    shifted = _images(2, lo=96, hi=256)
    assert fid(real, real, feature_extractor=net) == pytest.approx(0.0, abs=1e-8)
    near = fid(real, same_dist, feature_extractor=net)
    far = fid(real, shifted, feature_extractor=net)
    assert 0 < near < far
    assert far > 10 * near


def test_pipeline_matches_a_direct_computation() -> None:
    """uint8 / 255 -> features -> mean, np.cov (float64) -> Frechet distance."""
    net = _tiny_net()
    real, fake = _images(3), _images(4, lo=50)

    def feats(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
            return net(t).double().numpy()

    fr, ff = feats(real), feats(fake)
    expected = _frechet_independent(
        fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False)
    )
    assert fid(real, fake, feature_extractor=net, batch_size=7) == pytest.approx(expected, rel=1e-6)
    mu, sigma = activation_statistics(real, net, batch_size=50)
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (6, 6)
    np.testing.assert_allclose(mu, fr.mean(0), rtol=1e-6)


def test_batches_iterables_floats_and_grayscale_agree() -> None:
    net = _tiny_net()
    real, fake = _images(5), _images(6, lo=40)
    ref = fid(real, fake, feature_extractor=net)
    chunks = (fake[i : i + 10] for i in range(0, len(fake), 10))  # a generator, read once
    assert fid(real, chunks, feature_extractor=net) == pytest.approx(ref, rel=1e-6)
    as_float = torch.from_numpy(fake).float() / 255
    assert fid(real, as_float, feature_extractor=net) == pytest.approx(ref, rel=1e-6)
    assert fid(real, fake, feature_extractor=net, batch_size=1) == pytest.approx(ref, rel=1e-6)

    gray = real[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    g_ref = fid(rgb, fake, feature_extractor=net)
    assert fid(gray, fake, feature_extractor=net) == pytest.approx(g_ref, rel=1e-6)
    assert fid(gray[..., None], fake, feature_extractor=net) == pytest.approx(g_ref, rel=1e-6)


def test_spatial_features_are_averaged_and_train_mode_is_restored() -> None:
    net = _tiny_net()
    spatial = net[:2]  # (B, 6, h, w)
    spatial.train()
    real, fake = _images(7), _images(8, lo=60)
    assert fid(real, fake, feature_extractor=spatial) == pytest.approx(
        fid(real, fake, feature_extractor=net), rel=1e-5
    )
    assert spatial.training


@pytest.mark.parametrize(
    ("real", "match"),
    [
        (_images(0, n=1), "at least 2"),
        (np.zeros((4, 8, 8, 4), np.uint8), r"\(N, H, W, C\)"),
        (np.zeros((4, 3, 8, 8), np.uint8), "channel-first"),
        (np.zeros((8, 8, 3), np.uint8), "single image"),
        (np.full((4, 8, 8, 3), -0.5, np.float32), r"\[0, 1\]"),
        (np.zeros((4, 8, 8, 3), np.int64), "uint8"),
        ("images/", "iterable"),
    ],
)
def test_invalid_images_raise(real: object, match: str) -> None:
    with pytest.raises(MetricInputError, match=match):
        fid(real, _images(1, n=4), feature_extractor=_tiny_net())


def test_weights_and_extractor_are_exclusive() -> None:
    with pytest.raises(MetricInputError, match="not both"):
        fid(_images(0), _images(1), weights="x.pth", feature_extractor=_tiny_net())


# --- the FID Inception network ---------------------------------------------------------------


def _conv(name: str, c_in: int, c_out: int, kh: int, kw: int | None = None) -> tuple:
    return (name, c_in, c_out, kh, kh if kw is None else kw)


def _published_convs() -> list[tuple]:
    """Every BasicConv2d of the FID Inception (torchvision Inception3 names, TF FID channels)."""
    convs = [
        _conv("Conv2d_1a_3x3", 3, 32, 3),
        _conv("Conv2d_2a_3x3", 32, 32, 3),
        _conv("Conv2d_2b_3x3", 32, 64, 3),
        _conv("Conv2d_3b_1x1", 64, 80, 1),
        _conv("Conv2d_4a_3x3", 80, 192, 3),
    ]
    for block, c, pool in (("5b", 192, 32), ("5c", 256, 64), ("5d", 288, 64)):
        p = f"Mixed_{block}."
        convs += [
            _conv(p + "branch1x1", c, 64, 1),
            _conv(p + "branch5x5_1", c, 48, 1),
            _conv(p + "branch5x5_2", 48, 64, 5),
            _conv(p + "branch3x3dbl_1", c, 64, 1),
            _conv(p + "branch3x3dbl_2", 64, 96, 3),
            _conv(p + "branch3x3dbl_3", 96, 96, 3),
            _conv(p + "branch_pool", c, pool, 1),
        ]
    convs += [
        _conv("Mixed_6a.branch3x3", 288, 384, 3),
        _conv("Mixed_6a.branch3x3dbl_1", 288, 64, 1),
        _conv("Mixed_6a.branch3x3dbl_2", 64, 96, 3),
        _conv("Mixed_6a.branch3x3dbl_3", 96, 96, 3),
    ]
    for block, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
        p = f"Mixed_{block}."
        convs += [
            _conv(p + "branch1x1", 768, 192, 1),
            _conv(p + "branch7x7_1", 768, c7, 1),
            _conv(p + "branch7x7_2", c7, c7, 1, 7),
            _conv(p + "branch7x7_3", c7, 192, 7, 1),
            _conv(p + "branch7x7dbl_1", 768, c7, 1),
            _conv(p + "branch7x7dbl_2", c7, c7, 7, 1),
            _conv(p + "branch7x7dbl_3", c7, c7, 1, 7),
            _conv(p + "branch7x7dbl_4", c7, c7, 7, 1),
            _conv(p + "branch7x7dbl_5", c7, 192, 1, 7),
            _conv(p + "branch_pool", 768, 192, 1),
        ]
    convs += [
        _conv("Mixed_7a.branch3x3_1", 768, 192, 1),
        _conv("Mixed_7a.branch3x3_2", 192, 320, 3),
        _conv("Mixed_7a.branch7x7x3_1", 768, 192, 1),
        _conv("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
        _conv("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1),
        _conv("Mixed_7a.branch7x7x3_4", 192, 192, 3),
    ]
    for block, c in (("7b", 1280), ("7c", 2048)):
        p = f"Mixed_{block}."
        convs += [
            _conv(p + "branch1x1", c, 320, 1),
            _conv(p + "branch3x3_1", c, 384, 1),
            _conv(p + "branch3x3_2a", 384, 384, 1, 3),
            _conv(p + "branch3x3_2b", 384, 384, 3, 1),
            _conv(p + "branch3x3dbl_1", c, 448, 1),
            _conv(p + "branch3x3dbl_2", 448, 384, 3),
            _conv(p + "branch3x3dbl_3a", 384, 384, 1, 3),
            _conv(p + "branch3x3dbl_3b", 384, 384, 3, 1),
            _conv(p + "branch_pool", c, 192, 1),
        ]
    return convs


def _published_state_dict_shapes() -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for name, c_in, c_out, kh, kw in _published_convs():
        shapes[f"{name}.conv.weight"] = (c_out, c_in, kh, kw)
        for b in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.bn.{b}"] = (c_out,)
        shapes[f"{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_state_dict_matches_the_published_layout(inception: FIDInceptionV3) -> None:
    sd = inception.state_dict()
    expected = _published_state_dict_shapes()
    assert len(_published_convs()) == 94 and len(expected) == 566
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert tuple(sd["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    assert tuple(sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape) == (192, 192, 1, 7)
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in sd
    assert not any(k.startswith("AuxLogits") for k in sd)
    # torchvision documents 27,161,264 parameters for Inception3 (1000 classes, aux head):
    # minus the aux head (3,326,696), plus 8 more classes in fc (16,392).
    n_params = sum(p.numel() for p in inception.parameters())
    assert n_params == 27_161_264 - 3_326_696 + 16_392 == 23_850_960
    # parameters + BatchNorm running statistics (the tensors of a file without step counters)
    n_stats = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert n_stats == 23_885_392


@pytest.fixture(scope="module")
def pool3(inception: FIDInceptionV3) -> tuple[np.ndarray, torch.Tensor]:
    """Two 64x64 uint8 images and the reference network's features of them (a costly forward)."""
    images = _images(0, n=2, size=64)
    with torch.no_grad():
        out = inception(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    return images, out


def test_inception_gives_pool3_features(inception: FIDInceptionV3, pool3) -> None:
    _, out = pool3
    assert out.shape == (2, 2048) and torch.isfinite(out).all() and (out >= 0).all()
    x = torch.rand(2, 3, 64, 64)
    ref = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.equal(inception.preprocess(x), ref)
    y = torch.rand(1, 3, 299, 299)
    assert torch.equal(inception.preprocess(y), 2 * y - 1)


def test_pool_branches_follow_the_tf_graph(inception: FIDInceptionV3) -> None:
    """Average pools exclude padding (a constant input stays constant at the borders);
    Mixed_7c pools with max, Mixed_7b with the padding-excluding average."""
    with torch.no_grad():
        out = inception.Mixed_5b(torch.ones(1, 192, 9, 9))[:, -32:]  # pool branch: 32 channels
        assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))
        out = inception.Mixed_6b(torch.ones(1, 768, 7, 7))[:, -192:]
        assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))

        x = torch.rand(1, 2048, 5, 5)
        m = inception.Mixed_7c
        expected = m.branch_pool(F.max_pool2d(x, 3, stride=1, padding=1))
        assert torch.allclose(m(x)[:, -192:], expected)
        x = torch.rand(1, 1280, 5, 5)
        m = inception.Mixed_7b
        pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        assert torch.allclose(m(x)[:, -192:], m.branch_pool(pooled))
        assert m(x).shape[1] == 2048 and inception.Mixed_7a(torch.rand(1, 768, 17, 17)).shape[
            1:
        ] == (1280, 8, 8)


# --- weights files -------------------------------------------------------------------------


def test_missing_weights_say_where_to_get_them(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(FIDWeightsError) as info:
        fid(_images(0), _images(1))
    msg = str(info.value)
    assert FID_WEIGHTS_FILE in msg and FID_WEIGHTS_URL in msg
    assert "weights=" in msg and WEIGHTS_ENV in msg
    assert isinstance(info.value, FactordiffError)
    with pytest.raises(FIDWeightsError, match="does not exist"):
        load_inception(tmp_path / "nope.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(FIDWeightsError, match="folder without"):
        load_inception()


@pytest.fixture(scope="module")
def old_style_weights(tmp_path_factory, inception: FIDInceptionV3):
    """Our random-init weights saved as a file without BatchNorm step counters (older torch)."""
    sd = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("weights") / FID_WEIGHTS_FILE
    torch.save(sd, path)
    return path, sd


def test_env_var_weights_load_strictly(monkeypatch, old_style_weights, pool3) -> None:
    path, sd = old_style_weights
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    model = load_inception(device="cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    assert len(loaded) == 566 and all(v.device.type == "cpu" for v in loaded.values())
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())

    # the loaded network through fid's pipeline gives the reference network's features
    images, ref = pool3
    mu, sigma = activation_statistics(images, model, batch_size=1)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    np.testing.assert_allclose(mu, ref.double().mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_weights_folder_and_torch_fidelity_name(monkeypatch, tmp_path, old_style_weights) -> None:
    path, _ = old_style_weights
    (tmp_path / TORCH_FIDELITY_WEIGHTS_FILE).symlink_to(path)
    assert resolve_weights(tmp_path) == tmp_path / TORCH_FIDELITY_WEIGHTS_FILE
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert resolve_weights() == tmp_path / TORCH_FIDELITY_WEIGHTS_FILE
    assert resolve_weights(path) == path  # the argument wins over the variable


def test_wrong_weights_files_are_rejected(tmp_path, old_style_weights) -> None:
    _, sd = old_style_weights
    torch.save({"AuxLogits.fc.weight": torch.zeros(1000, 768)}, tmp_path / "tv.pth")
    with pytest.raises(FIDWeightsError, match="torchvision"):
        load_inception(tmp_path / "tv.pth", device="cpu")
    torch.save(dict(sd, **{"fc.weight": torch.zeros(1000, 2048)}), tmp_path / "fc.pth")
    with pytest.raises(FIDWeightsError, match="wrong shape"):
        load_inception(tmp_path / "fc.pth", device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FIDWeightsError, match="could not read"):
        load_inception(tmp_path / "junk.pth", device="cpu")
