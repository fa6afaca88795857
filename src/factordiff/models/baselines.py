"""The beta-VAE family, as disentanglement_lib defines and trains it, for side-by-side runs.

- Encoder (``conv_encoder``): 4x4 convolutions of stride 2 with 32, 32, 64, 64 channels
  (ReLU) down to 4x4, a dense layer of 256, then the posterior mean and log-variance of a
  ``latent_dim``-dimensional Gaussian (10 in the study). Images smaller than 64 pixels drop
  the first convolutions, so every size ends at 4x4.
- Decoder (``deconv_decoder``): dense 256, dense 1024 = 4x4x64, transposed 4x4 convolutions
  of stride 2 (64, 32, 32 channels, ReLU) back to the image, giving Bernoulli logits.
- Loss: Bernoulli reconstruction (sigmoid cross-entropy summed over pixels, images in
  [0, 1]) plus a regulariser, averaged over the batch:
  - ``betavae`` (Higgins et al. 2017): beta * KL(q(z|x) || N(0, I));
  - ``betatcvae`` (Chen et al. 2018): KL + (beta - 1) * TC, the total correlation of q(z)
    estimated on the minibatch as disentanglement_lib does (no dataset-size weights);
  - ``factorvae`` (Kim & Mnih 2018): KL + gamma * TC, TC = E[logit_real - logit_permuted]
    of a discriminator (6 x 1000 leaky-ReLU MLP, 2 logits) that is trained at the same
    step to tell q(z) from its dimension-wise permutation.
- Representation: the posterior mean.

The study trains with Adam (lr 1e-4, betas 0.9 / 0.999) for 300k steps of batch 64, and
FactorVAE's discriminator with a second Adam (lr 1e-4, betas 0.5 / 0.9); our presets
``betavae_*``, ``betatcvae_*``, ``factorvae_*`` hold those settings (the family's
``optimizer_groups`` in ``pipeline/vae.py`` gives the discriminator its Adam). ``loss``
returns one sum: the VAE's terms are blocked from the discriminator's weights and the
discriminator's loss from the encoder's, so one backward pass feeds both optimisers
exactly their own gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from factordiff.choices import VAE_FAMILIES


def _downsamplings(image_size: int) -> int:
    n = int(math.log2(image_size // 4)) if image_size >= 8 else 0
    if image_size != 4 * 2**n:
        raise ValueError(f"the VAE baselines need a power-of-two image size >= 8, got {image_size}")
    return n


class ConvEncoder(nn.Module):
    def __init__(self, image_size: int, latent_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        widths = [32, 32, 64, 64][-_downsamplings(image_size) :]
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, 2, 1), nn.ReLU()]
            c = w
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 16, 256), nn.ReLU())
        self.mean = nn.Linear(256, latent_dim)
        self.log_var = nn.Linear(256, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mean(h), self.log_var(h)


class DeconvDecoder(nn.Module):
    def __init__(self, image_size: int, latent_dim: int, out_channels: int = 3) -> None:
        super().__init__()
        widths = [64, 32, 32, out_channels][-_downsamplings(image_size) :]
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c = 64
        for i, w in enumerate(widths):
            layers.append(nn.ConvTranspose2d(c, w, 4, 2, 1))
            if i < len(widths) - 1:
                layers.append(nn.ReLU())
            c = w
        if not widths:
            layers.append(nn.Conv2d(64, out_channels, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.dense(z).view(-1, 64, 4, 4))  # Bernoulli logits


class Discriminator(nn.Module):
    """FactorVAE's: is this code from q(z) (logit 0) or from its permutation (logit 1)?"""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        d = latent_dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
            d = hidden
        self.net = nn.Sequential(*mods, nn.Linear(d, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor):
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def total_correlation(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Minibatch estimate of TC(q(z)) = KL(q(z) || prod_j q(z_j)), as disentanglement_lib's
    ``total_correlation``: log q(z) and log q(z_j) by log-sum-exp over the batch."""
    log_qz_prob = gaussian_log_density(z[:, None], mean[None], log_var[None])  # (B, B, D)
    log_qz_product = torch.logsumexp(log_qz_prob, dim=1).sum(dim=1)
    log_qz = torch.logsumexp(log_qz_prob.sum(dim=2), dim=1)
    return (log_qz - log_qz_product).mean()


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: a sample of
    prod_j q(z_j)."""
    idx = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return torch.gather(z, 0, idx)


class BetaVAEFamily(nn.Module):
    """Encoder, decoder and (FactorVAE) discriminator; ``loss(x)`` in [-1, 1] images."""

    def __init__(
        self, family: str, image_size: int, latent_dim: int, beta: float, gamma: float
    ) -> None:  # the defaults are the config's (model.vae), written once there
        super().__init__()
        if family not in VAE_FAMILIES:
            raise ValueError(f"unknown VAE family {family!r}; expected one of {VAE_FAMILIES}")
        self.family, self.beta, self.gamma = family, beta, gamma
        self.encoder = ConvEncoder(image_size, latent_dim)
        self.decoder = DeconvDecoder(image_size, latent_dim)
        self.discriminator = Discriminator(latent_dim) if family == "factorvae" else None

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        target = (x + 1) / 2  # Bernoulli targets in [0, 1]
        mean, log_var = self.encoder(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        logits = self.decoder(z)
        rec = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        rec = rec.flatten(1).sum(1).mean()
        kl = (0.5 * (mean**2 + log_var.exp() - log_var - 1)).sum(1).mean()
        parts = {"reconstruction": rec.detach(), "kl": kl.detach()}
        if self.family == "betavae":
            return rec + self.beta * kl, parts
        if self.family == "betatcvae":
            tc = total_correlation(z, mean, log_var)
            parts["tc"] = tc.detach()
            return rec + kl + (self.beta - 1) * tc, parts
        # FactorVAE: the TC term must not train the discriminator, its own loss must not
        # train the encoder.
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        tc_logits = functional_call(self.discriminator, frozen, (z,))
        tc = (tc_logits[:, 0] - tc_logits[:, 1]).mean()
        real = self.discriminator(z.detach())
        fake = self.discriminator(permute_dims(z.detach()))
        d_loss = 0.5 * (
            F.cross_entropy(real, torch.zeros(len(z), dtype=torch.long, device=z.device))
            + F.cross_entropy(fake, torch.ones(len(z), dtype=torch.long, device=z.device))
        )
        parts.update(tc=tc.detach(), discriminator=d_loss.detach())
        return rec + kl + self.gamma * tc + d_loss, parts
