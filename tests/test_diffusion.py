"""``diffusion``: the LDM schedule, the training loss's target, timestep draws and the DDIM
sampler, against answers known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from factordiff.config import DiffusionConfig
from factordiff.diffusion import (
    ddim_sample,
    ddim_scheduler,
    diffusion_loss,
    sample_timesteps,
    train_scheduler,
)

CFG = DiffusionConfig()


def test_the_schedule_is_ldm_linear() -> None:
    """LDM's "linear": beta_t = (sqrt-linspace of beta_start..beta_end)^2, T = 1000."""
    betas = train_scheduler(CFG).betas.double()
    ldm = torch.linspace(math.sqrt(0.0015), math.sqrt(0.0155), 1000, dtype=torch.float64) ** 2
    assert torch.allclose(betas, ldm, atol=1e-7)


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_an_oracle_denoiser_has_zero_loss_and_a_zero_one_loss_of_one(loss: str) -> None:
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = sample_timesteps(4, CFG, g)
    sched = train_scheduler(CFG)

    def oracle(zt, t, context):  # recovers epsilon from z_t exactly: what the loss targets
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (zt - a.sqrt() * z0) / (1 - a).sqrt()

    assert diffusion_loss(oracle, z0, None, sched, noise, t, loss) < 1e-5
    zero = diffusion_loss(lambda zt, t, c: torch.zeros_like(zt), z0, None, sched, noise, t, loss)
    expected = noise.abs().mean() if loss == "l1" else noise.square().mean()
    assert zero == pytest.approx(float(expected), rel=1e-6)


def test_timesteps_are_seeded_and_cover_the_range() -> None:
    a = sample_timesteps(20_000, CFG, torch.Generator().manual_seed(1))
    b = sample_timesteps(20_000, CFG, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() == 0 and a.max() == CFG.timesteps - 1
    assert a.float().mean() == pytest.approx(499.5, abs=10)  # uniform
    cosmap = DiffusionConfig(t_sampling="cosmap")
    c = sample_timesteps(20_000, cosmap, torch.Generator().manual_seed(1))
    assert c.min() >= 0 and c.max() <= CFG.timesteps - 1
    mid = ((c > 250) & (c < 750)).float().mean()
    assert mid > ((a > 250) & (a < 750)).float().mean()  # more mid-noise steps than uniform


def test_ddim_with_an_oracle_keeps_the_noise_direction_and_ends_at_t0() -> None:
    """Deterministic DDIM (eta 0) with a denoiser that always points at one x0 keeps
    epsilon fixed, so it ends at sqrt(a_0) x0 + sqrt(1 - a_0) eps_T: LDM's sampler stops
    at the first training step's noise level (``set_alpha_to_one=False``), not at x0."""
    x0 = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    sched = ddim_scheduler(CFG)
    a = sched.alphas_cumprod

    def oracle(z, t, context):
        at = a[t].view(-1, 1, 1, 1)
        return (z - at.sqrt() * x0) / (1 - at).sqrt()

    out = ddim_sample(oracle, torch.zeros(2, 1, 1), (3, 4, 4), sched, steps=20,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    z_start = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t_start = int(sched.timesteps[0])
    eps = (z_start - a[t_start].sqrt() * x0) / (1 - a[t_start]).sqrt()
    assert torch.allclose(out, a[0].sqrt() * x0 + (1 - a[0]).sqrt() * eps, atol=1e-4)
    assert sched.timesteps[0] == 951 and sched.timesteps[-1] == 1  # LDM's steps_offset=1


def test_shared_noise_gives_rows_that_differ_only_through_their_context() -> None:
    def denoiser(z, t, context):
        return 0.1 * z + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)

    ctx = torch.tensor([[[0.0]], [[0.0]], [[1.0]]])
    out = ddim_sample(denoiser, ctx, (1, 2, 2), ddim_scheduler(CFG), steps=5,
                      generator=torch.Generator().manual_seed(0), shared_noise=True)  # fmt: skip
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])
