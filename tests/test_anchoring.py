"""DyGA: the fit (split / filter), the alignment rule, and anchors through training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import factordiff as fd
from factordiff.checkpoint import latest_checkpoint, load_tensors
from factordiff.config import AnchoringConfig
from factordiff.models.anchoring import Anchors, fit_anchors, fit_from_section, fit_unit
from factordiff.training import train
from factordiff.training.dyga import refit_due
from run_helpers import log, tiny, weights


def clusters(centres: torch.Tensor, n: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(centres), (n,), generator=g)
    return centres[pick] + spread * torch.randn(n, centres.shape[1], generator=g)


def test_wide_components_are_split() -> None:
    # 6 tight, well separated clusters; start from 2 Gaussians: each must be split
    centres = torch.tensor([[0.0, 0], [0, 10], [10, 0], [10, 10], [20, 0], [20, 10]])
    x = clusters(centres, 3000, 0.3, 0)
    g = torch.Generator().manual_seed(0)
    rule = {"split_rule": "distance", "split_threshold": 0.15}
    mix = fit_unit(x, n_init=2, min_weight=10, generator=g, **rule)
    assert 4 <= mix.n_components <= 8
    no_split = fit_unit(x, n_init=2, max_splits=0, generator=g, **rule)
    assert no_split.n_components == 2


def modes(centres: list[float], n: int, dim: int, seed: int, sd: float = 0.1) -> torch.Tensor:
    """n points around each centre (on the diagonal of ``dim`` dimensions)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([c + sd * torch.randn(n, dim, generator=g) for c in centres])


@pytest.mark.parametrize("dim", [1, 16])
def test_k_follows_the_modes_whatever_the_scale(dim: int) -> None:
    """The default rule (BIC moves) on known mixtures, for scalars (1-D) and tokens (16-D):
    three separated modes started from K = 8 end at 3 by merges, at any feature scale; one
    mode made of two is split; one Gaussian stays one."""
    g = torch.Generator().manual_seed(0)
    three = modes([0.0, 1.0, 2.0], 500, dim, seed=0)
    for scale in (1e-3, 1.0, 1e3):
        mix = fit_unit(three * scale, n_init=8, generator=g)
        assert (mix.n_components, mix.merged, mix.splits) == (3, 5, 0), scale
        centres = sorted(mix.means.mean(-1).tolist())
        np.testing.assert_allclose(centres, [0.0, scale, 2 * scale], atol=0.05 * scale)
    two_in_one = fit_unit(modes([0.0, 0.6], 500, dim, seed=1), n_init=1, generator=g)
    assert (two_in_one.n_components, two_in_one.splits) == (2, 1)
    one = modes([0.0], 1000, dim, seed=2)
    assert fit_unit(one, n_init=1, generator=g).n_components == 1
    assert fit_unit(one, n_init=8, generator=g).n_components == 1


def test_the_official_split_rule_never_fires_on_a_unit_distribution_it_should_split() -> None:
    """Why the default changed: on a scalar unit, two modes 0.6 apart (each 0.1 wide, so
    ~0.6 of the normalised span apart) have a mean member distance of ~0.3 < 0.5: the
    official rule keeps one Gaussian where the BIC rule splits (above)."""
    g = torch.Generator().manual_seed(0)
    x = modes([0.0, 0.6], 500, 1, seed=1)
    assert fit_unit(x, n_init=1, split_rule="distance", generator=g).n_components == 1
    with pytest.raises(ValueError, match="split_rule"):
        fit_unit(x, split_rule="nope", generator=g)


def test_components_with_few_points_are_dropped() -> None:
    centres = torch.tensor([[0.0, 0], [10, 10]])
    x = torch.cat([clusters(centres, 2000, 0.3, 1), torch.tensor([[50.0, 50.0]] * 4)])
    g = torch.Generator().manual_seed(0)
    mix = fit_unit(x, n_init=3, max_moves=0, min_weight=10, generator=g)
    assert mix.n_components == 2  # the 4-point outlier component is filtered out
    assert mix.means[:, 0].max() < 20


