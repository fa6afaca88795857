"""Latent-unit encoders: image -> N scalars -> N tokens (concept tokens) for cross-attention.

Two published variants share one shape contract, ``forward(x) -> (scalars (B, N),
tokens (B, N, D))``:

* ``encdiff`` (EncDiff's ``Encoder4``): four 4x4 stride-2 convs with BatchNorm + ReLU,
  two residual blocks, a linear layer to N scalars, and for each scalar its own MLP
  1 -> 64 -> 128 -> D (ELU). The N scalars are the representation the metrics use.
* ``dyga`` (the DyGA paper's feature extractor): a 7x7 conv stem, four stride-2 convs
  (official widths 64 -> 128 -> 256 -> 256 -> 256: ``conv_widths``; one ``channels`` width
  when not given), fully connected layers (4096 -> 256 at 64x64) to N scalars, then
  per-unit MLPs 1 -> 256 -> 512 -> D with a final ReLU. Its units are vectors; the metrics
  reduce each to one number by PCA.

Deviations of ``encdiff`` from the official ``Encoder4`` (kept so that trained models,
the shipped quick-start one included, load): the official code has no ReLU after the
third conv, BN + ReLU between the two residual blocks, no BN at the end of the residual
branch, and no final ReLU (docs/dyga.md, "Fidelity").

The per-unit MLPs are batched (one einsum per layer over all units) instead of N small
modules: the same function, N times fewer kernel launches.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn import functional as F

from factordiff.models.network import Network


class ResidualBlock(nn.Module):
    """ReLU -> 3x3 conv -> BN -> ReLU -> 1x1 conv -> BN, added to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PerUnitMLP(nn.Module):
    """N independent MLPs 1 -> hidden... -> D, evaluated together.

    Layer weights are (N, d_in, d_out); ``act`` follows every layer but the last, and
    the last too when ``final_act`` (DyGA ends with a ReLU).
    """

    def __init__(
        self, n_units: int, sizes: list[int], act: str = "elu", final_act: bool = False
    ) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per unit
            self.weights.append(
                nn.Parameter(torch.empty(n_units, d_in, d_out).uniform_(-bound, bound))
            )
            self.biases.append(nn.Parameter(torch.empty(n_units, d_out).uniform_(-bound, bound)))
        self.act = {"elu": F.elu, "relu": F.relu}[act]
        self.final_act = final_act

    def forward(self, scalars: torch.Tensor) -> torch.Tensor:
        h = scalars.unsqueeze(-1)  # (B, N, 1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.einsum("bni,nio->bno", h, w) + b
            if i < last or self.final_act:
                h = self.act(h)
        return h


def fsq(scalars: torch.Tensor, levels: int) -> torch.Tensor:
    """Finite scalar quantisation (Mentzer et al. 2023) of each unit to ``levels`` values.

    An alternative to DyGA's anchors that fixes the number of values per unit in advance:
    tanh bounds the scalar to (-(L-1)/2, (L-1)/2), rounding (to integers for odd L, to
    half-integers for even L, so the grid is symmetric about 0) with a straight-through
    gradient picks one of L values, and the result is rescaled to [-1, 1].
    """
    half = (levels - 1) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    bounded = torch.tanh(scalars) * half * (1 - 1e-4)
    rounded = torch.round(bounded - offset) + offset
    return (rounded + (bounded - bounded.detach())) / half  # exact values, tanh's gradient


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class UnitEncoder(Network):
    """Image in [-1, 1] (B, 3, H, W) -> (scalars (B, N), tokens (B, N, D)).

    With ``fsq_levels`` > 0 the scalars are quantised by :func:`fsq` before the per-unit
    MLPs, so the tokens and the representation carry the quantised values.
    """

    @register_to_config
    def __init__(
        self,
        *,
        kind: str = "encdiff",
        image_size: int = 64,
        in_channels: int = 3,
        n_units: int = 20,
        unit_dim: int = 16,
        channels: int = 128,
        mlp_hidden: tuple[int, ...] | list[int] = (64, 128),
        fc_hidden: tuple[int, ...] | list[int] = (),
        fsq_levels: int = 0,
        conv_widths: tuple[int, ...] | list[int] = (),
    ) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"the unit encoder needs image_size divisible by 16, got {image_size}")
        self.kind, self.n_units, self.unit_dim = kind, n_units, unit_dim
        self.fsq_levels = fsq_levels
        n_convs = 5 if kind == "dyga" else 4
        widths = list(conv_widths) or [channels] * n_convs
        if len(widths) != n_convs:
            raise ValueError(f"conv_widths of the {kind} encoder: {n_convs} widths, got {widths}")
        if kind == "encdiff" and len(set(widths)) > 1:
            raise ValueError("the encdiff encoder has one width (its residual blocks keep it)")
        layers: list[nn.Module] = []
        c = in_channels
        if kind == "dyga":  # 7x7 stem at full resolution before the strided convs
            layers += _conv_bn_relu(c, widths[0], 7, 1, 3)
            c, widths = widths[0], widths[1:]
        elif kind != "encdiff":
            raise ValueError(f"unknown encoder kind {kind!r}; expected 'encdiff' or 'dyga'")
        for width in widths:
            layers += _conv_bn_relu(c, width, 4, 2, 1)
            c = width
        if kind == "encdiff":
            layers += [ResidualBlock(c), ResidualBlock(c), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = c * (image_size // 16) ** 2
        head: list[nn.Module] = []
        for width in fc_hidden:
            head += [nn.Linear(flat, width), nn.ReLU()]
            flat = width
        head.append(nn.Linear(flat, n_units))
        self.to_scalars = nn.Sequential(*head)
        self.to_tokens = PerUnitMLP(
            n_units,
            [1, *mlp_hidden, unit_dim],
            act="relu" if kind == "dyga" else "elu",
            final_act=kind == "dyga",
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scalars = self.to_scalars(self.features(x))
        if self.fsq_levels:
            scalars = fsq(scalars, self.fsq_levels)
        return scalars, self.to_tokens(scalars)
