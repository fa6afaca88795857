"""Dynamic Gaussian Anchoring (DyGA, arXiv 2410.23820): pull each latent unit toward the
centre of the density mode it belongs to.

This module reads the ``anchoring`` config section's fit and pull options
(``fit_from_section``, ``Anchors.from_section``); training reads only when to refit
(``training/dyga.py``), the model only which features anchoring acts on (``space``).

Fit (``fit_anchors``), one mixture per unit on the units of (a subsample of) the training
set, in normalised coordinates:

1. normalise each unit's features to [0, 1] per dimension with the min / max over the fit
   data; the same statistics are stored and used when aligning (the official code mixes
   batch statistics at train time with dataset statistics at fit time -- we do not);
2. fit ``n_init`` HDDC Gaussians (``em_iters`` EM iterations, k-means start);
3. change K, each change refit from the new partition.
   ``split_rule="bic"`` (default): greedy moves, each the merge of a component into its
   nearest neighbour or the split of one in two by 2-means, whichever lowers the whole
   mixture's BIC most, until none does. BIC does not depend on the features' scale, so K
   follows the modes of the unit (three modes started from K = 8 end at 3).
   ``"distance"``: the official rule, a Gaussian whose members lie farther than
   ``split_threshold`` from its mean on average (normalised coordinates) is split by a
   2-component fit of its members, up to ``max_splits`` rounds and ``max_components``.
   On trained units it never fires (K stayed 8 = ``n_init`` at every refit: docs/dyga.md).
   Components are rebuilt from the kept partition each round, so no index shifts while
   deleting (a bug of the official code);
4. filter: drop Gaussians with less than ``min_weight`` total responsibility; refit.

Features of one dimension (``anchoring.space=scalars``) take a plain Gaussian per
component: HDDC's subspaces need at least two dimensions.

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

or a fixed ``lam``. ``Anchors.pull`` is ``align`` with ``straight_through``: the forward
pass sees the aligned features, the backward pass the raw ones. With ``record=True``
(training) ``align`` accumulates what it did --
per unit the mean lam, the move |aligned - raw| relative to the distance to the anchor,
and the share of exactly-zero token entries -- for ``pop_stats`` to log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from factordiff.choices import LAM_RULES
from factordiff.models.hddc import (
    MixtureParams,
    costs,
    fit_mixtures,
    kmeans_labels,
    n_free_parameters,
)

PARAM_FIELDS = tuple(f.name for f in fields(MixtureParams))


@dataclass
class UnitMixture:
    """One unit's anchors: the fitted mixture in normalised coordinates."""

    params: MixtureParams  # batch dimension 1
    low: torch.Tensor  # (D,) feature minimum of the fit data
    span: torch.Tensor  # (D,) max - min (floored)
    _placed: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    splits: int = field(default=0, compare=False)  # Gaussians split at the fit (not saved)
    merged: int = field(default=0, compare=False)  # Gaussians merged away at the fit (not saved)
    filtered: int = field(default=0, compare=False)  # weak Gaussians dropped (not saved)

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


SPLIT_RULES = ("bic", "distance")
#: HDDC's subspace model (the DyGA paper's HDDC); one-dimensional units (anchoring.space
#: = scalars) have no subspace to find and take a plain Gaussian per component.
SUBSPACE_MODEL = "AkjBkQkDk"
#: EM iterations from a candidate partition before its BIC is compared (the kept one gets
#: the full ``em_iters``): from a good partition the likelihood settles within a few.
MOVE_ITERS = 8


def _mixture_model(x: torch.Tensor) -> str:
    return "full" if x.shape[-1] == 1 else SUBSPACE_MODEL


def _fit(x: torch.Tensor, labels: torch.Tensor, k: int, iters: int, g: torch.Generator):
    return fit_mixtures(x[None], k, _mixture_model(x), init=labels[None], max_iter=iters, tol=0.0,
                        generator=g)  # fmt: skip


