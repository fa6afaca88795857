"""CLI smoke tests: every command runs, user errors are one line with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from factordiff.cli import app

runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "factordiff", *args], capture_output=True, text=True, timeout=600
    )


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "config", "demo"):
        assert command in result.output


def test_data_list_shows_every_dataset() -> None:
    result = runner.invoke(app, ["data", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in [
        "dsprites",
        "shapes3d",
        "mpi3d_toy",
        "mpi3d_real",
        "cars3d",
        "celeba",
        "quickstart",
        "imagefolder",
    ]:
        assert name in result.output


def test_data_show_writes_a_grid(tmp_path) -> None:
    out = tmp_path / "g.png"
    result = runner.invoke(app, ["data", "show", "quickstart", "--out", str(out)])
    assert result.exit_code == 0, result.output
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 200 and img.std() > 10


def test_data_show_on_a_partial_grid_image_folder(tmp_path) -> None:
    rows = [("a0.png", 0, 0), ("a1.png", 1, 0), ("a2.png", 5, 1), ("a3.png", 0, 5)]
    for i, (name, _, _) in enumerate(rows):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / name)
    lines = "".join(f"{f},{a},{b}\n" for f, a, b in rows)
    (tmp_path / "factors.csv").write_text("file,a,b\n" + lines)
    out = tmp_path / "g.png"
    result = runner.invoke(
        app, ["data", "show", "imagefolder", "--root", str(tmp_path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_data_show_rejects_non_png_output(tmp_path) -> None:
    proc = run_cli("data", "show", "quickstart", "--out", str(tmp_path / "x.txt"))
    assert proc.returncode == 1 and "--out must be a .png" in proc.stderr


def test_config_show_applies_overrides() -> None:
    result = runner.invoke(app, ["config", "show", "quickstart", "train.batch_size=8"])
    assert result.exit_code == 0 and "batch_size: 8" in result.output


def test_user_errors_are_one_line_and_nonzero() -> None:
    for args, needle in [
        (["data", "show", "dspritez"], "Did you mean 'dsprites'"),
        (["config", "show", "quickstart", "train.bs=1"], "unknown config key 'train.bs'"),
        (["data", "show", "cars3d", "--root", "/nonexistent"], "does not exist"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 1, proc
        assert needle in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_demo_runs_every_stage(tmp_path) -> None:
    proc = run_cli("demo", "--out", str(tmp_path / "run"), "--train-steps", "3",
                   "--eval-scale", "0.02")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    for name in ("config.yaml", "data_factors.png", "eval.json", "reconstructions.png", "swap.png"):
        assert (run / name).is_file(), name
    assert (run / "train" / "checkpoints" / "step_00000003" / "state.json").is_file()
    assert "dci/disentanglement" in proc.stdout and "quick start finished" in proc.stdout
