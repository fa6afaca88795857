"""The beta-VAE score (Higgins et al. 2017), sampled exactly as disentanglement_lib does.

Definition: one training point: pick a factor k uniformly, sample two batches of
``batch_size`` images that agree on factor k (everything else independent), represent
both, and take the mean absolute difference of the codes over the batch; its label is k.
A ``LogisticRegression`` (scikit-learn defaults) is trained on ``num_train`` points; the
score is its accuracy on ``num_eval`` fresh points (``eval_accuracy``).

Reference protocol: ``RandomState(0)``, batch 64, 10000 train / 5000 eval points.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from factordiff.data.base import FactorDataset
from factordiff.metrics.sampling import GridSampler, LabelledSampler
from factordiff.metrics.utils import MetricInputError, Represent

Sampler = GridSampler | LabelledSampler


def _points(
    sampler: Sampler,
    num_points: int,
    rs: np.random.RandomState,
    batch_size: int,
    points_per_chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    done = 0
    while done < num_points:
        m = min(points_per_chunk, num_points - done)
        chosen, codes = sampler.paired_batches(m, rs, batch_size)
        features.append(np.mean(np.abs(codes[:, 0] - codes[:, 1]), axis=1))
        labels.append(chosen)
        done += m
    return np.concatenate(features), np.concatenate(labels)


def beta_vae(
    represent: Represent,
    dataset: FactorDataset,
    seed: int = 0,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    random_state: np.random.RandomState | None = None,
    sampler: Sampler | None = None,
) -> dict:
    """beta-VAE score of ``represent`` on ``dataset``: ``train_accuracy``, ``eval_accuracy``.

    ``sampler`` replaces ``represent``/``dataset`` as the source of batches (saved codes:
    :mod:`factordiff.metrics.sampling`).
    """
    if sampler is None:
        if not getattr(dataset, "has_ground_truth", True):
            raise MetricInputError(f"{dataset.name} has no ground-truth factors")
        sampler = GridSampler(represent, dataset)
    rs = random_state if random_state is not None else np.random.RandomState(seed)
    x_train, y_train = _points(sampler, num_train, rs, batch_size)
    if len(np.unique(y_train)) < 2:
        raise MetricInputError("beta-VAE score needs training points of at least 2 factors")
    model = LogisticRegression(random_state=rs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    train_acc = float(np.mean(model.predict(x_train) == y_train))
    x_eval, y_eval = _points(sampler, num_eval, rs, batch_size)
    return {
        "train_accuracy": train_acc,
        "eval_accuracy": float(model.score(x_eval, y_eval)),
        "batch_size": batch_size,
        "num_train": num_train,
        "num_eval": num_eval,
        "seed": seed,
    }