def _bic(x: torch.Tensor, labels: torch.Tensor, k: int, iters: int, g: torch.Generator):
    """BIC (-2 LL + m log n, lower is better) of the k-component mixture fitted to all of x
    from the partition ``labels``, and the fit. BICs compared on the same points do not
    depend on the features' scale."""
    res = _fit(x, labels, k, iters, g)
    m = float(n_free_parameters(_mixture_model(x), x.shape[-1], res.params.dims)[0])
    return -2 * float(res.loglik[0]) + m * math.log(len(x)), res


def _candidate_moves(x, labels, means, k, g, max_components):
    """Partitions one move away: each component merged into its nearest neighbour, and each
    component with enough members split in two by 2-means. (kind, labels, K) each."""
    moves = []
    if k > 1:
        dist = torch.cdist(means, means).fill_diagonal_(float("inf"))
        for i, j in sorted({tuple(sorted((i, int(dist[i].argmin())))) for i in range(k)}):
            merged = labels.clone()
            merged[merged == j] = i
            moves.append(("merge", *_compact(merged)))
    min_members = max(8, 2 * (x.shape[-1] + 1))
    for c in range(k if k < max_components else 0):
        members = (labels == c).nonzero().squeeze(-1)
        if len(members) < min_members:
            continue
        halves = kmeans_labels(x[members][None], 2, g)[0]
        if 0 < int(halves.sum()) < len(members):
            split = labels.clone()
            split[members[halves == 1]] = k
            moves.append(("split", split, k + 1))
    return moves


