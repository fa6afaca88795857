"""The FactorVAE score (Kim & Mnih 2018), sampled exactly as disentanglement_lib does.

Definition: estimate each code's global variance on ``num_variance_estimate`` random
images; drop codes whose standard deviation is below ``prune_threshold`` (0.05 in the
study configs). One *vote*: pick a factor k uniformly, sample ``batch_size`` images that
share factor k's value (everything else random), represent them, divide each code's
variance within the batch by its global variance and vote (k, argmin). A majority-vote
classifier maps each code to the factor that voted for it most on ``num_train`` votes;
the score is its accuracy on ``num_eval`` fresh votes (``eval_accuracy``, the number
papers report).

Reference protocol: ``RandomState(0)``, 10000 variance-estimate images, 10000 train and
5000 eval votes of batch 64, threshold 0.05. Random draws happen in the reference's
order (vote factor, then one ``randint`` per factor for the batch), so the same seed
gives the same votes; images are rendered and represented in chunks of votes, which
consumes no randomness. Saved codes instead of images: :mod:`factordiff.metrics.sampling`.

The reference's indexing quirk: ``argmin`` is taken over the *active* codes but used as
a column of the vote matrix over *all* codes, so once a code is pruned, votes land on
the wrong columns. ``index_quirk=True`` (default) reproduces it so vote matrices compare
with the reference; ``index_quirk=False`` maps the argmin back to the active code. The
relabelling is one-to-one, so the majority-vote accuracies (the score) are the same
either way; only ``train_votes`` differs.
"""

from __future__ import annotations

import numpy as np

from factordiff.data.base import FactorDataset
from factordiff.metrics.sampling import GridSampler, LabelledSampler
from factordiff.metrics.utils import MetricInputError, Represent

Sampler = GridSampler | LabelledSampler


def _votes(
    sampler: Sampler,
    num_votes: int,
    rs: np.random.RandomState,
    batch_size: int,
    global_var: np.ndarray,
    active: np.ndarray,
    index_quirk: bool,
    votes_per_chunk: int = 32,
) -> np.ndarray:
    """(n_factors, n_codes) vote counts."""
    votes = np.zeros((sampler.n_factors, len(global_var)), dtype=np.int64)
    active_idx = np.flatnonzero(active)
    done = 0
    while done < num_votes:
        m = min(votes_per_chunk, num_votes - done)
        chosen, codes = sampler.fixed_factor_batches(m, rs, batch_size)
        local_var = codes.var(axis=1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            argmin = np.argmin(local_var[:, active] / global_var[active], axis=1)
        columns = argmin if index_quirk else active_idx[argmin]
        np.add.at(votes, (chosen, columns), 1)
        done += m
    return votes


def factor_vae(
    represent: Represent,
    dataset: FactorDataset,
    seed: int = 0,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    index_quirk: bool = True,
    random_state: np.random.RandomState | None = None,
    sampler: Sampler | None = None,
) -> dict:
    """FactorVAE score of ``represent`` (uint8 images -> codes (B, n_codes)) on ``dataset``.

    Returns ``train_accuracy``, ``eval_accuracy`` (the score), ``eval_accuracy_per_factor``
    (per factor, the share of its eval votes classified right: which factor a score misses),
    ``num_active_dims`` and the settings used. ``random_state`` overrides ``seed`` (to chain
    with other draws). ``sampler`` replaces ``represent``/``dataset`` as the source of
    batches (saved codes: :mod:`factordiff.metrics.sampling`).
    """
    if batch_size < 2:
        raise MetricInputError("batch_size must be >= 2 (a variance needs two points)")
    if sampler is None:
        if not getattr(dataset, "has_ground_truth", True):
            raise MetricInputError(f"{dataset.name} has no ground-truth factors")
        sampler = GridSampler(represent, dataset)
    rs = random_state if random_state is not None else np.random.RandomState(seed)
    global_var = np.var(sampler.random_codes(num_variance_estimate, rs), axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    settings = {
        "batch_size": batch_size,
        "num_train": num_train,
        "num_eval": num_eval,
        "num_variance_estimate": num_variance_estimate,
        "prune_threshold": prune_threshold,
        "index_quirk": index_quirk,
        "seed": seed,
    }
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, **settings}
    args = (batch_size, global_var, active, index_quirk)
    train_votes = _votes(sampler, num_train, rs, *args)
    classifier = np.argmax(train_votes, axis=0)  # code -> factor
    columns = np.arange(train_votes.shape[1])
    train_acc = train_votes[classifier, columns].sum() / train_votes.sum()
    eval_votes = _votes(sampler, num_eval, rs, *args)
    eval_acc = eval_votes[classifier, columns].sum() / eval_votes.sum()
    # per factor k: the share of k's eval votes the classifier labels k (where a score stops)
    right = np.array([eval_votes[k, classifier == k].sum() for k in range(len(eval_votes))])
    per_factor = right / np.maximum(eval_votes.sum(axis=1), 1)
    return {
        "train_accuracy": float(train_acc),
        "eval_accuracy": float(eval_acc),
        "eval_accuracy_per_factor": per_factor.tolist(),
        "num_active_dims": int(active.sum()),
        "train_votes": train_votes.tolist(),
        **settings,
    }
