"""A quantitative latent-interchange score (none of the published codebases has one).

Latent interchange is how the papers *show* disentanglement: swap unit k of a source image
for a target's and regenerate. Here it is *measured* on datasets with ground truth:

1. A factor classifier (a small CNN with one head per factor) is trained once on the
   dataset's images and cached (``~/.cache/factordiff/classifiers``, or
   ``$FACTORDIFF_CACHE``); its held-out accuracy per factor is reported beside the score.
2. For ``n_pairs`` random (source, target) pairs, the source is regenerated from its own
   units and, with the same DDIM noise, with unit k taken from the target, for every k.
3. The classifier reads the factors of both; a factor *changed* when its prediction
   differs between the swap and the unswapped regeneration (comparing generated with
   generated isolates the swap from reconstruction error).
4. The classifier's accuracy on the unswapped regenerations (its predictions against the
   sources' true factors) is reported per factor: held-out accuracy on real images says
   nothing about blurry generations, and a factor read unreliably there (a blob's shape)
   flips between two generations by chance, so its changed-shares are unreliable.

Per unit: the share of swaps that changed each factor. Summary: the share of all swaps
that changed exactly one factor (1.0 for a model whose every unit controls one factor and
whose pairs differ in it; swaps where source and target share the unit's factor value, or
units that encode nothing, change none and lower it), with the shares of none / several.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from factordiff.data.base import FactorDataset
from factordiff.data.loader import to_float

CLASSIFIER_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("FACTORDIFF_CACHE", Path.home() / ".cache" / "factordiff"))


class FactorClassifier(nn.Module):
    """Image in [-1, 1] (B, 3, S, S) -> one logit vector per factor."""

    def __init__(self, factor_sizes: tuple[int, ...], image_size: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for _ in range(4):
            layers += [nn.Conv2d(c, width, 4, 2, 1), nn.GroupNorm(8, width), nn.SiLU()]
            c = width
        flat = width * (image_size // 16) ** 2
        self.features = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, 256), nn.SiLU())
        self.heads = nn.ModuleList(nn.Linear(256, s) for s in factor_sizes)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.features(x)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 images (B, H, W, C) -> predicted factor classes (B, n_factors)."""
        self.eval()
        out = []
        for i in range(0, len(images), batch_size):
            x = _prepare(images[i : i + batch_size], self.image_size)
            out.append(torch.stack([lg.argmax(1) for lg in self(x)], dim=1))
        return torch.cat(out).numpy()


def _prepare(images: np.ndarray, size: int) -> torch.Tensor:
    x = to_float(images, size)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _classifier_path(dataset: FactorDataset, image_size: int) -> Path:
    name = f"{dataset.name}-{image_size}px-v{CLASSIFIER_VERSION}"
    return cache_dir() / "classifiers" / name


def train_factor_classifier(
    dataset: FactorDataset, image_size: int, steps: int = 1500, batch_size: int = 64,
    seed: int = 0, progress: bool = True,
) -> tuple[FactorClassifier, dict]:  # fmt: skip
    """Train the classifier on uniformly sampled images; returns it and its held-out
    accuracy per factor (2000 fresh images)."""
    torch.manual_seed(seed)
    rs = np.random.RandomState(seed)
    model = FactorClassifier(dataset.factor_sizes, image_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in tqdm(range(steps), desc="factor classifier", disable=not progress):
        factors = dataset.sample_factors(batch_size, rs)
        x = _prepare(dataset.images(factors), image_size)
        y = torch.from_numpy(factors).long()
        loss = sum(F.cross_entropy(lg, y[:, j]) for j, lg in enumerate(model(x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    held_out = dataset.sample_factors(2000, rs)
    pred = model.predict(dataset.images(held_out))
    accuracy = dict(zip(dataset.factor_names, (pred == held_out).mean(0).tolist(), strict=True))
    return model, accuracy


def load_or_train_classifier(
    dataset: FactorDataset, image_size: int, progress: bool = True
) -> tuple[FactorClassifier, dict]:
    """The cached classifier for (dataset, image size), trained on first use."""
    path = _classifier_path(dataset, image_size)
    weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
    model = FactorClassifier(dataset.factor_sizes, image_size)
    if weights.is_file() and meta.is_file():
        model.load_state_dict(load_file(weights))
        return model.eval(), json.loads(meta.read_text())["held_out_accuracy"]
    model, accuracy = train_factor_classifier(dataset, image_size, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    save_file(model.state_dict(), tmp)
    tmp.replace(weights)
    meta.write_text(json.dumps({"held_out_accuracy": accuracy, "factors": dataset.factor_names}))
    return model.eval(), accuracy


def interchange_score(
    model, dataset: FactorDataset, n_pairs: int = 32, steps: int | None = None, seed: int = 0,
    classifier: FactorClassifier | None = None, progress: bool = True,
) -> dict:  # fmt: skip
    """Swap every unit for ``n_pairs`` pairs and count which factors change (see module)."""
    accuracy = None
    if classifier is None:
        classifier, accuracy = load_or_train_classifier(dataset, model.image_size, progress)
    rs = np.random.RandomState(seed)
    idx = rs.choice(len(dataset), size=2 * n_pairs, replace=False)
    source_idx = np.sort(idx[:n_pairs])
    sources = dataset.images_at(source_idx)
    targets = dataset.images_at(np.sort(idx[n_pairs:]))
    units_a, units_b = model.encode(sources), model.encode(targets)
    n_units = units_a.shape[1]
    changed = np.zeros((n_pairs, n_units, len(dataset.factor_sizes)), dtype=bool)
    regen_pred = np.zeros((n_pairs, len(dataset.factor_sizes)), dtype=np.int64)
    for p in tqdm(range(n_pairs), desc="interchange", disable=not progress):
        batch = units_a[p : p + 1].repeat(n_units + 1, 1, 1)
        for k in range(n_units):
            batch[k + 1, k] = units_b[p, k]
        images = model.decode(batch, steps, seed=seed + p)  # one noise for the pair's rows
        pred = classifier.predict(images)
        changed[p] = pred[1:] != pred[0]
        regen_pred[p] = pred[0]  # the source regenerated from its own units
    n_changed = changed.sum(axis=2)  # (pairs, units)
    per_unit = changed.mean(axis=0)  # (units, factors): share of swaps changing each factor
    regen_acc = (regen_pred == dataset.index_to_factors(source_idx)).mean(axis=0)
    return {
        "exactly_one": float((n_changed == 1).mean()),
        "none": float((n_changed == 0).mean()),
        "several": float((n_changed > 1).mean()),
        "per_unit_changed_share": per_unit.tolist(),
        "per_unit_exactly_one": (n_changed == 1).mean(axis=0).tolist(),
        "factor_names": list(dataset.factor_names),
        "classifier_held_out_accuracy": accuracy,
        # on the n_pairs unswapped regenerations, against the sources' true factors
        "classifier_accuracy_on_regenerations": dict(
            zip(dataset.factor_names, regen_acc.tolist(), strict=True)
        ),
        "classifier_accuracy_on_regenerations_mean": float(regen_acc.mean()),
        "settings": {
            "n_pairs": n_pairs,
            "ddim_steps": steps or model.config.diffusion.sample_steps,
            "seed": seed,
        },  # fmt: skip
    }
