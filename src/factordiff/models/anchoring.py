"""Dynamic Gaussian Anchoring (DyGA, arXiv 2410.23820): pull each latent unit toward the
centre of the density mode it belongs to.

Fit (``fit_anchors``), one mixture per unit on the units of (a subsample of) the training
set, in normalised coordinates:

1. normalise each unit's features to [0, 1] per dimension with the min / max over the fit
   data; the same statistics are stored and used when aligning (the official code mixes
   batch statistics at train time with dataset statistics at fit time -- we do not);
2. fit ``n_init`` HDDC Gaussians (``em_iters`` EM iterations, k-means start);
3. split: a Gaussian whose members (hard assignment) lie farther than ``split_threshold``
   from its mean on average is replaced by a 2-component fit of its members; up to
   ``max_splits`` rounds and ``max_components`` Gaussians. Components are rebuilt from the
   kept partition each round, so no index shifts while deleting (a bug of the official code);
4. filter: drop Gaussians with fewer than ``min_weight`` responsible points; refit.

Align (``Anchors.align``): anchor = mean of the most responsible Gaussian (``hard``) or a
Gumbel-softmax mix of the means (``gumbel``, temperature ``tau``);
``c <- lam * anchor + (1 - lam) * c`` with lam from ``lam_rule``:

* ``spread`` (default): ``lam = lam0 * exp(-||c - anchor|| / s)`` per token, with ``s`` the
  unit's spread (RMS distance of its fit features to their mean, from the mixture), in
  the features' own coordinates. The paper's intent -- lam0 damped by how far the feature
  is from its anchor -- without dividing by coordinates. (Not in the min-max normalised
  coordinates: a feature dimension that barely varied at the fit has a span near 0 there,
  and any later drift in it makes every normalised distance huge and lam 0.)
* ``official``: the released code's ``lam = lam0 * exp(-mean |(c - anchor) / (c + 1e-6)|)``
  (one lam per unit and batch). It divides by single coordinates: on ReLU tokens (many
  exact zeros) one zero against a non-zero anchor coordinate adds |anchor| x 1e6 to the
  mean and lam underflows to 0 -- kept only to reproduce that code (docs/dyga.md).

or a fixed ``lam``. With ``record=True`` (training) ``align`` accumulates what it did --
per unit the mean lam, the move |aligned - raw| relative to the distance to the anchor,
and the share of exactly-zero token entries -- for ``pop_stats`` to log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from factordiff.models.hddc import MixtureParams, costs, fit_mixtures

PARAM_FIELDS = tuple(f.name for f in fields(MixtureParams))


@dataclass
class UnitMixture:
    """One unit's anchors: the fitted mixture in normalised coordinates."""

    params: MixtureParams  # batch dimension 1
    low: torch.Tensor  # (D,) feature minimum of the fit data
    span: torch.Tensor  # (D,) max - min (floored)
    _placed: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    splits: int = field(default=0, compare=False)  # Gaussians split at the fit (not saved)
    filtered: int = field(default=0, compare=False)  # Gaussians dropped at the fit (not saved)

    @property
    def n_components(self) -> int:
        return int(self.params.weights.shape[-1])

    @property
    def means(self) -> torch.Tensor:
        """Anchor positions in feature (not normalised) coordinates: (K, D)."""
        return self.params.means[0] * self.span + self.low

    def _on(
        self, device: torch.device
    ) -> tuple[MixtureParams, torch.Tensor, torch.Tensor, torch.Tensor]:
        """float64 parameters, low, span and anchor positions on ``device``, copied once:
        alignment runs at every training step."""
        key = str(device)
        if key not in self._placed:
            p = self.params
            params = MixtureParams(
                *(
                    t.to(device, torch.float64)
                    for t in (p.weights, p.means, p.basis, p.signal, p.noise)
                ),
                p.dims.to(device),
            )
            low, span = self.low.to(device, torch.float64), self.span.to(device, torch.float64)
            self._placed[key] = (params, low, span, params.means[0] * span + low)
        return self._placed[key]

    @property
    def spread(self) -> float:
        """The unit's spread in feature coordinates: the RMS distance of the mixture's
        points to their overall mean, sqrt(sum_k pi_k (tr Sigma_k + |mu_k - mu|^2)) with the
        mixture mapped back from normalised coordinates (x = low + span * xn)."""
        if "spread" not in self._placed:
            p = self.params
            dim = p.means.shape[-1]
            mask = torch.arange(dim) < p.dims[0].unsqueeze(-1)  # (K, p) signal directions
            eig = torch.where(mask, p.signal[0], p.noise[0][:, None]).clamp_min(0)  # (K, p)
            diag = ((p.basis[0] ** 2) * eig[:, None, :]).sum(-1)  # (K, p): Sigma_k's diagonal
            sq = self.span.to(diag.dtype) ** 2
            w = p.weights[0] / p.weights[0].sum()
            centre = (w[:, None] * p.means[0]).sum(0)
            between = (((p.means[0] - centre) ** 2) * sq).sum(-1)
            total = (w * ((diag * sq).sum(-1) + between)).sum()
            self._placed["spread"] = max(float(total.sqrt()), 1e-12)
        return self._placed["spread"]

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log(pi_k N_k(x)) of features x (n, D) under this mixture: (n, K)."""
        params, low, span, _ = self._on(x.device)
        return -0.5 * costs(_normalise(x.double(), low, span)[None], params)[0]

    def anchor_positions(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self._on(device)[3].to(dtype)


def _normalise(x: torch.Tensor, low: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    return (x - low) / span


def _member_spread(x: torch.Tensor, labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance of each component's hard members to its mean: (K,)."""
    dist = (x - means[labels]).norm(dim=-1)
    k = means.shape[0]
    total = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, labels, dist)
    count = torch.bincount(labels, minlength=k).to(x.dtype)
    return total / count.clamp_min(1)