def _compact(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Labels renumbered 0..K-1 (a component emptied by a merge goes)."""
    ids, compact = torch.unique(labels, return_inverse=True)
    return compact, len(ids)


def _adapt_k(x, res, iters, g, max_moves, max_components):
    """Greedy model selection: each round takes the merge or split (see
    ``_candidate_moves``) that lowers the mixture's BIC most, until none does. Candidates are
    scored after ``MOVE_ITERS`` EM iterations from their partition; the kept one is refit
    with ``iters``. Returns the fit and the numbers of splits and merges."""
    labels = res.log_resp[0].argmax(-1)
    labels, k = _compact(labels)
    best, res = _bic(x, labels, k, iters, g)
    splits = merges = 0
    for _ in range(max_moves):
        moves = _candidate_moves(x, labels, res.params.means[0], k, g, max_components)
        scored = [(_bic(x, lab, kk, MOVE_ITERS, g)[0], kind, lab, kk) for kind, lab, kk in moves]
        if not scored:
            break
        bic, kind, lab, kk = min(scored, key=lambda m: m[0])
        if bic >= best:
            break
        bic, fit = _bic(x, lab, kk, iters, g)
        if bic >= best:
            break
        best, res = bic, fit
        labels, k = _compact(res.log_resp[0].argmax(-1))
        splits, merges = splits + (kind == "split"), merges + (kind == "merge")
    return res, splits, merges


def _split_wide(x, labels, means, k, iters, g, threshold, max_components):
    """The official rule: split components whose members lie farther than ``threshold``
    (normalised coordinates) from their mean on average, by a 2-component fit."""
    spread = _member_spread(x, labels, means)
    wide = [c for c in torch.argsort(spread, descending=True).tolist()
            if spread[c] > threshold and int((labels == c).sum()) >= 4]  # fmt: skip
    wide = wide[: max_components - k]
    new_labels, next_id = labels.clone(), k
    for c in wide:  # split c: its members get labels c and next_id from a 2-component fit
        members = (labels == c).nonzero().squeeze(-1)
        sub = fit_mixtures(x[members][None], 2, _mixture_model(x), init="kmeans",
                           max_iter=iters, tol=0.0, generator=g)  # fmt: skip
        side = sub.log_resp[0].argmax(-1)
        new_labels[members[side == 1]] = next_id
        next_id += 1
    return new_labels, len(wide)


def fit_unit(
    x: torch.Tensor,
    *,
    n_init: int = 8,
    em_iters: int = 30,
    split_rule: str = "bic",
    split_threshold: float = 0.5,
    max_splits: int = 3,
    max_moves: int = 16,
    max_components: int = 32,
    min_weight: float = 10.0,
    generator: torch.Generator,
    previous: UnitMixture | None = None,
) -> UnitMixture:
    """Anchors of one unit from its features x (n, D). ``previous`` (warm start): begin from
    the partition the previous anchors give the new features instead of k-means.

    ``split_rule="bic"``: up to ``max_moves`` greedy moves, each the merge of a component
    into its nearest neighbour or the split of one in two that lowers the mixture's BIC most
    -- free of the features' scale, so K follows the modes (three modes started from K = 8
    end at 3, one mode made of two is split). ``"distance"``: the official rule, up to
    ``max_splits`` rounds splitting components whose mean member distance exceeds
    ``split_threshold`` in normalised coordinates (it never fires on trained units:
    docs/dyga.md). Then Gaussians with less than ``min_weight`` total responsibility go.
    """
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"split_rule must be one of {SPLIT_RULES}, got {split_rule!r}")
    x = x.double()
    low = x.amin(0)
    span = (x.amax(0) - low).clamp_min(1e-6)
    xn = _normalise(x, low, span)
    if previous is None:
        start, k0 = "kmeans", n_init
    else:
        start, k0 = previous.log_joint(x).argmax(-1)[None], previous.n_components
    res = fit_mixtures(xn[None], k0, _mixture_model(xn), init=start, max_iter=em_iters, tol=0.0,
                       generator=generator)  # fmt: skip
    n_split = n_merged = 0
    if split_rule == "bic":
        res, n_split, n_merged = _adapt_k(xn, res, em_iters, generator, max_moves, max_components)
    labels = res.log_resp[0].argmax(-1)
    for _ in range(max_splits if split_rule == "distance" else 0):
        k, means = res.params.weights.shape[-1], res.params.means[0]
        new_labels, split = _split_wide(xn, labels, means, k, em_iters, generator,
                                        split_threshold, max_components)  # fmt: skip
        if not split:
            break
        n_split += split
        res = _fit(xn, new_labels, k + split, em_iters, generator)
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
    return UnitMixture(res.params, low, span, splits=n_split, merged=n_merged,
                       filtered=n_filtered)  # fmt: skip


@dataclass
class Anchors:
    units: list[UnitMixture]
    strength: float = 0.1  # lam0
    mode: str = "hard"  # hard | gumbel
    tau: float = 1.0
    fixed_lam: float | None = None
    lam_rule: str = "spread"  # spread | official (see the module docstring)
    straight_through: bool = False  # ``pull``: forward aligned, backward as if not
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

    def pull(self, features: torch.Tensor, *, record: bool = False) -> torch.Tensor:
        """``align``, through which gradients flow as ``straight_through`` says."""
        aligned = self.align(features, record=record)
        if self.straight_through:
            return features + (aligned - features).detach()
        return aligned

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
        strength (lam0), mode, tau, fixed lam, lam rule, straight-through."""
        return cls(units, strength=section.strength, mode=section.mode, tau=section.tau,
                   fixed_lam=section.fixed_lam, lam_rule=section.lam_rule,
                   straight_through=section.straight_through)  # fmt: skip

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


def fit_from_section(
    features: torch.Tensor, section: Any, *, seed: int, previous: list[UnitMixture] | None
) -> list[UnitMixture]:
    """``fit_anchors`` with the ``anchoring`` section's fit options; ``previous`` anchors
    warm-start the fit only with ``warm_start``."""
    return fit_anchors(
        features, seed=seed, max_points=section.max_points, n_init=section.n_init,
        em_iters=section.em_iters, split_rule=section.split_rule, max_moves=section.max_moves,
        split_threshold=section.split_threshold, max_splits=section.max_splits,
        max_components=section.max_components, min_weight=section.min_weight,
        previous=previous if section.warm_start else None,
    )  # fmt: skip
