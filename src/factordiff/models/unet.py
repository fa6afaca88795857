"""The denoising U-Net: LDM's ``UNetModel`` with cross-attention to the latent units.

Built from diffusers' blocks (``ResnetBlock2D`` with scale-shift time conditioning and
resblock up/down sampling, ``Transformer2DModel`` = self-attention + cross-attention +
feed-forward) but with the forward pass written out here, so that the skip features
are in our hands: Skip Dropout (DyGA paper) drops them before they are concatenated.

Layout, as in the EncDiff configs: per level ``num_res_blocks`` ResBlocks, each followed by
a transformer where the downsampling factor is in ``attention_resolutions``; a ResBlock
with ``down=True`` between levels; middle ResBlock-transformer-ResBlock; the decoder
mirrors it with ``num_res_blocks + 1`` blocks per level, each eating one skip.
Keys and values of cross-attention come from the N unit tokens; no positional
embedding is added to them, so the units are an unordered set to the U-Net.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn
from torch.nn import functional as F

from factordiff.models.network import Network


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 as in LDM, fewer when the width is small or not divisible."""
    return math.gcd(32, channels)


class CpuUpcastAttnProcessor:
    """Scaled dot-product attention whose core runs in fp32 on the CPU under autocast.

    Why: the published U-Net has 8 heads of 8 channels at 16x16 (256 tokens). On the CPU,
    PyTorch's bf16 flash-attention kernel is 2.7x slower than fp32 for its backward at that
    head size (benchmarks/train_throughput.py profiles it), while the projections around it
    gain from bf16. Elsewhere (GPUs, fp32 training) it is plain SDPA in the input dtype.
    Supports what ``Transformer2DModel`` asks of a processor: self- or cross-attention
    without masks, residuals or norms inside the attention module.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("CpuUpcastAttnProcessor does not take attention masks")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        batch, length, _ = q.shape
        q, k, v = (a.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for a in (q, k, v))
        dtype = q.dtype
        if q.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
            out = out.to(dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, length, -1)
        return attn.to_out[1](attn.to_out[0](out))


class SkipDropout(nn.Module):
    """Inverted dropout of whole skip channels: mask (B, C, 1, 1), scale 1 / (1 - p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"skip dropout rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], x.shape[1], 1, 1, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Level(nn.Module):
    """A ResBlock optionally followed by a transformer; the unit of both U-Net halves."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        temb: int,
        attn: bool,
        heads: int,
        context_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.res = ResnetBlock2D(
            in_channels=c_in, out_channels=c_out, temb_channels=temb, groups=_groups(c_in),
            groups_out=_groups(c_out), dropout=dropout, time_embedding_norm="scale_shift",
        )  # fmt: skip
        self.attn = (
            Transformer2DModel(
                num_attention_heads=heads,
                attention_head_dim=c_out // heads,
                in_channels=c_out,
                cross_attention_dim=context_dim,
                norm_num_groups=_groups(c_out),
            )  # fmt: skip
            if attn
            else None
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.res(h, temb)
        if self.attn is not None:
            h = self.attn(h, encoder_hidden_states=context, return_dict=False)[0]
        return h


def _resample(c: int, temb: int, dropout: float, *, down: bool) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=c, out_channels=c, temb_channels=temb, groups=_groups(c), dropout=dropout,
        time_embedding_norm="scale_shift", down=down, up=not down,
    )  # fmt: skip


class UNet(Network):
    """epsilon(x_t, t, tokens): (B, C, H, W), (B,), (B, N, D) -> (B, C, H, W)."""

    @register_to_config
    def __init__(
        self,
        *,
        in_channels: int = 3,
        context_dim: int = 16,
        model_channels: int = 64,
        channel_mult: tuple[int, ...] | list[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] | list[int] = (1, 2, 4),
        num_heads: int = 8,
        dropout: float = 0.0,
        skip_dropout: float = 0.0,
        # downsampling factors whose skips Skip Dropout drops (the config's default); empty or
        # None: every skip
        skip_dropout_resolutions: tuple[int, ...] | list[int] | None = (1, 2),
    ) -> None:
        super().__init__()
        mc = model_channels
        if any((mc * m) % num_heads for m in channel_mult):
            raise ValueError(
                f"every level width ({mc} x {list(channel_mult)}) must divide by {num_heads} heads"
            )
        temb = 4 * mc
        self.time_proj = Timesteps(mc, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(mc, temb)
        self.conv_in = nn.Conv2d(in_channels, mc, 3, padding=1)
        self.skip_drop = SkipDropout(skip_dropout)  # not `skip_dropout`: that is a config key
        self.levels = len(channel_mult)

        self.down = nn.ModuleList()
        skips: list[tuple[int, int]] = [(mc, 1)]  # (channels, downsampling factor) of each skip
        c, ds = mc, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                attn = ds in attention_resolutions
                self.down.append(_Level(c, mc * mult, temb, attn, num_heads, context_dim, dropout))
                c = mc * mult
                skips.append((c, ds))
            if level < self.levels - 1:
                self.down.append(_resample(c, temb, dropout, down=True))
                ds *= 2
                skips.append((c, ds))
        self.skip_factors = [f for _, f in skips]
        self.mid = nn.ModuleList([
            _Level(c, c, temb, True, num_heads, context_dim, dropout),
            _Level(c, c, temb, False, num_heads, context_dim, dropout),
        ])  # fmt: skip

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                skip_c, _ = skips.pop()
                attn = ds in attention_resolutions
                self.up.append(
                    _Level(c + skip_c, mc * mult, temb, attn, num_heads, context_dim, dropout)
                )
                c = mc * mult
                if level > 0 and i == num_res_blocks:
                    self.up.append(_resample(c, temb, dropout, down=False))
                    ds //= 2
        self.out = nn.Sequential(
            nn.GroupNorm(_groups(c), c, eps=1e-6),
            nn.SiLU(),
            nn.Conv2d(c, in_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.drop_at = set(skip_dropout_resolutions) if skip_dropout_resolutions else None
        for module in self.modules():
            if isinstance(module, Attention):
                plain = (
                    module.group_norm is None and module.spatial_norm is None
                    and module.norm_cross is None and getattr(module, "norm_q", None) is None
                    and not module.residual_connection and module.rescale_output_factor == 1.0
                )  # fmt: skip
                assert plain, "CpuUpcastAttnProcessor covers plain attention modules only"
                module.set_processor(CpuUpcastAttnProcessor())

    def _drop(self, skip: torch.Tensor, factor: int) -> torch.Tensor:
        if self.drop_at is None or factor in self.drop_at:
            return self.skip_drop(skip)
        return skip

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        temb = self.time_embed(self.time_proj(t).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h, temb, context) if isinstance(block, _Level) else block(h, temb)
            hs.append(h)
        h = self.mid[0](h, temb, context)
        h = self.mid[1](h, temb, context)
        factors = list(self.skip_factors)
        for block in self.up:
            if isinstance(block, _Level):
                h = torch.cat([h, self._drop(hs.pop(), factors.pop())], dim=1)
                h = block(h, temb, context)
            else:
                h = block(h, temb)
        return self.out(h)
