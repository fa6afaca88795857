"""Each default is written once: where a network's constructor has a default for a setting
its config section also holds, the two agree (else a model built in code and one built
from a config would silently differ)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from factordiff.config import (
    AnchoringConfig,
    EncoderConfig,
    FirstStageConfig,
    UNetConfig,
    VAEConfig,
)
from factordiff.models.anchoring import Anchors, fit_anchors, fit_unit
from factordiff.models.autoencoder import FirstStage
from factordiff.models.baselines import BetaVAEFamily
from factordiff.models.encoder import UnitEncoder
from factordiff.models.unet import UNet

PAIRS = [
    (FirstStageConfig, FirstStage),
    (EncoderConfig, UnitEncoder),
    (UNetConfig, UNet),
    (VAEConfig, BetaVAEFamily),
    (AnchoringConfig, Anchors),
    (AnchoringConfig, fit_unit),
    (AnchoringConfig, fit_anchors),
]


def _normalise(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


@pytest.mark.parametrize(("section", "built"), PAIRS, ids=lambda x: getattr(x, "__name__", ""))
def test_constructor_defaults_match_the_config(section: type, built: object) -> None:
    config = {f.name: _normalise(f.default if f.default is not dataclasses.MISSING
                                 else f.default_factory())  # type: ignore[misc]
              for f in dataclasses.fields(section)}  # fmt: skip
    params = inspect.signature(built).parameters
    differ = {
        name: (config[name], _normalise(p.default))
        for name, p in params.items()
        if name in config
        and p.default is not inspect.Parameter.empty
        and _normalise(p.default) != config[name]
    }
    assert not differ, f"{section.__name__} vs {built.__name__}: (config, constructor) {differ}"