def _fit(x: torch.Tensor, labels: torch.Tensor, k: int, iters: int, g: torch.Generator):
    return fit_mixtures(x[None], k, init=labels[None], max_iter=iters, tol=0.0, generator=g)


def fit_unit(
    x: torch.Tensor,
    *,
    n_init: int = 8,
    em_iters: int = 30,
    split_threshold: float = 0.5,
    max_splits: int = 3,
    max_components: int = 32,
    min_weight: float = 10.0,
    generator: torch.Generator,
    previous: UnitMixture | None = None,
) -> UnitMixture:
    """Anchors of one unit from its features x (n, D). ``previous`` (warm start): begin from
    the partition the previous anchors give the new features instead of k-means."""
    x = x.double()
    low = x.amin(0)
    span = (x.amax(0) - low).clamp_min(1e-6)
    xn = _normalise(x, low, span)
    if previous is None:
        start, k0 = "kmeans", n_init
    else:
        start, k0 = previous.log_joint(x).argmax(-1)[None], previous.n_components
    res = fit_mixtures(xn[None], k0, init=start, max_iter=em_iters, tol=0.0, generator=generator)
    labels = res.log_resp[0].argmax(-1)
    n_split = 0
    for _ in range(max_splits):
        k = res.params.weights.shape[-1]
        spread = _member_spread(xn, labels, res.params.means[0])
        wide = [c for c in torch.argsort(spread, descending=True).tolist()
                if spread[c] > split_threshold and int((labels == c).sum()) >= 4]  # fmt: skip
        wide = wide[: max_components - k]
        if not wide:
            break
        n_split += len(wide)
        new_labels = labels.clone()
        next_id = k
        for c in wide:  # split c: its members get labels c and next_id from a 2-component fit
            members = (labels == c).nonzero().squeeze(-1)
            sub = fit_mixtures(xn[members][None], 2, init="kmeans", max_iter=em_iters, tol=0.0,
                               generator=generator)  # fmt: skip
            side = sub.log_resp[0].argmax(-1)
            new_labels[members[side == 1]] = next_id
            next_id += 1
        res = _fit(xn, new_labels, next_id, em_iters, generator)
        labels = res.log_resp[0].argmax(-1)
    weight = res.log_resp[0].exp().sum(0)
    keep = (weight >= min_weight).nonzero().squeeze(-1)
    if len(keep) == 0:
        keep = weight.argmax()[None]
    if len(keep) < weight.shape[0]:  # filter, then refit from the kept components' partition
        kept_resp = res.log_resp[0][:, keep]
        relabel = kept_resp.argmax(-1)
        res = _fit(xn, relabel, len(keep), em_iters, generator)
    n_filtered = weight.shape[0] - len(keep)
    return UnitMixture(res.params, low, span, splits=n_split, filtered=n_filtered)


LAM_RULES = ("spread", "official")


