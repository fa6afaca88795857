"""Cross-attention maps: which image regions attend to each latent unit's token.

The EncDiff paper reads its time-varying bottleneck from these views: at large t the
U-Net attends to units for coarse factors, at small t to fine ones. For one image and a
few timesteps, the image's latent is noised to x_t (fixed noise), the U-Net runs once, and
every cross-attention layer's probabilities (query pixel -> unit token) are averaged over
heads, upsampled to the image size and averaged over layers.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor

from factordiff.viz.figure import plt, save_figure


@contextmanager
def recording_cross_attention(unet: torch.nn.Module):
    """Collect the probabilities of every cross-attention layer (``attn2``) of ``unet``:
    a list of (B * heads, H*W, N) tensors, one per layer call. The layers run with
    diffusers' plain processor (which materialises the probabilities) while recording."""
    store: list[torch.Tensor] = []
    layers = [m for name, m in unet.named_modules() if isinstance(m, Attention)
              and name.endswith("attn2")]  # fmt: skip
    saved = [(m, m.processor) for m in layers]

    def record(module: Attention):
        original = module.get_attention_scores

        def scores(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)
            store.append(probs.detach().float())
            return probs

        return scores

    for m in layers:
        m.set_processor(AttnProcessor())
        m.get_attention_scores = record(m)
    try:
        yield store
    finally:
        for m, processor in saved:
            m.set_processor(processor)
            del m.get_attention_scores  # back to the class method


@torch.no_grad()
def cross_attention_maps(
    model, image: np.ndarray, timesteps: tuple[int, ...] = (900, 500, 100), seed: int = 0
) -> np.ndarray:
    """(len(timesteps), N, H, W) attention of the image's pixels to each unit, divided by
    the largest value at that timestep (so maps of one row compare; a pixel's attention
    sums to 1 over units before the scaling)."""
    with model._eval_mode():
        x = model.prepare_images(image[None])
        z0 = model.first_stage.encode(x)
        tokens = model.units(x)
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
        noise = noise.to(z0.device)
        size = model.image_size
        out = []
        for t in timesteps:
            tt = torch.tensor([t], device=z0.device)
            zt = model.noise_scheduler.add_noise(z0, noise, tt)
            with recording_cross_attention(model.unet) as store:
                model.unet(zt, tt, tokens)
            maps = []
            for probs in store:
                n_heads = probs.shape[0]  # batch 1: B * heads
                side = int(round(probs.shape[1] ** 0.5))
                m = probs.reshape(n_heads, side, side, -1).mean(0).permute(2, 0, 1)
                maps.append(F.interpolate(m[None], size=(size, size), mode="bilinear")[0])
            avg = torch.stack(maps).mean(0)  # (N, H, W)
            avg = avg / avg.amax().clamp_min(1e-12)  # one scale per timestep: units compare
            out.append(avg.cpu().numpy())
    return np.stack(out)


def save_attention_figure(
    model, image: np.ndarray, out: str | Path, timesteps: tuple[int, ...] = (900, 500, 100)
) -> Path:
    """Rows: timesteps; columns: the image, then each unit's map over the image."""
    maps = cross_attention_maps(model, image, timesteps)
    n_t, n_units = maps.shape[:2]
    shown = image if image.shape[0] == maps.shape[-1] else None
    fig, axes = plt.subplots(n_t, n_units + 1, figsize=(0.95 * (n_units + 1) + 0.8, 1.0 * n_t),
                             squeeze=False)  # fmt: skip
    for r, t in enumerate(timesteps):
        axes[r, 0].imshow(image if shown is None else shown)
        axes[r, 0].set_ylabel(f"t={t}", rotation=0, ha="right", va="center", fontsize=8)
        for k in range(n_units):
            ax = axes[r, k + 1]
            if shown is not None:
                ax.imshow(shown, alpha=0.35)
            ax.imshow(maps[r, k], cmap="magma", alpha=0.75 if shown is not None else 1.0,
                      vmin=0, vmax=1)  # fmt: skip
            if r == 0:
                ax.set_title(f"unit {k}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("cross-attention of pixels to each unit's token", fontsize=9)
    return save_figure(fig, out, dpi=90)
