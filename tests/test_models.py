"""The networks: shapes at every preset, the published layer contracts, skip dropout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from factordiff.config import ConfigError, load_config, preset_names
from factordiff.models.autoencoder import FirstStage
from factordiff.models.encoder import PerUnitMLP, UnitEncoder, fsq
from factordiff.models.unet import SkipDropout, UNet
from factordiff.pipeline import FactorDiffusion

PUBLISHED_LATENT = {  # image side -> (first-stage latent) for the VQ f4 presets
    64: (3, 16, 16),
}


DIFFUSION_PRESETS = [p for p in preset_names() if load_config(p).model.family == "diffusion"]


@pytest.mark.parametrize("preset", DIFFUSION_PRESETS)
def test_every_preset_builds_with_the_right_shapes(preset: str) -> None:
    cfg = load_config(preset)
    torch.manual_seed(0)
    model = FactorDiffusion(cfg).eval()
    n, d = cfg.model.encoder.n_units, cfg.model.encoder.unit_dim
    x = torch.rand(2, 3, model.image_size, model.image_size) * 2 - 1
    with torch.no_grad():
        scalars, tokens = model.encoder(x)
        z = model.first_stage.encode(x)
        eps = model.unet(z, torch.tensor([0, 999]), tokens)
    assert scalars.shape == (2, n) and tokens.shape == (2, n, d)
    assert z.shape == (2, *model.latent_shape) == eps.shape
    if cfg.model.first_stage.kind == "vq":
        assert model.latent_shape == PUBLISHED_LATENT[model.image_size]


def test_published_unet_size_and_layout() -> None:
    """EncDiff's U-Net (64 ch x (1,2,4,4), 2 res blocks, attention at 16/8/4 and the middle)."""
    unet = UNet(in_channels=3, context_dim=16)
    n_params = sum(p.numel() for p in unet.parameters())
    assert 30e6 < n_params < 40e6
    n_attn = sum(1 for m in unet.modules() if m.__class__.__name__ == "Transformer2DModel")
    assert n_attn == 3 * 2 + 1 + 3 * 3  # down levels 0-2, middle, up levels 2-0
    assert unet.skip_factors == [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8]


def test_per_unit_mlp_equals_separate_mlps() -> None:
    torch.manual_seed(0)
    mlp = PerUnitMLP(3, [1, 4, 5, 2], act="elu")
    scalars = torch.randn(7, 3)
    out = mlp(scalars)
    for u in range(3):
        h = scalars[:, u : u + 1]
        for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
            h = h @ w[u] + b[u]
            if i < 2:
                h = nn.functional.elu(h)
        torch.testing.assert_close(out[:, u], h)


def test_units_depend_only_on_their_own_scalar() -> None:
    enc = UnitEncoder(kind="encdiff", image_size=32, n_units=4, unit_dim=8, channels=16)
    scalars = torch.randn(5, 4)
    changed = scalars.clone()
    changed[:, 2] += 1.0
    a, b = enc.to_tokens(scalars), enc.to_tokens(changed)
    diff = (a - b).abs().amax(dim=(0, 2))
    assert diff[2] > 0 and torch.all(diff[[0, 1, 3]] == 0)


def test_dyga_encoder_ends_with_relu_and_vector_units() -> None:
    enc = UnitEncoder(kind="dyga", image_size=64, n_units=20, unit_dim=32, channels=16,
                      mlp_hidden=[256, 512], fc_hidden=[64, 32]).eval()  # fmt: skip
    _, tokens = enc(torch.rand(2, 3, 64, 64))
    assert tokens.shape == (2, 20, 32) and tokens.min() >= 0


@pytest.mark.parametrize("levels", [2, 5, 8])
def test_fsq_gives_exactly_levels_symmetric_values_and_passes_gradients(levels: int) -> None:
    z = torch.linspace(-6, 6, 2001, requires_grad=True)
    q = fsq(z, levels)
    values = torch.unique(q.detach())
    assert len(values) == levels
    assert torch.allclose(values, -values.flip(0)) and values.abs().max() <= 1.0
    assert torch.all(q[1:] >= q[:-1])  # monotone
    q.sum().backward()
    assert torch.all(z.grad > 0)  # straight-through: tanh's gradient, never zero


def test_fsq_encoder_feeds_quantised_scalars_to_the_units() -> None:
    enc = UnitEncoder(
        kind="encdiff", image_size=32, n_units=4, unit_dim=8, channels=16, fsq_levels=5
    )
    scalars, tokens = enc.eval()(torch.rand(6, 3, 32, 32))
    assert torch.allclose(scalars * 2, torch.round(scalars * 2))  # 5 levels: -1, -.5, .., 1
    assert torch.allclose(tokens, enc.to_tokens(scalars))


def test_fsq_levels_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="model.encoder.fsq_levels must be 0"):
        load_config("quickstart", ["model.encoder.fsq_levels=1"])


def test_encoder_rejects_sizes_it_cannot_downsample() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        UnitEncoder(image_size=40)


