"""CLI smoke tests: every command runs, user errors are one line with a non-zero exit."""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import factordiff as fd
from factordiff.cli import app
from factordiff.shipped import SHIPPED_DIR

runner = CliRunner()


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "factordiff", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
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
                   "--eval-scale", "0.02", "--sample-steps", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    for name in ("data_factors.png", "eval.json", "reconstructions.png", "swap.png", "report.html"):
        assert (run / name).is_file(), name
    assert (run / "train" / "checkpoints" / "step_00000003" / "state.json").is_file()
    assert "dci/disentanglement" in proc.stdout and "quick start finished" in proc.stdout


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_shipped_model_by_name_is_read_only(tmp_path: Path) -> None:
    shipped = SHIPPED_DIR / "quickstart"
    before = _digest(shipped)
    proc = run_cli("eval", "quickstart", "--metrics", "mig", "--scale", "0.02", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "read-only" in proc.stdout and (tmp_path / "runs/quickstart/eval.json").is_file()
    assert "distinct images of 2592 encoded once" in proc.stdout  # the cached-codes path
    for args in (
        ["eval", "quickstart", "--metrics", "mig", "--out", str(shipped / "eval.json")],
        ["train", "quickstart", "--out", str(shipped)],
        ["swap", "quickstart", "--out", str(shipped / "swap.png")],
        ["interchange", "quickstart", "--out", str(shipped / "interchange.json")],
        ["downstream", "quickstart", "--out", str(shipped / "downstream.json")],
    ):  # refused before the model is loaded and the work done
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 1 and "refusing to write" in proc.stderr, proc.stderr
        assert "read-only" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert _digest(shipped) == before


def test_model_path_errors_say_what_exists(tmp_path: Path) -> None:
    proc = run_cli("eval", str(tmp_path / "nothere"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    assert "shipped model name (quickstart)" in proc.stderr
    (tmp_path / "demo" / "train").mkdir(parents=True)
    (tmp_path / "demo" / "train" / "config.yaml").write_text("{}")
    proc = run_cli("report", str(tmp_path / "demo"))
    assert proc.returncode == 1 and "models inside it" in proc.stderr
    assert str(tmp_path / "demo" / "train") in proc.stderr and "quickstart" in proc.stderr


def test_unknown_metric_suggests_the_closest() -> None:
    proc = run_cli("eval", "quickstart", "--metrics", "migg")
    assert proc.returncode == 1 and "did you mean 'mig'" in proc.stderr


def test_version_is_one_number_everywhere() -> None:
    assert importlib.metadata.version("factordiff") == fd.__version__
    result = runner.invoke(app, ["--version"])
    assert result.output.strip() == f"factordiff {fd.__version__}"


def test_provenance_survives_save_and_load(tmp_path: Path) -> None:
    model = fd.FactorDiffusion.from_pretrained("quickstart")
    assert model.provenance["shipped"] == "quickstart" and model.provenance["step"] == 3500
    model.save_pretrained(tmp_path / "copy")
    again = fd.FactorDiffusion.from_pretrained(tmp_path / "copy")
    assert again.provenance["step"] == 3500 and again.provenance["saved_with"] == fd.__version__
    assert "shipped" not in again.provenance
    assert again.provenance["config_sha256"] == model.provenance["config_sha256"]


def test_config_diff_prints_the_differing_settings() -> None:
    result = runner.invoke(app, ["config", "diff", "quickstart", "quickstart_dyga"])
    assert result.exit_code == 0, result.output
    assert "5 settings differ" in result.output
    for key in ("anchoring.enabled", "anchoring.space", "anchoring.every_steps",
                "model.unet.skip_dropout"):  # fmt: skip
        assert key in result.output
    assert "train.max_steps" not in result.output
    same = runner.invoke(app, ["config", "diff", "quickstart", "quickstart"])
    assert "resolve to the same config" in same.output
