"""``ImageModel``: what every trainable model family shares -- images in, latent units out
and back, persistence (``save_pretrained`` / ``from_pretrained``).

A family is one file in this package (``encdiff.py``, ``vae.py``) plus one row of
``families.FAMILIES``. It owns its training step: ``training_inputs`` draws what one
micro-batch's loss needs (EncDiff: diffusion noise and timesteps; a VAE: nothing), ``forward``
is the loss, ``optimizer_groups`` says which parameters each optimiser trains (FactorVAE's
discriminator has its own Adam); the loop (``factordiff.training.loop``) only calls them.
 ``from_pretrained`` of a family's class refuses a folder saved by
another family, ``fd.load_pretrained`` picks the class the saved config names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from factordiff._version import __version__
from factordiff.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_into,
    load_tensors,
)
from factordiff.config import Config, load_config, save_config
from factordiff.data.loader import to_float, to_uint8
from factordiff.data.registry import get_spec
from factordiff.models.anchoring import Anchors
from factordiff.shipped import PROVENANCE_KEY, provenance, refuse_package_write, resolve_model

WEIGHTS = "model.safetensors"
ANCHORS = "anchors.safetensors"


def resolve_image_size(cfg: Config) -> int:
    size = cfg.data.image_size or get_spec(cfg.data.name).image_size
    if size is None:
        raise CheckpointError(f"data.image_size must be set for dataset {cfg.data.name!r}")
    return size


@dataclass(frozen=True)
class ParamGroup:
    """The parameters one optimiser trains, with the optimiser's settings where the family's
    reference sets its own (``weight_decay=None``: the run's ``train.weight_decay``)."""

    name: str
    params: list[nn.Parameter]
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float | None = None


class ImageModel(nn.Module):
    """What every trainable model of factordiff shares: images in, latent units (B, N, D)
    out and back, persistence. ``FactorDiffusion`` and the VAE baselines build on it."""

    #: ``from_pretrained`` of a run directory loads the EMA weights into ``ema_module``
    loads_ema = True
    #: the ``model.family`` values this class trains and loads (``families.FAMILIES``)
    families: tuple[str, ...] = ()

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

    # -- training -------------------------------------------------------------------
    def training_inputs(
        self, x: torch.Tensor, z0: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor | None, ...]:
        """``forward``'s arguments for one micro-batch of images ``x`` (``z0``: their cached
        first-stage latents or None). Draws that must replay bitwise on resume come from
        ``generator``, seeded per (seed, step, chunk) by the loop."""
        return (x,)

    def optimizer_groups(self) -> list[ParamGroup]:
        """One optimiser per group; the first is the model's (its learning rate is logged)."""
        return [ParamGroup("model", [p for p in self.parameters() if p.requires_grad])]

    def pop_loss_terms(self) -> dict[str, torch.Tensor]:
        """Each term of the loss, averaged over the micro-batches ``forward`` saw since the
        last call (detached fp32 scalars), keyed ``loss_<term>``: the loop averages them over
        the steps it applies and logs them beside the loss. Empty for a one-term loss."""
        return {}

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
        config = load_config(path / "config.yaml")
        if config.model.family not in cls.families:
            raise CheckpointError(
                f"{path} holds a {config.model.family!r} model, which {cls.__name__} does not "
                f"load; fd.load_pretrained({str(path)!r}) picks the class its config names"
            )
        model = cls(config)
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
