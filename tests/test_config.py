"""Configs: presets load, overrides apply with types, errors name the key."""

from __future__ import annotations

import pytest
import yaml

from factordiff.config import Config, config_diff, load_config, preset_names, save_config
from factordiff.errors import ConfigError

PUBLISHED_PRESETS = ["dsprites", "shapes3d", "mpi3d_toy", "cars3d", "celeba"]


def test_all_presets_load() -> None:
    assert set(PUBLISHED_PRESETS + ["quickstart"]) <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        family, _, rest = name.partition("_")
        expected = rest if family in ("betavae", "betatcvae", "factorvae") else name
        assert cfg.data.name == expected.removesuffix("_paper").removesuffix("_dyga")


def test_dyga_presets_hold_the_paper_settings() -> None:
    for name in ["shapes3d", "cars3d", "mpi3d_toy", "celeba"]:
        cfg = load_config(f"{name}_dyga")
        enc, unet = cfg.model.encoder, cfg.model.unet
        assert (enc.kind, enc.n_units, enc.unit_dim) == ("dyga", 20, 32)
        assert enc.conv_widths == [64, 128, 256, 256, 256]  # official widths: flatten 4096
        assert enc.fc_hidden == [256] and enc.mlp_hidden == [256, 512]
        assert (unet.skip_dropout, unet.skip_dropout_resolutions, unet.dropout) == (
            0.2,
            [1, 2],
            0.1,
        )
        assert cfg.anchoring.enabled and cfg.anchoring.strength == 0.1
        assert (cfg.train.base_lr, cfg.train.scale_lr, cfg.train.seed) == (1e-4, False, 42)
        assert cfg.train.warmup_steps == 0  # the official DyGA configs have no scheduler
        assert cfg.anchoring.lam_rule == "spread"
        assert cfg.train.batch_size == (64 if name == "celeba" else 512)


def test_published_encdiff_defaults() -> None:
    cfg = load_config("shapes3d")
    assert cfg.model.encoder.n_units == 20 and cfg.model.encoder.unit_dim == 16
    assert cfg.model.unet.channel_mult == [1, 2, 4, 4] and cfg.model.unet.num_heads == 8
    assert cfg.diffusion.timesteps == 1000 and cfg.diffusion.loss == "l1"
    assert (cfg.diffusion.beta_start, cfg.diffusion.beta_end) == (0.0015, 0.0155)
    assert cfg.train.base_lr * cfg.train.batch_size == pytest.approx(2.56e-4)
    assert cfg.model.first_stage.kind == "vq" and cfg.model.first_stage.n_embed == 2048