def test_fit_is_deterministic_per_seed() -> None:
    x = clusters(torch.randn(5, 3) * 5, 1000, 0.5, 2)[:, None].repeat(1, 2, 1)
    a = fit_anchors(x, seed=3)
    b = fit_anchors(x, seed=3)
    assert all(torch.equal(u.means, v.means) for u, v in zip(a, b, strict=True))


def test_the_config_section_sets_the_fit_and_the_pull() -> None:
    centres = torch.tensor([[0.0, 0], [0, 10], [10, 0]])
    x = clusters(centres, 1500, 0.3, 5)[:, None]
    section = AnchoringConfig(n_init=5, max_moves=0, warm_start=False, straight_through=True)
    first = fit_from_section(x, section, seed=0, previous=None)
    assert first[0].n_components == 5  # n_init, no moves
    again = fit_from_section(x + 0.5, section, seed=1, previous=first)
    cold = fit_anchors(x + 0.5, seed=1, n_init=5, max_moves=0)  # warm_start off: ignored
    assert torch.equal(again[0].means, cold[0].means)
    anchors = Anchors.from_section(first, section)
    assert anchors.straight_through and anchors.strength == section.strength
    feats = x[:64].clone().requires_grad_(True)
    pulled = anchors.pull(feats)
    assert torch.equal(pulled, anchors.align(feats))  # forward: aligned
    pulled.sum().backward()
    assert torch.equal(feats.grad, torch.ones_like(feats))  # backward: as if not aligned
    plain = Anchors.from_section(first, AnchoringConfig(fixed_lam=0.25))
    feats.grad = None
    plain.pull(feats).sum().backward()
    assert torch.allclose(feats.grad, torch.full_like(feats, 0.75))  # (1 - lam)


def test_warm_start_begins_from_the_previous_anchors() -> None:
    centres = torch.tensor([[0.0, 0], [0, 10], [10, 0]])
    x = clusters(centres, 1500, 0.3, 5)[:, None]
    first = fit_anchors(x, seed=0, n_init=5, max_moves=0)
    shifted = x + 0.5  # the features moved a little since the last refit
    warm = fit_anchors(shifted, seed=1, previous=first, max_moves=0)
    cold = fit_anchors(shifted, seed=1, max_moves=0)
    assert cold[0].n_components == 8  # a fresh start uses n_init Gaussians
    assert warm[0].n_components <= first[0].n_components  # a warm one the previous anchors
    weights = warm[0].params.weights[0]
    moved = first[0].means + 0.5
    for mean in warm[0].means[weights > 0.05]:  # every real anchor sits on a moved old one
        assert (moved - mean).norm(dim=-1).min() < 0.5


def test_alignment_moves_units_toward_their_anchor_by_lam() -> None:
    centres = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    x = clusters(centres, 1000, 0.5, 3)
    units = fit_anchors(x[:, None], seed=0, n_init=2, max_moves=0)
    tokens = torch.tensor([[[9.0, 11.0]], [[1.0, -1.0]]])
    means = units[0].means.float()
    nearest = means[((tokens[:, 0, None] - means) ** 2).sum(-1).argmin(-1)]
    out = Anchors(units, strength=0.1, lam_rule="official").align(tokens)
    lam = 0.1 * torch.exp(-((tokens[:, 0] - nearest) / (tokens[:, 0] + 1e-6)).abs().mean())
    torch.testing.assert_close(out[:, 0], lam * nearest + (1 - lam) * tokens[:, 0])
    out = Anchors(units, strength=0.1).align(tokens)  # default: spread, per token
    dist = (tokens[:, 0] - nearest).norm(dim=-1, keepdim=True)
    lam = 0.1 * torch.exp(-dist / units[0].spread)
    x64 = x.double()  # spread: the RMS distance of the fit data to their mean
    assert abs(units[0].spread - float(((x64 - x64.mean(0)) ** 2).sum(-1).mean().sqrt())) < 0.05
    torch.testing.assert_close(out[:, 0], lam * nearest + (1 - lam) * tokens[:, 0])
    fixed = Anchors(units, fixed_lam=1.0).align(tokens)
    torch.testing.assert_close(fixed[:, 0], nearest)