def test_skip_dropout_drops_whole_channels_and_keeps_the_mean() -> None:
    drop = SkipDropout(0.25).train()
    torch.manual_seed(0)
    x = torch.ones(512, 64, 4, 4)
    y = drop(x)
    per_channel = y[:, :, 0, 0]
    assert torch.all(y == per_channel[:, :, None, None])  # a channel is all kept or all 0
    values = per_channel.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)
    assert abs((per_channel == 0).float().mean().item() - 0.25) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.equal(drop.eval()(x), x)


def test_skip_dropout_only_at_chosen_resolutions() -> None:
    unet = UNet(context_dim=4, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
                attention_resolutions=[2], num_heads=2, skip_dropout=0.5,
                skip_dropout_resolutions=[2]).train()  # fmt: skip
    seen = []
    unet.skip_drop.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
    unet(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.randn(2, 3, 4))
    assert unet.skip_factors == [1, 1, 2, 2]
    assert seen == [4, 4]  # only the two skips at downsampling factor 2 (4x4) were dropped


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_first_stage_scale_makes_unit_std(kind: str) -> None:
    torch.manual_seed(0)
    fs = FirstStage(kind=kind, channels=8, channel_mult=[1, 2], num_res_blocks=1, n_embed=16)
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    fs.calibrate_scale(x)
    assert fs.encode(x).std().item() == pytest.approx(1.0, rel=1e-4)
    first = float(fs.scale)
    fs.calibrate_scale(x * 3)  # calibrated once: later calls keep the scale
    assert float(fs.scale) == first
    assert fs.decode(fs.encode(x)).shape == x.shape
    loss, parts = fs.reconstruction_loss(x)
    assert loss.requires_grad and parts["rec_l1"] > 0


def test_unshuffle_first_stage_is_lossless() -> None:
    fs = FirstStage(kind="unshuffle", patch_size=4)
    x = torch.rand(2, 3, 32, 32)
    z = fs.encode(x)
    assert z.shape == (2, 48, 8, 8)
    assert torch.equal(fs.decode(z), x)
    with pytest.raises(ValueError, match="nothing to train"):
        fs.reconstruction_loss(x)


def _random_unet() -> UNet:
    torch.manual_seed(0)
    unet = UNet(in_channels=3, context_dim=16, model_channels=32, channel_mult=(1, 2),
                num_res_blocks=1, attention_resolutions=(1, 2), num_heads=4)  # fmt: skip
    nn.init.normal_(unet.out[-1].weight)  # the zero-initialised output would hide any difference
    return unet


def test_unet_attention_equals_diffusers_sdpa_processor() -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    unet = _random_unet()
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([5, 500]), torch.randn(2, 5, 16)
    ours = unet(x, t, context)
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor2_0())
    torch.testing.assert_close(ours, unet(x, t, context), rtol=0, atol=0)


def test_unet_attention_core_runs_in_fp32_under_cpu_bf16_autocast(monkeypatch) -> None:
    """bf16 projections, fp32 softmax(QK^T)V (the fast CPU kernel at 8-channel heads)."""
    unet = _random_unet()
    x, t, context = torch.randn(2, 3, 8, 8), torch.tensor([5, 500]), torch.randn(2, 5, 16)
    exact = unet(x, t, context)
    seen: list[torch.dtype] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = unet(x, t, context).float()
    assert seen and set(seen) == {torch.float32}
    assert (ours - exact).abs().max() < 0.1 * exact.abs().max()


def test_every_network_option_of_the_config_reaches_its_network() -> None:
    """Built by keyword from their sections: a field the network does not take would be
    silently dropped, so each section's fields are all the network's, except training
    options."""
    from factordiff.config import EncoderConfig, FirstStageConfig, UNetConfig

    assert UNet.section_options(UNetConfig()) == {f for f in vars(UNetConfig())}
    assert UnitEncoder.section_options(EncoderConfig()) == {f for f in vars(EncoderConfig())}
    first = {f for f in vars(FirstStageConfig())} - {"train_steps", "lr"}
    assert FirstStage.section_options(FirstStageConfig()) == first


def test_network_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        UNet(3, 16)  # a reordered signature cannot swap values silently


def test_a_network_saves_and_loads_with_its_own_config(tmp_path: Path) -> None:
    """Like a diffusers model: one network without the run's whole Config."""
    cfg = load_config("quickstart")
    unet = _random_unet()
    unet.save_pretrained(tmp_path / "unet")
    back = UNet.from_pretrained(tmp_path / "unet")
    assert back.config["num_heads"] == 4 and back.config["channel_mult"] == [1, 2]
    assert all(
        torch.equal(a, b)
        for a, b in zip(unet.state_dict().values(), back.state_dict().values(), strict=True)
    )
    enc = UnitEncoder.from_section(cfg.model.encoder, image_size=32)
    assert enc.config["n_units"] == cfg.model.encoder.n_units


def test_no_submodule_is_shadowed_by_a_config_key() -> None:
    """diffusers' ModelMixin answers a config key before a submodule of the same name."""
    model = FactorDiffusion(load_config("quickstart"))
    for net in (model.first_stage, model.encoder, model.unet):
        names = {n for n, _ in net.named_children()}
        names |= {n for n, _ in net.named_parameters(recurse=False)}
        names |= {n for n, _ in net.named_buffers(recurse=False)}
        assert not names & set(net.config), type(net).__name__
