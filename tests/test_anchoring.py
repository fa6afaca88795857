"""DyGA: the fit (split / filter), the alignment rule, and anchors through training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import factordiff as fd
from factordiff.checkpoint import latest_checkpoint, load_tensors
from factordiff.models.anchoring import Anchors, fit_anchors, fit_unit
from factordiff.train import refit_due, train
from test_training import log, tiny, weights


def clusters(centres: torch.Tensor, n: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(centres), (n,), generator=g)
    return centres[pick] + spread * torch.randn(n, centres.shape[1], generator=g)


def test_wide_components_are_split() -> None:
    # 6 tight, well separated clusters; start from 2 Gaussians: each must be split
    centres = torch.tensor([[0.0, 0], [0, 10], [10, 0], [10, 10], [20, 0], [20, 10]])
    x = clusters(centres, 3000, 0.3, 0)
    g = torch.Generator().manual_seed(0)
    mix = fit_unit(x, n_init=2, split_threshold=0.15, min_weight=10, generator=g)
    assert 4 <= mix.n_components <= 8
    no_split = fit_unit(x, n_init=2, split_threshold=0.15, max_splits=0, generator=g)
    assert no_split.n_components == 2


def test_components_with_few_points_are_dropped() -> None:
    centres = torch.tensor([[0.0, 0], [10, 10]])
    x = torch.cat([clusters(centres, 2000, 0.3, 1), torch.tensor([[50.0, 50.0]] * 4)])
    g = torch.Generator().manual_seed(0)
    mix = fit_unit(x, n_init=3, max_splits=0, min_weight=10, generator=g)
    assert mix.n_components == 2  # the 4-point outlier component is filtered out
    assert mix.means[:, 0].max() < 20


def test_fit_is_deterministic_per_seed() -> None:
    x = clusters(torch.randn(5, 3) * 5, 1000, 0.5, 2)[:, None].repeat(1, 2, 1)
    a = fit_anchors(x, seed=3)
    b = fit_anchors(x, seed=3)
    assert all(torch.equal(u.means, v.means) for u, v in zip(a, b, strict=True))


def test_warm_start_begins_from_the_previous_anchors() -> None:
    centres = torch.tensor([[0.0, 0], [0, 10], [10, 0]])
    x = clusters(centres, 1500, 0.3, 5)[:, None]
    first = fit_anchors(x, seed=0, n_init=5, max_splits=0)
    shifted = x + 0.5  # the features moved a little since the last refit
    warm = fit_anchors(shifted, seed=1, previous=first, max_splits=0)
    cold = fit_anchors(shifted, seed=1, max_splits=0)
    assert cold[0].n_components == 8  # a fresh start uses n_init Gaussians
    assert warm[0].n_components <= first[0].n_components  # a warm one the previous anchors
    weights = warm[0].params.weights[0]
    moved = first[0].means + 0.5
    for mean in warm[0].means[weights > 0.05]:  # every real anchor sits on a moved old one
        assert (moved - mean).norm(dim=-1).min() < 0.5


def test_alignment_moves_units_toward_their_anchor_by_lam() -> None:
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    x = clusters(centres, 1000, 0.5, 3)
    units = fit_anchors(x[:, None], seed=0, n_init=2, max_splits=0)
    anchors = Anchors(units, strength=0.1)
    tokens = torch.tensor([[[9.0, 11.0]], [[1.0, -1.0]]])
    out = anchors.align(tokens)
    means = units[0].means.float()
    nearest = means[((tokens[:, 0, None] - means) ** 2).sum(-1).argmin(-1)]
    lam = 0.1 * torch.exp(-((tokens[:, 0] - nearest) / (tokens[:, 0] + 1e-6)).abs().mean())
    torch.testing.assert_close(out[:, 0], lam * nearest + (1 - lam) * tokens[:, 0])
    fixed = Anchors(units, fixed_lam=1.0).align(tokens)
    torch.testing.assert_close(fixed[:, 0], nearest)


def test_refit_schedule() -> None:
    cfg = tiny("anchoring.enabled=true")
    assert [s for s in range(1, 13) if refit_due(cfg, s, per_epoch=4)] == [4, 8, 12]
    cfg = tiny("anchoring.enabled=true", "anchoring.every_steps=3")
    assert [s for s in range(1, 10) if refit_due(cfg, s, per_epoch=4)] == [3, 6, 9]
    assert not refit_due(tiny(), 4, per_epoch=4)


def test_training_with_anchors_saves_and_resumes_them(tmp_path: Path) -> None:
    dyga = ["anchoring.enabled=true", "anchoring.every_steps=2", "anchoring.n_init=3",
            "anchoring.em_iters=5", "train.checkpoint_every=2",
            "anchoring.warm_start=true"]  # fmt: skip
    train(tiny(*dyga, "train.max_steps=4"), tmp_path / "straight", progress=False)
    train(tiny(*dyga, "train.max_steps=2"), tmp_path / "split", progress=False)
    train(tiny(*dyga, "train.max_steps=4"), tmp_path / "split", progress=False)
    fits = [r for r in log(tmp_path / "straight") if "anchor_fit_s" in r]
    assert [r["step"] for r in fits] == [2, 4] and all(len(r["anchors"]) == 4 for r in fits)
    assert (tmp_path / "straight" / "samples" / "anchors_00000004.png").is_file()
    a, b = weights(tmp_path / "straight", "anchors"), weights(tmp_path / "split", "anchors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    wa, wb = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    model = fd.FactorDiffusion.from_pretrained(tmp_path / "split")
    assert model.anchors is not None and len(model.anchors.units) == 4
    images = fd.data.load("quickstart").images_at(np.arange(8))
    aligned = model.encode(images)
    _, raw = model.encoder(model.prepare_images(images))
    assert not torch.allclose(aligned, raw)
    saved = fd.FactorDiffusion.from_pretrained(model.save_pretrained(tmp_path / "saved"))
    assert torch.equal(saved.encode(images), aligned)
    ckpt = latest_checkpoint(tmp_path / "split")
    assert "unit0.means" in load_tensors(ckpt, "anchors")


@pytest.mark.parametrize("mode", ["hard", "gumbel"])
def test_alignment_keeps_gradients(mode: str) -> None:
    x = clusters(torch.randn(3, 2) * 5, 500, 0.3, 4)
    anchors = Anchors(fit_anchors(x[:, None], seed=0, n_init=3), mode=mode, tau=0.5)
    tokens = x[:4, None].clone().requires_grad_(True)
    anchors.align(tokens, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()