def test_refit_schedule() -> None:
    cfg = tiny("anchoring.enabled=true")
    assert [s for s in range(1, 13) if refit_due(cfg, s, per_epoch=4)] == [4, 8, 12]
    cfg = tiny("anchoring.enabled=true", "train.max_steps=12")  # none at the last step
    assert [s for s in range(1, 13) if refit_due(cfg, s, per_epoch=4)] == [4, 8]
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
    # no refit at the last step (anchors the U-Net would never train with); the split run
    # does the refit it skipped at its step-2 end when resumed, so it stays bitwise equal
    for run in ("straight", "split"):
        fits = [r for r in log(tmp_path / run) if "anchor_fit_s" in r]
        assert [r["step"] for r in fits] == [2] and len(fits[0]["anchors"]) == 4
        assert len(fits[0]["anchor_splits"]) == len(fits[0]["anchor_filtered"]) == 4
    assert (tmp_path / "straight" / "samples" / "anchors_00000002.png").is_file()
    pulls = [r for r in log(tmp_path / "straight") if "anchor_lam" in r]
    assert [r["step"] for r in pulls] == [3, 4]  # logged at each log step once anchors exist
    assert all(len(r[k]) == 4 for r in pulls for k in ("anchor_move", "token_zero_share"))
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


def test_anchors_on_scalars_move_the_scored_code(tmp_path: Path) -> None:
    """anchoring.space=scalars: one 1-D mixture per unit, fit on the scalars; the scalar is
    pulled before its MLP, so what the metrics score moves and the tokens follow from it."""
    dyga = ["anchoring.enabled=true", "anchoring.space=scalars", "anchoring.every_steps=2",
            "anchoring.fixed_lam=0.5", "train.max_steps=3"]  # fmt: skip
    train(tiny(*dyga), tmp_path / "run", progress=False)
    fits = [r for r in log(tmp_path / "run") if "anchor_fit_s" in r]
    assert len(fits) == 1 and len(fits[0]["anchor_merged"]) == 4
    model = fd.FactorDiffusion.from_pretrained(tmp_path / "run")
    assert all(u.means.shape[-1] == 1 for u in model.anchors.units)
    images = fd.data.load("quickstart").images_at(np.arange(16))
    raw = model.scalars(images)
    anchors = torch.stack([u.means[u.log_joint(raw[:, i, None]).argmax(-1), 0]
                           for i, u in enumerate(model.anchors.units)], 1)  # fmt: skip
    scored = torch.as_tensor(model.represent(images))
    torch.testing.assert_close(scored, (0.5 * raw + 0.5 * anchors).float())
    assert model.representation_of == "the units' scalars, pulled to their DyGA anchors"
    tokens = model.encoder.to_tokens(scored)
    torch.testing.assert_close(model.encode(images), tokens)
    torch.testing.assert_close(model.units_from_scalars(raw), tokens)
    assert model.anchored_features(images).shape == (16, 4, 1)


def test_token_anchors_can_be_scored_on_the_moved_tokens(tmp_path: Path) -> None:
    """The official evaluation scores per-unit PCA of the moved tokens; eval.representation
    = pca gives that for the EncDiff encoder too, and says which code a number scores."""
    dyga = ["anchoring.enabled=true", "anchoring.every_steps=2", "train.max_steps=3"]
    train(tiny(*dyga), tmp_path / "run", progress=False)
    model = fd.FactorDiffusion.from_pretrained(tmp_path / "run")
    images = fd.data.load("quickstart").images_at(np.arange(8))
    assert model.represent(images).shape == (8, 4)
    assert model.representation_of == "the units' scalars (anchors act on the tokens only)"
    model.config.eval.representation = "pca"
    assert model.represent(images).shape == (8, 4, 8)
    np.testing.assert_array_equal(model.represent(images), model.encode(images).numpy())
    assert "moved by their DyGA anchors" in model.representation_of


