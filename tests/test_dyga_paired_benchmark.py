"""benchmarks/dyga_paired.py: the arms differ from EncDiff only where they should, the
primary pair runs first, and the paired statistics are the textbook ones (no training here:
the grid is run by hand, its results are committed under benchmarks/results/)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from factordiff.checkpoint import save_checkpoint
from factordiff.config import config_diff

BENCHMARK = "dyga_paired"  # the ``bench`` fixture (conftest.py) imports it


def test_each_arm_is_encdiff_plus_its_own_change(bench) -> None:
    args = SimpleNamespace(steps=3500, data_root=None, set=[])
    base = bench.cell_config("encdiff", "quickstart", 3, args)[2]
    assert (base.train.max_steps, base.train.seed, base.train.mixed_precision) == (3500, 3, "bf16")
    allowed = ("anchoring.", "model.unet.skip_dropout")
    for arm in ("dyga_sd", "dyga_sd_tokens", "control", "dyga", "sd", "dyga_official_sd"):
        differ = config_diff(base, bench.cell_config(arm, "quickstart", 3, args)[2])
        assert differ and all(k.startswith(allowed) for k in differ), (arm, differ)
    heldout = bench.cell_config("encdiff", "heldout", 0, SimpleNamespace(**{**vars(args),
                                "data_root": "runs/h"}))[2]  # fmt: skip
    assert (heldout.data.name, heldout.data.root, heldout.data.image_size) == (
        "imagefolder", "runs/h", 32)  # fmt: skip


def test_the_primary_pair_runs_first_seed_by_seed(bench) -> None:
    cells = bench.grid_cells(["encdiff", "control", "dyga_sd"], [0, 1])
    assert cells == [("encdiff", 0), ("dyga_sd", 0), ("encdiff", 1), ("dyga_sd", 1),
                     ("control", 0), ("control", 1)]  # fmt: skip


def test_paired_t_interval_and_detectable_difference(bench) -> None:
    out = bench.paired_t([0.1, 0.2, 0.3])
    # mean 0.2, sd 0.1, se 0.1 / sqrt(3); t(0.975, 2) = 4.3027, t(0.8, 2) = 1.0607
    assert out["mean"] == pytest.approx(0.2) and out["sd"] == pytest.approx(0.1)
    assert out["ci95"] == pytest.approx([0.2 - 0.24842, 0.2 + 0.24842], abs=1e-4)
    assert out["detectable"] == pytest.approx((4.3027 + 1.0607) * 0.1 / 3**0.5, abs=1e-3)
    assert (out["ahead"], out["n"]) == (3, 3)
    one = bench.paired_t([0.05])
    assert one["mean"] == 0.05 and one["n"] == 1  # one pair: no interval (NaN bounds)
    assert all(x != x for x in one["ci95"])


def test_committed_rows_are_kept_and_pairs_stay_on_one_machine(bench) -> None:
    def row(variant, seed, cpu, score):
        return {"variant": variant, "seed": seed, "cpu": cpu,
                **{k: score for k in bench.SCORES}}  # fmt: skip

    rows = [row("encdiff", 0, "AMD", 0.5), row("dyga_sd", 0, "AMD", 0.6),
            row("encdiff", 1, "AMD", 0.5)]  # fmt: skip
    rows, replaced = bench.merge_row(rows, [], row("dyga_sd", 1, "Intel", 0.9))
    # seed 1's arms ran on different CPUs: no pair yet
    paired = bench.summarise(rows, ["encdiff", "dyga_sd"], [0, 1])["dyga_sd"]
    assert paired["paired_vs_encdiff"]["dci/disentanglement"]["seeds"] == [0]
    rows, replaced = bench.merge_row(rows, replaced, row("encdiff", 1, "Intel", 0.7))
    assert [r["cpu"] for r in replaced] == ["AMD"] and len(rows) == 4
    paired = bench.summarise(rows, ["encdiff", "dyga_sd"], [0, 1])["dyga_sd"]
    d = paired["paired_vs_encdiff"]["dci/disentanglement"]
    assert d["seeds"] == [0, 1] and d["per_seed"] == pytest.approx([0.1, 0.2])
    assert bench.merge_row(rows, replaced, rows[-1]) == (rows, replaced)  # the same cell again


def test_a_cell_begun_in_another_precision_is_not_resumed_here(bench, tmp_path) -> None:
    def conflict(run, requested="bf16", here_fp32=True):
        return bench.precision_conflict(run, requested, here_fp32, steps=3500)

    run = tmp_path / "cell"
    assert conflict(run) is None  # not begun
    run.mkdir()
    torn = '{"step": 3'
    (run / "metrics.jsonl").write_text(
        '{"step": 0, "mixed_precision_used": "no"}\n{"step": 0, "first_stage_step": 20}\n' + torn
    )
    assert conflict(run) is None  # a line torn by a kill is skipped
    why = conflict(run, here_fp32=False)
    assert "began training in fp32" in why and "rest in bf16" in why
    (run / "metrics.jsonl").write_text('{"step": 0, "first_stage_step": 20}\n')  # began bf16
    assert "began training in bf16" in conflict(run)
    assert conflict(run, here_fp32=False) is None
    assert conflict(run, requested="no") is None  # an fp32 recipe
    save_checkpoint(run, 3500, {"model": {"w": torch.zeros(1)}}, {"step": 3500})
    assert conflict(run) is None  # trained to the end: only scoring is left