@dataclass
class Anchors:
    units: list[UnitMixture]
    strength: float = 0.1  # lam0
    mode: str = "hard"  # hard | gumbel
    tau: float = 1.0
    fixed_lam: float | None = None
    lam_rule: str = "spread"  # spread | official (see the module docstring)
    _stats: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lam_rule not in LAM_RULES:
            raise ValueError(f"lam_rule must be one of {LAM_RULES}, got {self.lam_rule!r}")

    def _lam(self, mix: UnitMixture, c: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """lam for tokens c (B, D) and their anchors: (B, 1) or a scalar."""
        if self.fixed_lam is not None:
            return torch.as_tensor(self.fixed_lam, dtype=c.dtype, device=c.device)
        if self.lam_rule == "official":
            rel = ((c - anchor) / (c + 1e-6)).abs().mean()
            return self.strength * torch.exp(-rel)
        dist = (c.detach() - anchor.detach()).double().norm(dim=-1, keepdim=True)
        return (self.strength * torch.exp(-dist / mix.spread)).to(c.dtype)

    def align(
        self,
        tokens: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        record: bool = False,
    ) -> torch.Tensor:
        """Shift each unit's tokens (B, N, D) toward its anchor; gradients flow through c
        (the ``spread`` lam is a weight: no gradient through it). ``record``: accumulate
        what the pull did for ``pop_stats``."""
        out = []
        for u, mix in enumerate(self.units):
            c = tokens[:, u]
            log_joint = mix.log_joint(c.detach())  # (B, K)
            means = mix.anchor_positions(c.device, c.dtype)
            if self.mode == "hard":
                anchor = means[log_joint.argmax(-1)]
            else:
                gumbel = -torch.log(
                    -torch.log(torch.rand(log_joint.shape, generator=generator).clamp(1e-20, 1))
                )
                weights = torch.softmax((log_joint + gumbel.to(log_joint.device)) / self.tau, -1)
                anchor = weights.to(c.dtype) @ means
            lam = self._lam(mix, c, anchor)
            aligned = lam * anchor + (1 - lam) * c
            if record:
                self._record(u, c.detach(), anchor.detach(), aligned.detach(), lam.detach())
            out.append(aligned)
        return torch.stack(out, dim=1)

    def _record(self, u, c, anchor, aligned, lam) -> None:
        s = self._stats.setdefault(u, torch.zeros(6, dtype=torch.float64))
        s += torch.tensor([
            float(lam.double().mean()),
            float((aligned - c).double().norm(dim=-1).sum()),
            float((anchor - c).double().norm(dim=-1).sum()),
            float((c == 0).sum()),
            float(c.numel()),
            1.0,
        ], dtype=torch.float64)  # fmt: skip

    def pop_stats(self) -> dict[str, list[float]] | None:
        """Per unit, over the ``align(record=True)`` calls since the last pop: mean lam
        (``anchor_lam``), mean move / mean distance to the anchor (``anchor_move``), share
        of exactly-zero token entries (``token_zero_share``). None when nothing was recorded."""
        if not self._stats:
            return None
        units = sorted(self._stats)
        st = [self._stats[u] for u in units]
        self._stats = {}
        return {
            "anchor_lam": [round(float(s[0] / s[5]), 6) for s in st],
            "anchor_move": [round(float(s[1] / s[2]) if s[2] > 0 else 0.0, 6) for s in st],
            "token_zero_share": [round(float(s[3] / s[4]), 6) for s in st],
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors (components differ per unit)."""
        t: dict[str, torch.Tensor] = {}
        for u, mix in enumerate(self.units):
            p = mix.params
            for name in PARAM_FIELDS:
                t[f"unit{u}.{name}"] = getattr(p, name)
            t[f"unit{u}.low"], t[f"unit{u}.span"] = mix.low, mix.span
        return t

    @classmethod
    def from_section(cls, units: list[UnitMixture], section: Any) -> Anchors:
        """Fitted mixtures with the alignment options of the ``anchoring`` config section:
        strength (lam0), mode, tau, fixed lam, lam rule."""
        return cls(units, strength=section.strength, mode=section.mode, tau=section.tau,
                   fixed_lam=section.fixed_lam, lam_rule=section.lam_rule)  # fmt: skip

    @classmethod
    def from_state_tensors(cls, t: dict[str, torch.Tensor], **options) -> Anchors:
        n_units = len({k.split(".")[0] for k in t})
        units = []
        for u in range(n_units):
            params = {n: t[f"unit{u}.{n}"] for n in PARAM_FIELDS}
            units.append(
                UnitMixture(MixtureParams(**params), t[f"unit{u}.low"], t[f"unit{u}.span"])
            )
        return cls(units, **options)


def fit_anchors(
    features: torch.Tensor,
    *,
    seed: int = 0,
    max_points: int = 100_000,
    previous: list[UnitMixture] | None = None,
    **fit_options,
) -> list[UnitMixture]:
    """One ``UnitMixture`` per unit of features (n, N, D); at most ``max_points`` (seeded);
    ``previous``: warm-start each unit from its previous anchors."""
    g = torch.Generator().manual_seed(seed)
    n = features.shape[0]
    if n > max_points:
        features = features[torch.randperm(n, generator=g)[:max_points]]
    # on the features' device: a GPU run fits its anchors on the GPU
    return [
        fit_unit(
            features[:, u], generator=g, previous=previous[u] if previous else None, **fit_options
        )
        for u in range(features.shape[1])
    ]
