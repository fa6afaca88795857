"""``VAEModel``: a beta-VAE family baseline behind the same interface as
``FactorDiffusion`` (train with ``factordiff train betavae_quickstart``, score with
``factordiff eval``, inspect with ``swap`` / ``traverse`` / ``report``).

Its latent units are the posterior means (B, latent_dim, 1); decoding is one pass of the
decoder (the Bernoulli means), so ``steps`` and ``seed`` are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from factordiff.choices import VAE_FAMILIES
from factordiff.config import Config
from factordiff.models.baselines import BetaVAEFamily
from factordiff.pipeline.base import ImageModel, ParamGroup


class VAEModel(ImageModel):
    #: the reference represents with the trained weights; no EMA is used to load
    loads_ema = False
    families = VAE_FAMILIES

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        v = config.model.vae
        self.vae = BetaVAEFamily(
            config.model.family, self.image_size, v.latent_dim, v.beta, v.gamma
        )
        self.first_stage = None  # no autoencoder phase
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_count = 0

    @property
    def n_units(self) -> int:
        return self.config.model.vae.latent_dim

    @property
    def ema_module(self) -> nn.Module:
        return self.vae.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The family's loss (its sampling draws from the global generator, which the loop
        seeds per micro-batch); FactorVAE's includes the discriminator's, each term's
        gradient blocked from the other's weights."""
        loss, terms = self.vae.loss(x)
        self._record_terms(terms)
        return loss

    @torch.compiler.disable  # bookkeeping: a compiled forward would recompile on the count
    def _record_terms(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():  # detached; summed on the device, no sync
            self._term_sums[name] = self._term_sums.get(name, 0) + value.float()
        self._term_count += 1

    def pop_loss_terms(self) -> dict[str, torch.Tensor]:
        """Reconstruction, KL, and (beta-TCVAE, FactorVAE) the total correlation and the
        discriminator's loss: whether each term and the discriminator's own Adam act."""
        n = self._term_count
        terms = {f"loss_{k}": v / n for k, v in self._term_sums.items()} if n else {}
        self._term_sums, self._term_count = {}, 0
        return terms

    def optimizer_groups(self) -> list[ParamGroup]:
        """FactorVAE's discriminator gets its own Adam, as disentanglement_lib trains it
        (lr as the VAE's, betas 0.5 / 0.9, no weight decay)."""
        critic = self.vae.discriminator
        if critic is None:
            return super().optimizer_groups()
        theirs = {id(p) for p in critic.parameters()}
        ours = [p for p in self.parameters() if p.requires_grad and id(p) not in theirs]
        return [
            ParamGroup("model", ours),
            ParamGroup("discriminator", list(critic.parameters()), (0.5, 0.9), 0.0),
        ]

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Posterior means as units (B, latent_dim, 1)."""
        with self._eval_mode():
            parts = self._batched(lambda x: self.vae.encoder(x)[0], images, batch_size)
        return torch.cat(parts)[..., None]

    def scalars(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The posterior means (B, latent_dim), which traversals walk."""
        return self.encode(images, batch_size)[..., 0]

    def units_from_scalars(self, scalars: torch.Tensor) -> torch.Tensor:
        return scalars.to(self.device)[..., None]

    @torch.no_grad()
    def represent(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """The posterior means (B, latent_dim): what the metrics score."""
        return self.encode(images, batch_size)[..., 0].float().cpu().numpy()

    #: what ``represent`` returns, for eval.json
    representation_of = "the encoder's posterior means"

    @torch.no_grad()
    def unit_kl(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Each latent's mean KL to the N(0, 1) prior over ``images`` (latent_dim,): UDR's
        test of which latents are active (disentanglement_lib: KL > 0.01)."""
        with self._eval_mode():
            parts = self._batched(self.vae.encoder, images, batch_size)
        mean = torch.cat([p[0] for p in parts]).double()
        log_var = torch.cat([p[1] for p in parts]).double()
        kl = 0.5 * (mean.square() + log_var.exp() - log_var - 1)
        return kl.mean(dim=0).cpu().numpy()

    def _generate(
        self, units: torch.Tensor, steps: int | None, eta: float | None, seed: int,
        progress: Callable | None,
    ) -> torch.Tensor:  # fmt: skip
        """The decoder's Bernoulli means from units (B, latent_dim, 1); nothing is sampled."""
        return torch.sigmoid(self.vae.decoder(units[..., 0])) * 2 - 1