@pytest.mark.parametrize("mode", ["hard", "gumbel"])
def test_alignment_keeps_gradients(mode: str) -> None:
    x = clusters(torch.randn(3, 2) * 5, 500, 0.3, 4)
    anchors = Anchors(fit_anchors(x[:, None], seed=0, n_init=3), mode=mode, tau=0.5)
    tokens = x[:4, None].clone().requires_grad_(True)
    anchors.align(tokens, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert tokens.grad is not None and torch.isfinite(tokens.grad).all()


def relu_tokens(n: int = 2000, n_units: int = 4, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Tokens like the DyGA feature extractor's: each unit a scalar from 3-6 clusters of a
    different spread per unit, through a random 1 -> 32 -> dim MLP ending in a ReLU, so
    about half of the entries are exactly 0."""
    g = torch.Generator().manual_seed(seed)
    cols = []
    for u in range(n_units):
        centres = torch.linspace(-2, 2, 3 + u)
        pick = torch.randint(0, len(centres), (n,), generator=g)
        s = centres[pick] + 0.05 * (1 + 3 * u) * torch.randn(n, generator=g)
        w1, b1 = torch.randn(1, 32, generator=g), torch.randn(32, generator=g)
        w2, b2 = torch.randn(32, dim, generator=g) / 32**0.5, 0.5 * torch.randn(dim, generator=g)
        cols.append(torch.relu(torch.relu(s[:, None] @ w1 + b1) @ w2 + b2))
    return torch.stack(cols, 1)


def test_default_pull_moves_every_unit_of_relu_tokens() -> None:
    # Issue 19: the released lam divides by single coordinates, so on ReLU tokens it is 0.
    # The default rule must move every unit by 5-10 % of its distance to its anchor
    # (lam0 = 0.1, damped by the distance relative to the unit's spread).
    tokens = relu_tokens()
    assert (tokens == 0).float().mean() > 0.4
    units = fit_anchors(tokens, seed=0, max_moves=0)  # the 8 anchors the issue measured
    batch = tokens[:256]
    anchor = Anchors(units, fixed_lam=1.0).align(batch)  # lam 1: the anchors themselves
    dist = (anchor - batch).norm(dim=-1).mean(0)
    assert (dist > 0).all()
    move = (Anchors(units).align(batch) - batch).norm(dim=-1).mean(0) / dist
    assert ((move > 0.05) & (move <= 0.1)).all(), move
    official = (Anchors(units, lam_rule="official").align(batch) - batch).norm(dim=-1).mean(0)
    assert (official / dist < 1e-6).all()  # the reproduction option keeps the released flaw


def test_pull_statistics_say_what_the_alignment_did() -> None:
    tokens = relu_tokens(n=1000, n_units=3)
    units = fit_anchors(tokens, seed=0, max_moves=0)
    anchors = Anchors(units, strength=0.1)
    assert anchors.pop_stats() is None
    anchors.align(tokens[:100])  # not recorded (representation extraction)
    assert anchors.pop_stats() is None
    anchors.align(tokens[:100], record=True)
    anchors.align(tokens[100:200], record=True)
    stats = anchors.pop_stats()
    assert set(stats) == {"anchor_lam", "anchor_move", "token_zero_share"}
    zero = (tokens[:200] == 0).double().mean(dim=(0, 2))
    np.testing.assert_allclose(stats["token_zero_share"], zero.numpy(), atol=1e-6)
    # one lam per token: the move relative to the distance is a distance-weighted mean lam
    pairs = zip(stats["anchor_move"], stats["anchor_lam"], strict=True)
    assert all(0.05 < m <= 0.1 and 0.05 < lam <= 0.1 for m, lam in pairs)
    assert anchors.pop_stats() is None  # popped
    official = Anchors(units, lam_rule="official")
    official.align(tokens[:100], record=True)
    assert max(official.pop_stats()["anchor_lam"]) < 1e-4
    with pytest.raises(ValueError, match="lam_rule"):
        Anchors(units, lam_rule="nope")


def test_fit_reports_splits_and_filters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0], [0, 10], [10, 0], [10, 10], [20, 0], [20, 10]])
    mix = fit_unit(clusters(centres, 3000, 0.3, 0), n_init=2, split_rule="distance",
                   split_threshold=0.15, generator=g)  # fmt: skip
    assert mix.splits > 0 and mix.n_components == 2 + mix.splits - mix.filtered
    x = torch.cat([clusters(centres[[0, 3]], 2000, 0.3, 1), torch.tensor([[50.0, 50.0]] * 4)])
    mix = fit_unit(x, n_init=3, max_moves=0, min_weight=10, generator=g)
    assert (mix.splits, mix.filtered, mix.n_components) == (0, 1, 2)