def test_overrides_are_typed() -> None:
    cfg = load_config("quickstart", ["train.batch_size=32", "model.unet.channel_mult=[1,2]"])
    assert cfg.train.batch_size == 32
    assert cfg.model.unet.channel_mult == [1, 2]
    cfg = load_config("quickstart", ["data.root=/tmp/x", "anchoring.enabled=true"])
    assert cfg.data.root == "/tmp/x" and cfg.anchoring.enabled is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.batchsize=3"],
            "unknown config key 'train.batchsize'; did you mean 'train.batch_size'",
        ),
        (["train.batch_size=abc"], "bad value for 'train.batch_size': expected int"),
        (
            ["model.first_stage.kind=vqq"],
            "model.first_stage.kind must be one of vq, kl, unshuffle, none",
        ),
        (["data.name=shapes4d"], "Did you mean 'shapes3d'"),
        (["train=3"], "'train' is a section"),
        (["train.batch_size"], "must look like key=value"),
        (["model.unet.skip_dropout=1.5"], r"skip_dropout must be in \[0, 1\)"),
        (["train.batch_size=0"], "train.batch_size must be > 0"),
        (["train.base_lr=-1"], "train.base_lr must be > 0"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", overrides)


def test_yaml_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  bach_size: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.bach_size'"):
        load_config(bad)
    bad.write_text("trian:\n  x: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'trian'; did you mean 'train'"):
        load_config(bad)
    bad.write_text("model:\n  unet: 3\n")
    with pytest.raises(ConfigError, match="'model.unet' is a section"):
        load_config(bad)
    with pytest.raises(ConfigError, match="Did you mean 'shapes3d'"):
        load_config("shapes_3d")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path) -> None:
    cfg = load_config("quickstart", ["train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["seed"] == 7


def test_caching_latents_needs_the_diffusion_model() -> None:
    with pytest.raises(ConfigError, match="train.cache_latents: only the diffusion model"):
        load_config("betavae_quickstart", ["train.cache_latents=true"])


def test_string_options_keep_yaml_words_as_strings() -> None:
    cfg = load_config("quickstart", ["train.mixed_precision=no", "data.root=1"])
    assert cfg.train.mixed_precision == "no" and cfg.data.root == "1"


#: Presets meant as "recipe X plus DyGA + Skip Dropout": they must differ from X in nothing else.
PLUS_DYGA = {"quickstart_dyga": "quickstart"}
DYGA_KEYS = ("anchoring.", "model.unet.skip_dropout")


@pytest.mark.parametrize(("variant", "recipe"), PLUS_DYGA.items())
def test_dyga_variants_differ_from_their_recipe_only_in_anchoring_and_skip_dropout(
    variant: str, recipe: str
) -> None:
    differ = config_diff(load_config(recipe), load_config(variant))
    assert differ, "the variant must turn something on"
    assert [k for k in differ if not k.startswith(DYGA_KEYS)] == []
    assert differ["anchoring.enabled"] == (False, True)
    assert differ["model.unet.skip_dropout"] == (0.0, 0.2)


def test_a_preset_built_on_a_base_follows_it(tmp_path) -> None:
    """A change to the recipe reaches the variant: ``base:`` composes, it does not copy."""
    (tmp_path / "recipe.yaml").write_text("data: {name: quickstart}\ntrain: {max_steps: 70}\n")
    (tmp_path / "variant.yaml").write_text(
        "base: recipe.yaml\nanchoring: {enabled: true}\ntrain: {seed: 3}\n"
    )
    cfg = load_config(tmp_path / "variant.yaml")
    assert (cfg.train.max_steps, cfg.train.seed, cfg.anchoring.enabled) == (70, 3, True)
    assert cfg.data.name == "quickstart"
    (tmp_path / "recipe.yaml").write_text("data: {name: quickstart}\ntrain: {max_steps: 90}\n")
    assert load_config(tmp_path / "variant.yaml").train.max_steps == 90
    named = tmp_path / "named.yaml"
    named.write_text("base: quickstart\ntrain: {max_steps: 5}\n")
    assert (
        load_config(named).model.encoder.n_units == load_config("quickstart").model.encoder.n_units
    )


def test_bad_bases_name_the_file(tmp_path) -> None:
    loop_a, loop_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    loop_a.write_text("base: b.yaml\n")
    loop_b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"in a circle \(a.yaml -> b.yaml -> a.yaml\)"):
        load_config(loop_a)
    missing = tmp_path / "m.yaml"
    missing.write_text("base: quickstrat\n")
    with pytest.raises(ConfigError, match=r"m.yaml: base: unknown preset 'quickstrat'.*quickstart"):
        load_config(missing)
    typo = tmp_path / "t.yaml"
    typo.write_text("base: quickstart\ntrain: {max_stepz: 1}\n")
    with pytest.raises(ConfigError, match=r"t.yaml: unknown config key 'train.max_stepz'"):
        load_config(typo)


def test_config_diff_lists_changed_settings_and_reads_run_folders(tmp_path) -> None:
    a = load_config("quickstart")
    b = load_config("quickstart", ["train.seed=7", "model.encoder.n_units=4"])
    assert config_diff(a, b) == {"model.encoder.n_units": (8, 4), "train.seed": (42, 7)}
    assert config_diff(a, a) == {}
    save_config(b, tmp_path / "config.yaml")  # a run folder holds its resolved config
    assert config_diff(load_config(tmp_path), b) == {}
