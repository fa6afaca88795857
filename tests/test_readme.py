"""The README's snippets and commands run as written (in a fresh working directory).

Every ``factordiff`` line of the README is classified here: run in the default suite
(seconds), run with ``-m slow`` (minutes), or not run with the reason (needs the user's
published files, a download, hours of training, or a file the user brings). A new command
in the README fails ``test_every_readme_command_is_classified`` until it is classified.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
CLI = [sys.executable, "-m", "factordiff.cli"]

FAST = {
    "factordiff data show shapes3d --out grid.png",
    "factordiff config show shapes3d train.batch_size=64 data.root=~/data/shapes3d",
}
SLOW = {  # 100-step DDIM grids: minutes on 2 cores
    "factordiff swap quickstart",
    "factordiff traverse quickstart",
    "factordiff interchange quickstart --pairs 32",
    "factordiff downstream quickstart",
    "factordiff report quickstart",
}
NOT_RUN = {  # command -> why a test cannot run it
    "factordiff train quickstart --out runs/qs": "an hour of training (the demo runs it short)",
    "factordiff train shapes3d data.root=~/data/shapes3d --out runs/s3d": "published files",
    "factordiff train shapes3d --out runs/s3d": "days of training at published settings",
    "factordiff eval runs/s3d": "needs the run above",
    "factordiff train shapes3d_dyga --out runs/s3d_dyga": "days of training",
    "factordiff train quickstart_dyga --out runs/qs_dyga": "an hour of training",
    "factordiff data prepare dsprites --root ~/data/dsprites": "a download",
    "factordiff metrics codes.npz --out scores.json": "the user's own codes file",
    "factordiff udr runs/mine-seed0 runs/mine-seed1 runs/mine-seed2 --images 1000": (
        "the user's own runs (tests/test_selection.py runs `udr` on trained runs)"
    ),
}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _commands() -> list[str]:
    """Each ``factordiff ...`` line of the README's bash blocks, without its comment."""
    lines = [line.split("#")[0].strip() for block in _blocks("bash") for line in block.splitlines()]
    return [" ".join(line.split()) for line in lines if line.startswith("factordiff ")]


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    args = shlex.split(command)[1:]
    proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def test_every_readme_command_is_classified() -> None:
    unclassified = [c for c in _commands() if c not in FAST | SLOW | set(NOT_RUN)]
    assert not unclassified, (
        f"classify these README commands in tests/test_readme.py: {unclassified}"
    )


def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block that starts with an import is a complete program: run it."""
    monkeypatch.chdir(tmp_path)
    programs = [b for b in _blocks("python") if b.startswith(("import", "from"))]
    assert len(programs) >= 2
    for program in programs:
        namespace: dict = {}
        exec(compile(program, str(README), "exec"), namespace)  # noqa: S102
        if "swapped" in namespace:  # the model snippet: what its comments promise
            n = namespace["model"].n_units
            assert tuple(namespace["units"].shape[:2]) == (8, n)
            assert namespace["swapped"].dtype == np.uint8 and namespace["swapped"].shape[0] == 4
            assert namespace["model"].provenance["shipped"] == "quickstart"
        if "batch" in namespace:  # the loader snippet: the dict its comment promises
            batch = namespace["batch"]
            assert set(batch) == {"image", "factors", "index"}
            assert (
                batch["image"].shape == (128, 3, 64, 64) and batch["image"].dtype.is_floating_point
            )
            assert batch["factors"].shape == (128, 6) and batch["index"].shape == (128,)


@pytest.mark.parametrize("command", sorted(FAST))
def test_readme_short_commands_run(command: str, tmp_path: Path) -> None:
    _run(command, tmp_path)
    shipped = README.parent / "src/factordiff/pretrained/quickstart"
    assert not [p for p in shipped.iterdir() if p.name.startswith(".")], "wrote into the package"


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(SLOW))
def test_readme_long_commands_run(command: str, tmp_path: Path) -> None:
    proc = _run(command, tmp_path)
    if "--out" not in command:  # default outputs of a shipped model go to the user's runs/
        assert "runs/quickstart" in proc.stdout
