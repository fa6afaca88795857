"""Noise schedule, training loss and DDIM sampling, on diffusers' schedulers.

The schedule is LDM's "linear" (sqrt-linspace of beta_start..beta_end, squared), which
diffusers calls ``scaled_linear``; T=1000, epsilon prediction, L1 loss in the EncDiff
configs. The sampler is diffusers' ``DDIMScheduler`` configured as LDM's DDIM sampler
(``set_alpha_to_one=False``, ``steps_offset=1``, no clipping of latents; pixel-space
models clip their x0 predictions to the data range).

Randomness (timesteps, noise) comes from an explicit ``torch.Generator`` so that a training
step is a pure function of (weights, batch, seed, step) -- the basis of bitwise resume and
of DDP runs that equal a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch.nn import functional as F

from factordiff.config import DiffusionConfig

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _schedule_kwargs(cfg: DiffusionConfig) -> dict:
    return dict(
        num_train_timesteps=cfg.timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction,
        clip_sample=False,
    )


def train_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(**_schedule_kwargs(cfg))


def ddim_scheduler(cfg: DiffusionConfig, clip_sample: bool = False) -> DDIMScheduler:
    """``clip_sample``: clip each step's x0 prediction to [-1, 1] -- right for pixel-space
    diffusion (the data lives there) and wrong for latents, which are not bounded."""
    kwargs = {**_schedule_kwargs(cfg), "clip_sample": clip_sample}
    return DDIMScheduler(**kwargs, set_alpha_to_one=False, steps_offset=1)


def sample_timesteps(n: int, cfg: DiffusionConfig, generator: torch.Generator) -> torch.Tensor:
    """t ~ uniform{0..T-1} (the published setting) or, with ``t_sampling='cosmap'``,
    biased toward mid and high noise levels, where the image must come from the units."""
    if cfg.t_sampling == "uniform":
        return torch.randint(0, cfg.timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator)
    warped = 1.0 - 1.0 / (torch.tan(torch.pi / 2 * u) + 1.0)  # SD3's CosMap density on [0, 1]
    return (warped * cfg.timesteps).long().clamp_(0, cfg.timesteps - 1)


def training_target(
    scheduler: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return z0
    return scheduler.get_velocity(z0, noise, t)


def diffusion_loss(
    denoiser: Denoiser,
    z0: torch.Tensor,
    context: torch.Tensor,
    scheduler: DDPMScheduler,
    noise: torch.Tensor,
    t: torch.Tensor,
    loss: str = "l1",
) -> torch.Tensor:
    """Mean L1 (or L2) between the denoiser's prediction and the target at (noise, t)."""
    zt = scheduler.add_noise(z0, noise, t)
    pred = denoiser(zt, t, context)
    target = training_target(scheduler, z0, noise, t)
    if loss == "l1":
        return F.l1_loss(pred.float(), target.float())
    return F.mse_loss(pred.float(), target.float())


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    context: torch.Tensor,
    latent_shape: tuple[int, ...],
    scheduler: DDIMScheduler,
    steps: int = 100,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    shared_noise: bool = False,
    progress: Callable | None = None,
) -> torch.Tensor:
    """Latents (B, *latent_shape) by DDIM from noise, conditioned on ``context`` (B, N, D).

    Noise is drawn on the CPU from ``generator`` (a seed gives the same images on every
    device). ``shared_noise``: every row starts from the same noise, so with ``eta=0``
    rows differ only through their units (what interchange grids need).
    """
    device, n = context.device, context.shape[0]
    first = (1 if shared_noise else n, *latent_shape)
    z = torch.randn(first, generator=generator).expand(n, *latent_shape).to(device)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    for t in progress(timesteps) if progress else timesteps:
        eps = denoiser(z, t.expand(n).to(device), context)
        z = scheduler.step(eps, t, z, eta=eta, generator=generator).prev_sample
    return z
