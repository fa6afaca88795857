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

import json
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from factordiff import __version__
from factordiff.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_into,
    load_tensors,
)
from factordiff.config import Config, load_config, save_config
from factordiff.data.loader import to_float, to_uint8
from factordiff.data.registry import get_spec
from factordiff.diffusion import ddim_sample, ddim_scheduler, diffusion_loss, train_scheduler
from factordiff.models.anchoring import Anchors
from factordiff.models.autoencoder import FirstStage
from factordiff.models.encoder import UnitEncoder
from factordiff.models.unet import UNet
from factordiff.shipped import PROVENANCE_KEY, provenance, refuse_package_write, resolve_model

WEIGHTS = "model.safetensors"
ANCHORS = "anchors.safetensors"


def resolve_image_size(cfg: Config) -> int:
    size = cfg.data.image_size or get_spec(cfg.data.name).image_size
    if size is None:
        raise CheckpointError(f"data.image_size must be set for dataset {cfg.data.name!r}")
    return size


class ImageModel(nn.Module):
    """What every trainable model of factordiff shares: images in, latent units (B, N, D)
    out and back, persistence. ``FactorDiffusion`` and the VAE baselines build on it."""

    #: ``from_pretrained`` of a run directory loads the EMA weights into ``ema_module``
    loads_ema = True

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.image_size = resolve_image_size(config)
        self.anchors: Anchors | None = None  # DyGA: set by training (refits) or loading
        #: where the weights came from (``from_pretrained`` fills it; reports show it)
        self.provenance: dict = {}

    @property
    def n_units(self) -> int:
        raise NotImplementedError

    @property
    def ema_module(self) -> nn.Module:
        """The part whose weights the trainer averages (EMA)."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) or float (B, C, H, W) in [-1, 1] -> float RGB at the model's
        size, on the model's device (grey images are repeated to 3 channels)."""
        if isinstance(images, np.ndarray) or images.dtype == torch.uint8:
            images = to_float(images if isinstance(images, np.ndarray) else images.cpu().numpy())
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"expected images (B, H, W, C) uint8 or (B, C, H, W) float with C in (1, 3), "
                f"got {tuple(images.shape)}"
            )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = nn.functional.interpolate(
                images.float(), size=(self.image_size,) * 2, mode="bilinear", antialias=True
            ).clamp(-1, 1)
        return images.to(self.device)

    @contextmanager
    def _eval_mode(self):
        """Inference in eval mode (BatchNorm statistics, no dropout), then back as it was."""
        was = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was)

    def _batched(self, fn: Callable, images, batch_size: int) -> list:
        return [
            fn(self.prepare_images(images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]

    @torch.no_grad()
    def decode(
        self,
        units: torch.Tensor,
        steps: int | None = None,
        *,
        eta: float | None = None,
        seed: int = 0,
        output_type: str = "np",
        progress: Callable | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Images from units (B, N, D): uint8 (B, H, W, 3), or with ``output_type="pt"``
        float (B, 3, H, W) in [-1, 1]. ``steps``, ``eta``, ``seed``: the sampler's, for
        models that sample."""
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        with self._eval_mode():
            x = self._generate(units.to(self.device), steps, eta, seed, progress)
        return to_uint8(x) if output_type == "np" else x

    def _generate(
        self, units: torch.Tensor, steps: int | None, eta: float | None, seed: int,
        progress: Callable | None,
    ) -> torch.Tensor:  # fmt: skip
        """Float images (B, 3, H, W) in [-1, 1] from units on the model's device."""
        raise NotImplementedError

    def reconstruct(
        self, images: np.ndarray | torch.Tensor, steps: int | None = None, **kwargs
    ) -> np.ndarray | torch.Tensor:
        """Encode then regenerate: what the units alone preserve of each image."""
        return self.decode(self.encode(images), steps, **kwargs)

    def swap(
        self,
        images_a: np.ndarray | torch.Tensor,
        images_b: np.ndarray | torch.Tensor,
        unit: int,
        steps: int | None = None,
        **kwargs,
    ) -> np.ndarray | torch.Tensor:
        """Latent interchange: the units of ``images_a`` with unit ``unit`` taken from
        ``images_b`` (row by row), regenerated."""
        n_units = self.n_units
        if not 0 <= unit < n_units:
            raise ValueError(f"unit must be in [0, {n_units}), got {unit}")
        if len(images_a) != len(images_b):
            raise ValueError(
                f"images_a and images_b differ in length: {len(images_a)} vs {len(images_b)}"
            )
        units = self.encode(images_a)
        units[:, unit] = self.encode(images_b)[:, unit]
        return self.decode(units, steps, **kwargs)

    # -- persistence ----------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """``config.yaml`` + ``model.safetensors`` (the U-Net holds its EMA weights when
        the model came from a run's checkpoint); load with ``from_pretrained``.
        ``dtype=torch.float16`` halves the file; weights load back as float32."""
        directory = Path(directory)
        refuse_package_write(directory, "a model")
        directory.mkdir(parents=True, exist_ok=True)
        save_config(self.config, directory / "config.yaml")
        tensors = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
            .detach().cpu().contiguous()
            for k, v in self.state_dict().items()
        }  # fmt: skip
        record = {
            "step": self.provenance.get("step"),
            "trained_in": self.provenance.get("path"),
            "saved_with": __version__,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = directory / f".{WEIGHTS}.tmp"
        metadata = {"format": "factordiff", PROVENANCE_KEY: json.dumps(record)}
        save_file(tensors, tmp, metadata=metadata)
        tmp.replace(directory / WEIGHTS)
        if self.anchors is not None:
            save_file(self.anchors.state_tensors(), directory / ANCHORS)
        return directory

    def load_anchors(self, directory: Path) -> None:
        """DyGA anchors from ``directory/anchors.safetensors``, if the run had any."""
        if (directory / ANCHORS).is_file():
            tensors = load_tensors(directory, ANCHORS.removesuffix(".safetensors"))
            self.set_anchors(Anchors.from_state_tensors(tensors).units)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | torch.device = "cpu", use_ema: bool = True
    ) -> ImageModel:
        """From a ``save_pretrained`` directory, a run directory (its newest checkpoint;
        the U-Net's EMA weights unless ``use_ema=False``), or a shipped model's name
        (``"quickstart"``)."""
        path = resolve_model(path)
        model = cls(load_config(path / "config.yaml"))
        if (path / WEIGHTS).is_file():
            load_into(
                model, load_tensors(path, WEIGHTS.removesuffix(".safetensors")), str(path / WEIGHTS)
            )
            model.load_anchors(path)
            ckpt = None
        else:
            ckpt = latest_checkpoint(path)
            if ckpt is None:
                raise CheckpointError(
                    f"{path} has neither {WEIGHTS} nor a complete checkpoint under checkpoints/"
                )
            load_into(model, load_tensors(ckpt, "model"), str(ckpt / "model.safetensors"))
            if use_ema and cls.loads_ema and (ckpt / "ema.safetensors").is_file():
                ema = load_tensors(ckpt, "ema")
                load_into(model.ema_module, ema, str(ckpt / "ema.safetensors"))
            model.load_anchors(ckpt)
        model.provenance = provenance(path, ckpt, model.config.to_dict())
        return model.to(device).eval()


class FactorDiffusion(ImageModel):
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
        aligned = self.anchors.align(features, record=self.training)
        if self.config.anchoring.straight_through:
            return features + (aligned - features).detach()
        return aligned

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
