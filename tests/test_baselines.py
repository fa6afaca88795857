"""The beta-VAE family baselines: architecture, losses against known answers, training
through the same loop and CLI, and the same inference interface as FactorDiffusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import factordiff as fd
from factordiff.checkpoint import latest_checkpoint, load_tensors, optimizer_state_tensors
from factordiff.cli import app
from factordiff.config import ConfigError, load_config, preset_names
from factordiff.data import load
from factordiff.models.baselines import (
    BetaVAEFamily,
    ConvEncoder,
    DeconvDecoder,
    permute_dims,
    total_correlation,
)
from factordiff.pipeline import VAEModel
from factordiff.training import train
from factordiff.training.optim import make_adamw
from factordiff.training.state import TrainState
from run_helpers import log

VAE_PRESETS = [
    p for p in preset_names() if p.split("_")[0] in ("betavae", "betatcvae", "factorvae")
]
SHORT = ["train.max_steps=6", "train.batch_size=16", "train.checkpoint_every=3",
         "train.eval_every=0", "train.log_every=1"]  # fmt: skip


@pytest.mark.parametrize("size", [32, 64])
def test_disentanglement_lib_architecture(size: int) -> None:
    enc, dec = ConvEncoder(size, 10), DeconvDecoder(size, 10)
    mean, log_var = enc(torch.zeros(2, 3, size, size))
    assert mean.shape == log_var.shape == (2, 10)
    assert dec(mean).shape == (2, 3, size, size)
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64][-len(convs) :]
    assert len(convs) == (4 if size == 64 else 3)


def test_every_vae_preset_loads_and_builds() -> None:
    assert {"betavae_shapes3d", "betatcvae_quickstart", "factorvae_dsprites"} <= set(VAE_PRESETS)
    for preset in VAE_PRESETS:
        cfg = load_config(preset)
        assert cfg.train.weight_decay == 0 and cfg.train.base_lr == 1e-4 and not cfg.train.scale_lr
        model = VAEModel(cfg)
        assert model.n_units == 10


def test_total_correlation_is_larger_for_dependent_codes() -> None:
    g = torch.Generator().manual_seed(0)
    log_var = torch.full((256, 4), -4.0)
    independent = torch.randn(256, 4, generator=g)
    dependent = independent[:, :1].repeat(1, 4)  # four copies of one variable
    tc_ind = total_correlation(independent, independent, log_var)
    tc_dep = total_correlation(dependent, dependent, log_var)
    assert tc_dep > tc_ind + 2.0


def test_permute_dims_shuffles_each_column_separately() -> None:
    torch.manual_seed(0)
    z = torch.arange(40.0).reshape(10, 4)
    p = permute_dims(z)
    for j in range(4):
        assert sorted(p[:, j].tolist()) == sorted(z[:, j].tolist())
    assert not torch.equal(p, z)


def test_factorvae_discriminator_learns_only_from_its_own_loss() -> None:
    torch.manual_seed(0)
    vae = BetaVAEFamily("factorvae", 32, latent_dim=4, beta=1.0, gamma=10.0)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    torch.manual_seed(1)
    vae.loss(x)[0].backward()
    full = [p.grad.clone() for p in vae.discriminator.parameters()]
    vae.zero_grad()
    torch.manual_seed(1)
    _, parts = vae.loss(x)
    # the same draws again; now only the discriminator's term
    torch.manual_seed(1)
    mean, log_var = vae.encoder(x)
    z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
    vae.decoder(z)  # keeps the random stream aligned with loss()
    real = vae.discriminator(z.detach())
    fake = vae.discriminator(permute_dims(z.detach()))
    ce = torch.nn.functional.cross_entropy
    zeros, ones = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)
    d_loss = 0.5 * (ce(real, zeros) + ce(fake, ones))
    assert d_loss.item() == pytest.approx(parts["discriminator"].item(), abs=1e-6)
    d_loss.backward()
    for a, p in zip(full, vae.discriminator.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_vae_needs_no_anchors() -> None:
    with pytest.raises(ConfigError, match="DyGA anchors need the diffusion model"):
        load_config("betavae_quickstart", ["anchoring.enabled=true"])


@pytest.mark.parametrize("family", ["betavae", "betatcvae", "factorvae"])
def test_trains_resumes_bitwise_and_serves_the_interface(family: str, tmp_path: Path) -> None:
    straight, split = tmp_path / "a", tmp_path / "b"
    train(load_config(f"{family}_quickstart", SHORT), straight, progress=False)
    train(load_config(f"{family}_quickstart", [*SHORT, "train.max_steps=3"]), split,
          progress=False)  # fmt: skip
    train(load_config(f"{family}_quickstart", SHORT), split, progress=False)
    names = ["model", *(["optimizer_discriminator"] if family == "factorvae" else [])]
    for name in names:  # the discriminator's own Adam state resumes too
        a = load_tensors(latest_checkpoint(straight), name)
        b = load_tensors(latest_checkpoint(split), name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    _loss_terms_add_up(family, straight)
    model = fd.load_pretrained(straight)
    assert isinstance(model, VAEModel)
    images = load("quickstart").images_at(np.arange(5))
    codes = model.represent(images)
    assert codes.shape == (5, 10) and np.isfinite(codes).all()
    assert model.decode(model.encode(images)).shape == (5, 32, 32, 3)
    assert model.swap(images[:2], images[2:4], unit=3).dtype == np.uint8


def _loss_terms_add_up(family: str, run: Path) -> None:
    """Every log step records each term of the family's loss, and they make up the loss."""
    v = load_config(f"{family}_quickstart").model.vae
    records = [r for r in log(run) if "loss" in r]
    assert len(records) == 6
    for r in records:
        t = {k.removeprefix("loss_"): r[k] for k in r if k.startswith("loss_")}
        if family == "betavae":
            assert sorted(t) == ["kl", "reconstruction"]
            total = t["reconstruction"] + v.beta * t["kl"]
        elif family == "betatcvae":
            assert sorted(t) == ["kl", "reconstruction", "tc"]
            total = t["reconstruction"] + t["kl"] + (v.beta - 1) * t["tc"]
        else:
            assert sorted(t) == ["discriminator", "kl", "reconstruction", "tc"]
            total = t["reconstruction"] + t["kl"] + v.gamma * t["tc"] + t["discriminator"]
            # an untrained two-way classifier: cross-entropy near ln 2
            assert abs(t["discriminator"] - np.log(2)) < 0.1, t
        assert r["loss"] == pytest.approx(total, rel=1e-4)


