"""The first stage: a frozen autoencoder whose latent space the diffusion model works in.

``vq`` is EncDiff's VQ autoencoder (diffusers ``VQModel``: channels 32 x (1, 2, 4), two
ResBlocks per level, no attention, 3 latent channels, 2048 codes, 64x64x3 -> 16x16x3);
``kl`` the same network as an ``AutoencoderKL``; ``unshuffle`` is a lossless, parameter-free
space-to-depth (``pixel_unshuffle``: 32x32x3 -> 8x8x48 for patch 4) that lets a small U-Net
work at low resolution on a CPU; ``none`` works in pixel space.
The diffusion sees the *pre-quantisation* latent multiplied by ``scale`` = 1 / std of the
first training batch (LDM's ``scale_by_std``); ``decode`` undoes the scaling and, for
``vq``, quantises before decoding.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, VQModel
from diffusers.configuration_utils import register_to_config
from torch.nn import functional as F

from factordiff.choices import FIRST_STAGE_KINDS as KINDS
from factordiff.models.network import Network


class FirstStage(Network):
    @register_to_config
    def __init__(
        self,
        *,
        kind: str = "vq",
        in_channels: int = 3,
        embed_dim: int = 3,
        n_embed: int = 2048,
        channels: int = 32,
        channel_mult: tuple[int, ...] | list[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        patch_size: int = 4,
        scale_pixels: bool = False,
        loss: str = "l1",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown first stage {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.loss = {"l1": F.l1_loss, "l2": F.mse_loss}[loss]
        self.register_buffer("scale", torch.ones(()))  # set once by calibrate_scale
        pixels = kind in ("none", "unshuffle")
        self.register_buffer("calibrated", torch.tensor(pixels and not scale_pixels))
        blocks = dict(
            in_channels=in_channels,
            out_channels=in_channels,
            block_out_channels=tuple(channels * m for m in channel_mult),
            layers_per_block=num_res_blocks,
            latent_channels=embed_dim,
            norm_num_groups=min(32, channels),
            mid_block_add_attention=False,
        )
        n = len(channel_mult)
        down, up = ("DownEncoderBlock2D",) * n, ("UpDecoderBlock2D",) * n
        if kind == "vq":
            self.model = VQModel(
                **blocks, down_block_types=down, up_block_types=up,
                num_vq_embeddings=n_embed, vq_embed_dim=embed_dim,
            )  # fmt: skip
        elif kind == "kl":
            self.model = AutoencoderKL(**blocks, down_block_types=down, up_block_types=up)
        else:
            self.model = None
        self.patch = patch_size if kind == "unshuffle" else 1
        self.downsample = 2 ** (n - 1) if self.model is not None else self.patch
        self.latent_channels = embed_dim if self.model is not None else in_channels * self.patch**2

    @property
    def learned(self) -> bool:
        """An autoencoder (kl, vq) that can lose detail, not a fixed pixel rearrangement."""
        return self.model is not None

    def _raw_encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vq":
            return self.model.encode(x).latents
        if self.kind == "kl":
            return self.model.encode(x).latent_dist.mode()
        return F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> scaled latent (pre-quantisation for vq)."""
        return self._raw_encode(x) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image in [-1, 1] (quantised first for vq)."""
        z = z / self.scale
        if self.model is None:
            return F.pixel_shuffle(z, self.patch) if self.patch > 1 else z
        return self.model.decode(z).sample

    @torch.no_grad()
    def calibrate_scale(self, x: torch.Tensor) -> float:
        """scale = 1 / std of the latents of ``x``; done once, before diffusion training."""
        if not bool(self.calibrated):
            self.scale.fill_(1.0 / self._raw_encode(x).float().std().clamp_min(1e-6))
            self.calibrated.fill_(True)
        return float(self.scale)

    def reconstruction_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of the autoencoder: L1 or L2 reconstruction (``first_stage.loss``)
        + codebook (vq) or KL (kl) term. ``rec_l1`` is logged whichever loss trains, so runs
        compare.

        The perceptual (LPIPS) and adversarial terms of the published VQ-GAN loss are
        left out: their weights cannot be fetched here, and at 64x64 with a factor-4
        downsampling L1 alone reconstructs the synthetic datasets sharply.
        """
        if self.model is None:
            raise ValueError(f"first_stage.kind={self.kind!r} has nothing to train")
        if self.kind == "vq":
            out = self.model.decode(self.model.encode(x).latents)
            recon, extra = out.sample, out.commit_loss.mean()
        else:
            dist = self.model.encode(x).latent_dist
            recon, extra = self.model.decode(dist.sample()).sample, 1e-6 * dist.kl().mean()
        rec = self.loss(recon, x)
        l1 = rec if self.loss is F.l1_loss else F.l1_loss(recon.detach(), x)
        return rec + extra, {"rec_l1": float(l1.detach()), "reg": float(extra.detach())}
