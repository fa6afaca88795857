"""The optimiser and its schedule: AdamW (fused where the device has it), the learning
rate's warm-up and decay, and ``torch.compile`` with an eager fallback."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from factordiff.config import TrainConfig


def lr_multiplier(step: int, t: TrainConfig) -> float:
    """Linear warm-up to the base rate, then constant (published) or a cosine to 0 at
    ``max_steps`` (a fixed short budget ends on small steps instead of mid-stride)."""
    warmup = max(1, t.warmup_steps)
    if step < warmup or t.lr_schedule == "constant":
        return min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step - warmup) / max(1, t.max_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_adamw(
    params: list[nn.Parameter], lr: float, weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:  # fmt: skip
    """AdamW with the fused kernel where the device has one (4x faster step on this CPU)."""
    try:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device without a fused AdamW kernel
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


class CompiledWithFallback:
    """``torch.compile(module)`` that falls back to eager when compilation fails.

    Compilation happens at the first call and needs a working C++ (CPU) or Triton (GPU)
    toolchain; a machine without one should train eagerly with a warning, not crash.
    """

    def __init__(self, module: nn.Module) -> None:
        self.eager = module
        self.compiled: Callable | None = torch.compile(module)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 -- any compiler failure: train eagerly
                warnings.warn(
                    f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                    "training eagerly. Set train.compile=false to skip the attempt.",
                    stacklevel=2,
                )
                self.compiled = None
        return self.eager(*args)
