"""HDDC: Gaussian mixtures whose covariances live in class-specific subspaces.

High-Dimensional Data Clustering (Bouveyron, Girard & Schmid, CSDA 2007; reference
implementation: the R package HDclassif). Class k has mean mu_k, weight pi_k and covariance
``Q_k diag(a_k1 .. a_kd_k, b_k .. b_k) Q_k^T``: d_k signal directions with variances a_kj
and an isotropic noise variance b_k in the remaining p - d_k directions. EM:

* E-step, with y = x - mu_k and Q_k's first d_k columns spanning the class subspace:
  ``C_k(x) = sum_j (q_kj^T y)^2 / a_kj + (|y|^2 - sum_j (q_kj^T y)^2) / b_k
  + sum_j log a_kj + (p - d_k) log b_k - 2 log pi_k + p log(2 pi)``;
  responsibilities ``softmax(-C / 2)`` and log-likelihood ``sum_n logsumexp_k(-C_k / 2)``,
  computed in the log domain.
* M-step: pi_k, mu_k, the weighted covariance W_k = sum_n t_nk y y^T / n_k and its
  eigen-decomposition; d_k by Cattell's scree test (or BIC); then a and b per model:

  ============  ===========================  =========================================
  model         signal variances a           noise variance b
  ============  ===========================  =========================================
  AkjBkQkDk     a_kj = lambda_kj             b_k = (tr W_k - sum_j lambda_kj) / (p - d_k)
  AkBkQkDk      a_k = mean_j lambda_kj       b_k as above
  ABkQkDk       a pooled over classes         b_k as above
  AkjBQkDk      a_kj = lambda_kj             b pooled over classes
  AkBQkDk       a_k = mean_j lambda_kj       b pooled
  ABQkDk        a pooled                     b pooled
  full          all p eigenvalues (d_k = p) -- a plain full-covariance GMM
  ============  ===========================  =========================================

Everything runs in torch on a leading batch dimension, so the mixtures of all latent
units of a model are fitted at once (on a GPU when the data is there). ``HDDC`` is the
scikit-learn-style wrapper for one data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MODELS = ("AkjBkQkDk", "AkBkQkDk", "ABkQkDk", "AkjBQkDk", "AkBQkDk", "ABQkDk", "full")
#: HDclassif's floors: noise.ctrl (M-step b, Cattell) and the E-step's floor on b.
NOISE_CTRL = 1e-8
E_STEP_NOISE_FLOOR = 1e-6
EIGEN_FLOOR = 1e-12  # keeps log(a) finite for degenerate covariances
CHUNK = 8192  # points per E-step chunk: bounds memory at (batch, K, CHUNK, p)


@dataclass
class MixtureParams:
    """Fitted parameters, each with a leading batch dimension U (one mixture per row)."""

    weights: torch.Tensor  # (U, K)
    means: torch.Tensor  # (U, K, p)
    basis: torch.Tensor  # (U, K, p, p) eigenvectors of W_k, columns sorted by eigenvalue
    signal: torch.Tensor  # (U, K, p) a_kj (entries j >= d_k unused)
    noise: torch.Tensor  # (U, K) b_k
    dims: torch.Tensor  # (U, K) intrinsic dimensions d_k (long)


def cattell_dims(eigvals: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """Cattell's scree test as HDclassif codes it: the largest j whose eigenvalue gap,
    divided by the largest gap, exceeds ``threshold`` (strictly) while lambda_{j+1} is above
    the noise floor. eigvals (..., p) sorted descending -> d (...) in [1, p-1]."""
    gaps = (eigvals[..., :-1] - eigvals[..., 1:]).abs()
    rel = gaps / gaps.amax(dim=-1, keepdim=True).clamp_min(1e-300)
    ok = (rel > threshold) & (eigvals[..., 1:] > NOISE_CTRL)
    idx = torch.arange(1, gaps.shape[-1] + 1, device=eigvals.device)
    return torch.where(ok, idx, torch.zeros_like(idx)).amax(dim=-1).clamp_min(1)


def bic_dims(eigvals: torch.Tensor, nk: torch.Tensor, n: int) -> torch.Tensor:
    """Per-class intrinsic dimension by BIC (HDclassif's ``d_select="BIC"``): for each d,
    a = mean of the first d eigenvalues, b = mean of the rest; keep the first maximiser,
    scanning d upward and stopping 10 past the best so far."""
    p = eigvals.shape[-1]
    prop = nk / n
    n_max = (eigvals > NOISE_CTRL).sum(-1) - 1  # (U, K)
    best = torch.ones_like(n_max)
    best_score = torch.full(nk.shape, -torch.inf, dtype=eigvals.dtype, device=eigvals.device)
    active = torch.ones_like(n_max, dtype=torch.bool)
    for d in range(1, p):
        active &= (d <= n_max) & (d <= best + 10)
        a = eigvals[..., :d].mean(-1)
        b = eigvals[..., d:].mean(-1)
        loglik = (
            -0.5
            * (
                d * a.log()
                + (p - d) * b.log()
                - 2 * prop.log()
                + p * (1 + 0.5 * math.log(2 * math.pi))
            )
            * nk
        )
        score = 2 * loglik - (p + d * (p - (d + 1) / 2) + 1) * nk.log()
        better = active & (score > best_score)
        best = torch.where(better, torch.full_like(best, d), best)
        best_score = torch.where(better, score, best_score)
    return best


def _signal_mask(dims: torch.Tensor, p: int) -> torch.Tensor:
    return torch.arange(p, device=dims.device) < dims.unsqueeze(-1)  # (U, K, p)


def costs(x: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """C_k(x) = -2 log(pi_k N_k(x)) for every point and class: (U, n, p) -> (U, n, K)."""
    p = x.shape[-1]
    mask = _signal_mask(params.dims, p).to(x.dtype)
    log_a = torch.where(mask.bool(), params.signal.log(), torch.zeros_like(params.signal))
    noise = params.noise.clamp_min(E_STEP_NOISE_FLOOR)
    const = (
        log_a.sum(-1)
        + (p - params.dims).to(x.dtype) * noise.log()
        - 2 * params.weights.log()
        + p * math.log(2 * math.pi)
    )  # (U, K)
    out = []
    for start in range(0, x.shape[1], CHUNK):
        y = x[:, None, start : start + CHUNK, :] - params.means[:, :, None, :]  # (U, K, c, p)
        proj = (y @ params.basis) ** 2
        inside = (proj * mask[:, :, None, :]).sum(-1)
        signal = (proj * mask[:, :, None, :] / params.signal[:, :, None, :]).sum(-1)
        residual = ((y**2).sum(-1) - inside).clamp_min(0.0)
        out.append(signal + residual / noise[:, :, None] + const[:, :, None])
    return torch.cat(out, dim=2).transpose(1, 2)  # (U, n, K)


def e_step(x: torch.Tensor, params: MixtureParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-responsibilities (U, n, K) and total log-likelihood per mixture (U,)."""
    log_joint = -0.5 * costs(x, params)
    log_norm = torch.logsumexp(log_joint, dim=-1, keepdim=True)
    return log_joint - log_norm, log_norm.squeeze(-1).sum(-1)


def _weighted_covariances(
    x: torch.Tensor, resp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n_k (U, K), mu_k (U, K, p), W_k (U, K, p, p) normalised by n_k."""
    nk = resp.sum(1).clamp_min(1e-10)
    means = torch.einsum("unk,unp->ukp", resp, x) / nk[..., None]
    cov = torch.zeros(*means.shape, means.shape[-1], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[1], CHUNK):
        xs, rs = x[:, start : start + CHUNK], resp[:, start : start + CHUNK]
        y = xs[:, None] - means[:, :, None]  # (U, K, c, p)
        cov += (y * rs.transpose(1, 2)[..., None]).transpose(-1, -2) @ y  # one batched matmul
    return nk, means, cov / nk[..., None, None]


def m_step(
    x: torch.Tensor,
    resp: torch.Tensor,
    model: str = "AkjBkQkDk",
    threshold: float = 0.2,
    dims: torch.Tensor | None = None,
    d_select: str = "cattell",
) -> MixtureParams:
    """Parameters from responsibilities (U, n, K); d_k by ``d_select`` ("cattell" or
    "bic") unless ``dims`` fixes them."""
    p = x.shape[-1]
    nk, means, cov = _weighted_covariances(x, resp)
    weights = nk / nk.sum(-1, keepdim=True)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals = eigvals.flip(-1).clamp_min(EIGEN_FLOOR)
    basis = eigvecs.flip(-1)
    if model == "full":
        dims = torch.full_like(nk, p, dtype=torch.long)
    elif dims is None and d_select == "bic":
        dims = bic_dims(eigvals, nk, x.shape[1])
    elif dims is None:
        dims = cattell_dims(eigvals, threshold)
    mask = _signal_mask(dims, p).to(x.dtype)
    d = dims.to(x.dtype)
    signal_sum = (eigvals * mask).sum(-1)  # sum_{j<=d_k} lambda_kj
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    if model in ("AkjBkQkDk", "AkjBQkDk", "full"):
        signal = eigvals
    elif model in ("AkBkQkDk", "AkBQkDk"):
        signal = (signal_sum / d)[..., None].expand_as(eigvals)
    else:  # A: one signal variance for all classes, weighted by the class weights
        pooled = (weights * signal_sum).sum(-1) / (weights * d).sum(-1)
        signal = pooled[:, None, None].expand_as(eigvals)
    if model == "full":
        noise = torch.ones_like(nk)  # unused: no noise directions
    elif model in ("AkjBkQkDk", "AkBkQkDk", "ABkQkDk"):
        noise = (trace - signal_sum) / (p - d).clamp_min(1.0)
    else:  # B: one noise variance for all classes
        pooled = (weights * (trace - signal_sum)).sum(-1) / (weights * (p - d)).sum(-1).clamp_min(
            1e-10
        )
        noise = pooled[:, None].expand_as(nk)
    return MixtureParams(
        weights, means, basis, signal.clamp_min(EIGEN_FLOOR).contiguous(),
        noise.clamp_min(NOISE_CTRL).contiguous(), dims,
    )  # fmt: skip


def n_free_parameters(model: str, p: int, dims: torch.Tensor) -> torch.Tensor:
    """Free parameters m of a fitted mixture (U,), counted as HDclassif does: means and
    weights, orientations sum_k d_k (p - (d_k + 1) / 2), the a's, the b's and the d_k."""
    k = dims.shape[-1]
    d = dims.to(torch.float64)
    base = k * p + k - 1
    if model == "full":
        return torch.full_like(d[..., 0], base + k * p * (p + 1) / 2)
    orient = (d * (p - (d + 1) / 2)).sum(-1)
    n_a = d.sum(-1) if model.startswith("Akj") else (k if model.startswith("Ak") else 1)
    n_b = k if "Bk" in model else 1
    return base + orient + n_a + n_b + k


def kmeans_labels(
    x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 20
) -> torch.Tensor:
    """k-means++ seeding + Lloyd iterations, batched: (U, n, p) -> labels (U, n)."""
    u, n, _ = x.shape
    rows = torch.arange(u, device=x.device)
    first = torch.randint(0, n, (u,), generator=generator).to(x.device)
    centres = [x[rows, first]]
    dist = ((x - centres[0][:, None]) ** 2).sum(-1)
    for _ in range(1, k):
        probs = (dist / dist.sum(-1, keepdim=True).clamp_min(1e-30)).cpu()
        pick = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(x.device)
        centres.append(x[rows, pick])
        dist = torch.minimum(dist, ((x - centres[-1][:, None]) ** 2).sum(-1))
    c = torch.stack(centres, 1)  # (U, K, p)
    for _ in range(iters):
        labels = torch.cdist(x, c).argmin(-1)
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        counts = onehot.sum(1)
        new = torch.einsum("unk,unp->ukp", onehot, x) / counts.clamp_min(1)[..., None]
        c = torch.where(counts[..., None] > 0, new, c)
    return torch.cdist(x, c).argmin(-1)


@dataclass
class FitResult:
    params: MixtureParams
    loglik: torch.Tensor  # (U,) final total log-likelihood
    history: list[torch.Tensor]  # log-likelihood after each EM iteration
    n_iter: int
    log_resp: torch.Tensor  # (U, n, K) at the final parameters


def initial_responsibilities(
    x: torch.Tensor, k: int, init: str | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """One-hot responsibilities (U, n, K) from ``kmeans``, ``random`` or given labels (U, n)."""
    u, n, _ = x.shape
    if isinstance(init, torch.Tensor):
        labels = init.to(x.device).long().reshape(u, n)
        if labels.min() < 0 or labels.max() >= k:
            raise ValueError(
                f"initial labels must lie in [0, {k}), got [{labels.min()}, {labels.max()}]"
            )
    elif init == "kmeans":
        labels = kmeans_labels(x, k, generator)
    elif init == "random":
        labels = torch.randint(0, k, (u, n), generator=generator).to(x.device)
    else:
        raise ValueError(f"init must be 'kmeans', 'random' or an array of labels; got {init!r}")
    return torch.nn.functional.one_hot(labels, k).to(x.dtype)


def fit_mixtures(
    x: torch.Tensor,
    k: int,
    model: str = "AkjBkQkDk",
    *,
    threshold: float = 0.2,
    init: str | torch.Tensor = "kmeans",
    max_iter: int = 200,
    tol: float = 1e-3,
    dims: torch.Tensor | None = None,
    d_select: str = "cattell",
    generator: torch.Generator | None = None,
) -> FitResult:
    """EM for U mixtures at once: x (U, n, p). Stops when, for every mixture, the change of
    log-likelihood is below ``tol`` in absolute or relative (|dL| / (0.1 + |L|)) terms, as
    HDclassif does; ``tol=0`` runs all ``max_iter`` iterations."""
    if model not in MODELS:
        raise ValueError(f"unknown HDDC model {model!r}; choose from {', '.join(MODELS)}")
    generator = generator or torch.Generator().manual_seed(0)
    resp = initial_responsibilities(x, k, init, generator)
    history: list[torch.Tensor] = []
    for _ in range(max_iter):
        params = m_step(x, resp, model, threshold, dims, d_select)
        log_resp, loglik = e_step(x, params)
        resp = log_resp.exp()
        history.append(loglik)
        if len(history) > 1:
            change = (history[-1] - history[-2]).abs()
            if bool(((change < tol) | (change / (0.1 + loglik.abs()) < tol)).all()):
                break
    return FitResult(params, history[-1], history, len(history), log_resp)


class HDDC:
    """High-dimensional data clustering in the style of scikit-learn.

    ``HDDC(n_components=4, model="AkjBkQkDk", threshold=0.2).fit(X)``; X (n, p) as a numpy
    array or torch tensor. Fitted: ``weights_``, ``means_``, ``dims_`` (intrinsic dimension
    per class), ``signal_``, ``noise_``, ``loglik_``, ``n_iter_``, ``labels_``.
    ``bic`` and ``icl`` follow scikit-learn's sign (lower is better): ``-2 LL + m log n``;
    HDclassif reports the negatives of these numbers.
    """

    def __init__(
        self,
        n_components: int = 2,
        model: str = "AkjBkQkDk",
        threshold: float = 0.2,
        d_select: str = "cattell",
        init: str | np.ndarray | torch.Tensor = "kmeans",
        max_iter: int = 200,
        tol: float = 1e-3,
        min_points: int = 2,
        random_state: int | None = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown HDDC model {model!r}; choose from {', '.join(MODELS)}")
        if d_select not in ("cattell", "bic"):
            raise ValueError(f"d_select must be 'cattell' or 'bic', got {d_select!r}")
        self.n_components, self.model, self.threshold = n_components, model, threshold
        self.d_select, self.init, self.max_iter, self.tol = d_select, init, max_iter, tol
        self.min_points, self.random_state = min_points, random_state
        self.device, self.dtype = device, dtype

    def _tensor(self, x) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if t.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError("X contains NaN or infinite values")
        device = self.device if self.device is not None else t.device
        return t.to(device=device, dtype=self.dtype)[None]

    def fit(self, x) -> HDDC:
        xt = self._tensor(x)
        n, p = xt.shape[1:]
        if n < self.n_components * self.min_points:
            raise ValueError(f"{n} points are too few for {self.n_components} components")
        seed = self.random_state if self.random_state is not None else torch.seed()
        g = torch.Generator().manual_seed(int(seed))
        init = self.init
        if not isinstance(init, str):
            init = torch.as_tensor(np.asarray(init))
        res = fit_mixtures(
            xt, self.n_components, self.model, threshold=self.threshold, init=init,
            max_iter=self.max_iter, tol=self.tol, d_select=self.d_select, generator=g,
        )  # fmt: skip
        # HDclassif's rule: a class needs min_points points with posterior above 1/K
        counts = (res.log_resp[0].exp() > 1.0 / self.n_components).sum(0)
        if bool((counts < self.min_points).any()):
            small = int(counts.argmin())
            raise ValueError(
                f"component {small} ended with {int(counts[small])} points (< min_points="
                f"{self.min_points}); use fewer components or another initialisation"
            )
        self._set_fitted(res, n, p)
        return self

    def _set_fitted(self, res: FitResult, n: int, p: int) -> None:
        prm = res.params
        self.params_ = prm
        self.weights_ = prm.weights[0].cpu().numpy()
        self.means_ = prm.means[0].cpu().numpy()
        self.dims_ = prm.dims[0].cpu().numpy()
        self.signal_ = [prm.signal[0, k, : int(d)].cpu().numpy() for k, d in enumerate(self.dims_)]
        self.noise_ = prm.noise[0].cpu().numpy()
        self.loglik_ = float(res.loglik[0])
        self.loglik_history_ = [float(h[0]) for h in res.history]
        self.n_iter_ = res.n_iter
        self.labels_ = res.log_resp[0].argmax(-1).cpu().numpy()
        self.n_parameters_ = float(n_free_parameters(self.model, p, prm.dims)[0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("this HDDC instance is not fitted yet; call fit(X) first")

    def predict_proba(self, x) -> np.ndarray:
        self._check_fitted()
        return e_step(self._tensor(x), self.params_)[0][0].exp().cpu().numpy()

    def predict(self, x) -> np.ndarray:
        return self.predict_proba(x).argmax(-1)

    def score_samples(self, x) -> np.ndarray:
        self._check_fitted()
        return torch.logsumexp(-0.5 * costs(self._tensor(x), self.params_), -1)[0].cpu().numpy()

    def score(self, x) -> float:
        """Mean log-likelihood per point."""
        return float(self.score_samples(x).mean())

    def bic(self, x) -> float:
        """-2 LL + m log n (lower is better; HDclassif's BIC is the negative)."""
        n = len(x)
        return -2 * self.score(x) * n + self.n_parameters_ * math.log(n)

    def icl(self, x) -> float:
        """BIC + the entropy of the hard assignment: -2 sum_n log t_n,z_n (lower is better)."""
        self._check_fitted()
        log_resp = e_step(self._tensor(x), self.params_)[0][0]
        return self.bic(x) - 2 * float(log_resp.max(-1).values.sum())