def test_a_vae_draws_no_diffusion_noise() -> None:
    model = VAEModel(load_config("betavae_quickstart"))
    x = torch.zeros(4, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    assert model.training_inputs(x, None, g) == (x,)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


def test_factorvae_discriminator_has_its_own_adam_as_the_reference() -> None:
    """disentanglement_lib: VAE Adam betas 0.9 / 0.999, discriminator Adam 0.5 / 0.9, both
    lr 1e-4; every trainable parameter in exactly one optimiser."""
    model = VAEModel(load_config("factorvae_quickstart"))
    state = TrainState.fresh(model.config, model, n_images=100)
    assert list(state.optimizers) == ["model", "discriminator"]
    vae, critic = (opt.param_groups[0] for opt in state.optimizers.values())
    assert vae["betas"] == (0.9, 0.999) and critic["betas"] == (0.5, 0.9)
    assert vae["lr"] == critic["lr"] == pytest.approx(1e-4) and critic["weight_decay"] == 0
    assert {id(p) for p in critic["params"]} == {
        id(p) for p in model.vae.discriminator.parameters()
    }
    trained = [id(p) for p in vae["params"] + critic["params"]]
    assert sorted(trained) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    one = VAEModel(load_config("betavae_quickstart"))
    assert list(TrainState.fresh(one.config, one, n_images=100).optimizers) == ["model"]


def test_a_shared_optimiser_factorvae_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config("factorvae_quickstart", SHORT), run, progress=False)
    ckpt = latest_checkpoint(run)
    # the layout factordiff 0.3.0 wrote: one Adam over the VAE's and the discriminator's
    # weights, no second optimiser
    model = VAEModel(load_config("factorvae_quickstart"))
    shared = make_adamw([p for p in model.parameters() if p.requires_grad], 1e-4, 0.0)
    for p in shared.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    shared.step()
    tensors, meta = optimizer_state_tensors(shared)
    save_file(tensors, ckpt / "optimizer.safetensors")
    (ckpt / "optimizer_discriminator.safetensors").unlink()
    state = json.loads((ckpt / "state.json").read_text())
    del state["optimizer_discriminator"], state["lr_scheduler_discriminator"]
    state["optimizer"] = meta
    (ckpt / "state.json").write_text(json.dumps(state))
    cfg = load_config("factorvae_quickstart", [*SHORT, "train.max_steps=9"])
    with pytest.raises(ConfigError, match="no state for the 'discriminator' optimiser"):
        train(cfg, run, progress=False)


def test_eval_and_report_commands_on_a_baseline(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config("betavae_quickstart", SHORT), run, progress=False)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(run), "--metrics", "mig,dci", "--scale", "0.05"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(run), "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert "Cross-attention" not in (run / "report.html").read_text()
