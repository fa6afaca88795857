"""``FactorDiffusion``: the trained model as one object -- encode, represent, decode, swap.

It owns the three networks (first stage, unit encoder, U-Net) and the DDIM sampler, and
is what ``factordiff train`` optimises (``forward`` is the training loss) and what
``from_pretrained`` gives back. Images go in as uint8 arrays (B, H, W, C) -- what
``dataset.images()`` returns -- or float tensors (B, C, H, W) in [-1, 1]; generated images
come out as uint8 arrays (``output_type="np"``) or float tensors (``"pt"``).

Return types, one rule: what goes back into the model is torch (``encode``, ``scalars``:
units to edit and ``decode``); what leaves it for numpy tools is numpy (``represent``, the
codes metrics and GBTs read; images, unless ``output_type="pt"``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from factordiff.config import Config
from factordiff.data.loader import to_uint8
from factordiff.diffusion import (
    ddim_sample,
    ddim_scheduler,
    diffusion_loss,
    sample_timesteps,
    train_scheduler,
)
from factordiff.models.anchoring import Anchors
from factordiff.models.autoencoder import FirstStage
from factordiff.models.encoder import UnitEncoder
from factordiff.models.unet import UNet
from factordiff.pipeline.base import ImageModel


class FactorDiffusion(ImageModel):
    families = ("diffusion",)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        m = config.model
        self.first_stage = FirstStage.from_section(m.first_stage, in_channels=3)
        self.first_stage.requires_grad_(False)
        self.encoder = UnitEncoder.from_section(
            m.encoder, image_size=self.image_size, in_channels=3
        )
        self.unet = UNet.from_section(
            m.unet, in_channels=self.first_stage.latent_channels, context_dim=m.encoder.unit_dim
        )
        side = self.image_size // self.first_stage.downsample
        self.latent_shape = (self.first_stage.latent_channels, side, side)
        self.noise_scheduler = train_scheduler(config.diffusion)
        self.sampler = ddim_scheduler(config.diffusion, clip_sample=self.first_stage.model is None)

    @property
    def n_units(self) -> int:
        return self.config.model.encoder.n_units

    @property
    def ema_module(self) -> nn.Module:
        return self.unet

    # -- training -------------------------------------------------------------------
    def training_inputs(
        self, x: torch.Tensor, z0: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor | None, ...]:
        """``(x, noise, timesteps, z0)``: the noise first, then the timesteps, from
        ``generator`` on the CPU (the same numbers on every device)."""
        noise = torch.randn((len(x), *self.latent_shape), generator=generator).to(x.device)
        ts = sample_timesteps(len(x), self.config.diffusion, generator).to(x.device)
        return x, noise, ts, z0

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, z0: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The diffusion loss of a batch of images (the only training signal); ``z0``: their
        first-stage latents when cached (``train.cache_latents``), else encoded here."""
        if z0 is None:
            with torch.no_grad():
                z0 = self.first_stage.encode(x)
        tokens = self.units(x)
        return diffusion_loss(
            self.unet, z0, tokens, self.noise_scheduler, noise, t, self.config.diffusion.loss
        )

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's tokens (B, N, D), aligned to the DyGA anchors when there are any
        (``anchoring.space=scalars``: made from the aligned scalars)."""
        scalars, tokens = self.encoder(x)
        if self.anchors is None:
            return tokens
        if self._anchors_on_scalars:
            return self.encoder.to_tokens(self._pull(scalars[..., None])[..., 0])
        return self._pull(tokens)

    @property
    def _anchors_on_scalars(self) -> bool:
        return self.config.anchoring.space == "scalars"

    def _pull(self, features: torch.Tensor) -> torch.Tensor:
        """Features (B, N, D) moved toward their anchors; in training the pull is logged."""
        return self.anchors.pull(features, record=self.training)

    @torch.no_grad()
    def anchored_features(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """What the anchors are fit on, before any pull: the tokens (B, N, D), or the scalars
        as (B, N, 1) with ``anchoring.space=scalars``."""
        current, self.anchors = self.anchors, None
        try:
            if self._anchors_on_scalars:
                return self.scalars(images)[..., None]
            return self.encode(images)
        finally:
            self.anchors = current

    def set_anchors(self, units: list | None) -> None:
        """Install fitted ``UnitMixture``s (one per unit) with the config's alignment options."""
        self.anchors = None if units is None else Anchors.from_section(units, self.config.anchoring)

    # -- inference ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Latent units (B, N, D): the tokens the U-Net attends to."""
        with self._eval_mode():
            return torch.cat(self._batched(self.units, images, batch_size))

    @torch.no_grad()
    def autoencode(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The images through the first stage alone (encode, decode; no units, no diffusion),
        uint8 (B, H, W, 3): the diffusion model is trained to regenerate these, so a factor
        blurred here gives the units little reason to keep it apart (the encoder itself
        reads the pixels)."""

        def through(x: torch.Tensor) -> torch.Tensor:
            return self.first_stage.decode(self.first_stage.encode(x))

        with self._eval_mode():
            return to_uint8(torch.cat(self._batched(through, images, batch_size)))

    @torch.no_grad()
    def scalars(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The encoder's N scalars (B, N), each feeding one unit's MLP (traversals walk them)."""
        with self._eval_mode():
            return torch.cat(self._batched(lambda x: self.encoder(x)[0], images, batch_size))

    @torch.no_grad()
    def units_from_scalars(self, scalars: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, D) for given scalars: the per-unit MLPs, then the DyGA anchors."""
        with self._eval_mode():
            scalars = scalars.to(self.device)
            if self.anchors is not None and self._anchors_on_scalars:
                scalars = self._aligned_scalars(scalars)
            tokens = self.encoder.to_tokens(scalars)
            if self.anchors is None or self._anchors_on_scalars:
                return tokens
            return self.anchors.align(tokens)

    @torch.no_grad()
    def represent(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The representation the metrics score (``representation_of`` says it in words):
        the N scalars (EncDiff encoder; pulled to their anchors with ``anchoring.space=
        scalars``) or the (B, N, D) units as the U-Net sees them, moved by token anchors (the
        DyGA encoder, or ``eval.representation`` pca / flatten), which
        ``fd.metrics.evaluate`` reduces by per-unit PCA or flattens."""
        with self._eval_mode():
            if self._represents_scalars:
                if self.anchors is None or not self._anchors_on_scalars:
                    return self.scalars(images, batch_size).float().cpu().numpy()
                pulled = self._batched(
                    lambda x: self._aligned_scalars(self.encoder(x)[0]), images, batch_size
                )
                return torch.cat(pulled).float().cpu().numpy()
            parts = self._batched(self.units, images, batch_size)
            return torch.cat(parts).float().cpu().numpy()

    def _aligned_scalars(self, scalars: torch.Tensor) -> torch.Tensor:
        """Scalars (B, N) moved toward their 1-D anchors (``anchoring.space=scalars``)."""
        return self.anchors.align(scalars[..., None])[..., 0]

    @property
    def _represents_scalars(self) -> bool:
        return self.config.model.encoder.kind == "encdiff" and (
            self.config.eval.representation in ("auto", "scalars")
        )

    @property
    def representation_of(self) -> str:
        """What ``represent`` returns, for eval.json: which code a number scores."""
        anchored = self.anchors is not None
        if self._represents_scalars:
            if anchored and self._anchors_on_scalars:
                return "the units' scalars, pulled to their DyGA anchors"
            return "the units' scalars" + (" (anchors act on the tokens only)" if anchored else "")
        moved = " moved by their DyGA anchors" if anchored and not self._anchors_on_scalars else ""
        return f"the units' tokens as the U-Net attends to them{moved}"

    def _generate(
        self, units: torch.Tensor, steps: int | None, eta: float | None, seed: int,
        progress: Callable | None,
    ) -> torch.Tensor:  # fmt: skip
        """DDIM from the units; the same seed gives the same starting noise for every row,
        so rows differ only through their units."""
        d = self.config.diffusion
        # pixel models clip x0 to the data range, [-1, 1] times the pixels' scale
        self.sampler.register_to_config(clip_sample_range=float(self.first_stage.scale))
        z = ddim_sample(
            self.unet, units, self.latent_shape, self.sampler,
            steps or d.sample_steps, d.eta if eta is None else eta,
            torch.Generator().manual_seed(seed), shared_noise=True, progress=progress,
        )  # fmt: skip
        return self.first_stage.decode(z).clamp(-1, 1)
