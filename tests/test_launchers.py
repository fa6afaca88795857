"""The multi-node launchers in docs/launch: valid shell, valid factordiff overrides."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from factordiff.config import load_config

LAUNCH = Path(__file__).parents[1] / "docs" / "launch"
OVERRIDE = re.compile(r"\b((?:data|model|train|diffusion|anchoring|eval)\.[a-z_.]+)=(\S+)")


@pytest.mark.parametrize("script", sorted(p.name for p in LAUNCH.iterdir()))
def test_launcher_is_valid_shell_with_valid_overrides(script: str) -> None:
    text = (LAUNCH / script).read_text()
    subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)
    assert "-m factordiff.cli train" in text
    overrides = [k + "=" + v.strip('"}') for k, v in OVERRIDE.findall(text)]
    overrides = [o.replace("$HOME", "/home/u") for o in overrides]
    assert overrides, "the launcher should show how settings are overridden"
    cfg = load_config("shapes3d", overrides)  # raises on an unknown key or a bad value
    assert cfg.train.mixed_precision == "bf16"
