"""Run configuration: dataclasses with the published EncDiff defaults, YAML presets, overrides.

A config is built as ``defaults <- preset YAML <- key=value overrides``. Every key is
checked against the dataclasses before merging, so a typo is an error naming the key and
the closest valid one instead of a silently ignored setting. The resolved config is
written into each run directory (``config.yaml``) and is all a run needs to be repeated.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from factordiff.choices import CHOICES, tracker_names
from factordiff.errors import ConfigError, MetricInputError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    name: str = "shapes3d"
    root: str | None = None  # None: procedural data; else the folder with the published files
    image_size: int | None = None  # None: the dataset's own size
    in_memory: bool = False
    cache_dir: str | None = None  # procedural datasets: render the grid once into this folder
    num_workers: int = 0
    on_device: bool = False  # training: all images as uint8 on the training device (GPUs)


@dataclass
class FirstStageConfig:
    kind: str = "vq"  # vq | kl | unshuffle (lossless space-to-depth) | none (pixel space)
    embed_dim: int = 3
    n_embed: int = 2048
    channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 2
    train_steps: int = 50000
    lr: float = 4.5e-6
    # reconstruction loss: l1 (LDM's pixel term) | l2; without LDM's perceptual and adversarial
    # terms, a short L1 training blurs small objects into blobs of the wrong colour (the
    # quick-start shapes: docs/training.md), while L2 keeps their shape and colour
    loss: str = "l1"
    patch_size: int = 4  # unshuffle only: 32x32x3 -> 8x8x48
    # unshuffle / none: scale pixels by 1 / their std, as LDM does for latents (dark,
    # mostly-background images have std ~0.26: their objects drown in the noise early on)
    scale_pixels: bool = False


@dataclass
class EncoderConfig:
    kind: str = "encdiff"  # encdiff (scalars are the representation) | dyga (per-unit PCA)
    n_units: int = 20
    unit_dim: int = 16
    channels: int = 128
    mlp_hidden: list[int] = field(default_factory=lambda: [64, 128])
    fc_hidden: list[int] = field(default_factory=list)  # DyGA paper: [4096, 256]
    fsq_levels: int = 0  # > 0: FSQ-quantise each unit's scalar to this many values (ablation)
    # conv widths (dyga: stem + 4 strided, official [64, 128, 256, 256, 256]); [] = `channels`
    conv_widths: list[int] = field(default_factory=list)


@dataclass
class UNetConfig:
    model_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_heads: int = 8
    dropout: float = 0.0
    skip_dropout: float = 0.0  # DyGA paper: 0.2
    # downsampling factors whose skips are dropped; the official DyGA code drops the 16x16
    # and 8x8 skips of its 16x16 latent (factors 1 and 2). Empty list: every skip.
    skip_dropout_resolutions: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class VAEConfig:
    """The beta-VAE family baselines (``model.family`` betavae / betatcvae / factorvae)."""

    latent_dim: int = 10
    beta: float = 4.0  # beta-VAE: weight of the KL; beta-TCVAE: weight of the TC
    gamma: float = 10.0  # FactorVAE: weight of the TC


@dataclass
class ModelConfig:
    family: str = "diffusion"  # diffusion (EncDiff / DyGA) | betavae | betatcvae | factorvae
    first_stage: FirstStageConfig = field(default_factory=FirstStageConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0155
    beta_schedule: str = "scaled_linear"  # LDM "linear": sqrt-linspace, squared
    prediction: str = "epsilon"
    loss: str = "l1"
    t_sampling: str = "uniform"  # uniform (published) | cosmap (more mid/high-noise steps)
    sample_steps: int = 100
    eta: float = 0.0


@dataclass
class AnchoringConfig:
    enabled: bool = False
    # tokens: anchors on each unit's D-dim token (the paper; the scored scalar is not moved);
    # scalars: one 1-D mixture per unit, the scalar pulled before its MLP (the code moves)
    space: str = "tokens"
    n_init: int = 8
    em_iters: int = 30
    # bic: greedy merges / splits while the mixture's BIC falls (scale-free, K adapts);
    # distance: the official split rule (mean member distance > split_threshold, normalised)
    split_rule: str = "bic"
    max_moves: int = 16  # bic: merges + splits per refit
    split_threshold: float = 0.5
    max_splits: int = 3  # distance: split rounds
    max_components: int = 32
    min_weight: float = 10.0
    strength: float = 0.1  # lam0
    # spread: lam = lam0 * exp(-|c - anchor| / the unit's spread), one lam per token;
    # official: the released lam0 * exp(-mean |(c - anchor) / c|), 0 on ReLU tokens (docs/dyga.md)
    lam_rule: str = "spread"
    fixed_lam: float | None = None  # a constant lam instead
    mode: str = "hard"  # hard (most responsible Gaussian) | gumbel (Gumbel-softmax mix)
    tau: float = 1.0  # Gumbel-softmax temperature
    straight_through: bool = False  # forward aligned units, backward as if not aligned
    max_points: int = 100000
    every_epochs: int = 1  # refit schedule: none in the first epoch, then every N epochs
    every_steps: int = 0  # > 0: refit every N steps instead (from that step on)
    warm_start: bool = False  # refit from the previous anchors' partition, not from k-means


@dataclass
class TrainConfig:
    batch_size: int = 128  # global batch: summed over processes and accumulation steps
    grad_accum: int = 1
    base_lr: float = 2.0e-6  # multiplied by batch_size when scale_lr (EncDiff: 2.56e-4)
    scale_lr: bool = True
    warmup_steps: int = 10000
    lr_schedule: str = "constant"  # constant (published) | cosine: to 0 at max_steps after warm-up
    max_steps: int = 90000
    ema_decay: float = 0.9999
    mixed_precision: str = "no"  # no | fp16 | bf16 (bf16: 1.5x on CPUs with avx512_bf16/AMX)
    channels_last: bool = False  # NHWC activations and weights (helps convs on GPUs)
    compile: bool = False  # torch.compile the training forward; falls back to eager on failure
    # CPU threads: 0 = PyTorch's count (OMP_NUM_THREADS), dropped to 1 while another process
    # shares the cores and steps collapse (training/threads.py); N > 0 fixes it (bitwise runs)
    threads: int = 0
    # experiment trackers (accelerate's), comma-separated: tensorboard, wandb, mlflow, aim,
    # comet_ml, clearml, dvclive, swanlab, trackio; or none (training/trackers.py)
    log_with: str = "tensorboard"
    # encode every image by the frozen first stage once, before diffusion training, instead
    # of at every step (exact for the deterministic latents used: KL mode, VQ pre-quantisation)
    cache_latents: bool = False
    weight_decay: float = 0.01  # AdamW's (torch's default, as LDM); 0 for the VAE baselines
    grad_clip: float = 0.0  # 0: off
    max_bad_steps: int = 25  # stop after this many non-finite steps in a row (each is skipped)
    seed: int = 42
    log_every: int = 100
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    eval_every: int = 5000  # metrics on a subset + a swap grid; 0: off
    eval_scale: float = 0.1  # share of the protocol's sample counts used by periodic evals


@dataclass
class EvalConfig:
    metrics: list[str] = field(
        default_factory=lambda: ["factorvae", "dci", "mig", "sap", "modularity", "infomec"]
    )
    seed: int = 0
    representation: str = "auto"  # auto | scalars | pca | flatten


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    anchoring: AnchoringConfig = field(default_factory=AnchoringConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def _valid_keys(cls: type = Config, prefix: str = "") -> dict[str, type | None]:
    """All dotted keys of the config tree; value is the dataclass for sections, else None.

    Cached: it is consulted for every key of every YAML file and override. Read-only.
    """
    keys: dict[str, type | None] = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        sub = f.default_factory if dataclasses.is_dataclass(f.default_factory) else None
        keys[path] = sub  # type: ignore[assignment]
        if sub is not None:
            keys.update(_valid_keys(sub, path + "."))  # type: ignore[arg-type]
    return keys


def _unknown_key_error(key: str, source: str) -> ConfigError:
    valid = _valid_keys()
    if "." not in key:  # a misspelt section name: suggest sections first
        close = difflib.get_close_matches(key, [k for k in valid if "." not in k], n=1)
        if close:
            return ConfigError(f"{source}: unknown config key {key!r}; did you mean {close[0]!r}?")
    leaves = [k for k, sub in valid.items() if sub is None]
    last = key.rsplit(".", 1)[-1]
    close = (
        difflib.get_close_matches(key, leaves, n=1, cutoff=0.5)
        or [k for k in leaves if k.rsplit(".", 1)[-1] == last][:1]
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"{source}: unknown config key {key!r}{hint}")


def _check_keys(tree: Any, source: str, prefix: str = "") -> None:
    valid = _valid_keys()
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(tree).__name__}")
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if path not in valid:
            raise _unknown_key_error(path, source)
        if valid[path] is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path!r} is a section; expected a mapping")
            _check_keys(value, source, path + ".")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """A YAML path as given, a run folder's ``config.yaml``, or the bundled preset of that name."""
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.yaml").is_file():
        return path / "config.yaml"
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        close = difflib.get_close_matches(str(name_or_path), preset_names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown preset {str(name_or_path)!r}.{hint} Presets: {', '.join(preset_names())}"
        )
    return preset


def _parse_yaml(path: Path) -> dict:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as a YAML text file ({exc})") from None
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{path}: expected a mapping of config sections (data:, model:, ...), "
            f"got a {type(tree).__name__}"
        )
    return tree


def _merge_trees(base: dict, child: dict) -> dict:
    """``child`` over ``base``, section by section; a list or value in ``child`` replaces."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_trees(out[key], value)
        else:
            out[key] = value
    return out


def _read_preset(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A preset with its ``base:`` chain merged in (base first, then what this file changes).

    ``base`` names a bundled preset or a YAML path relative to this file; composing instead
    of copying keeps a variant (``quickstart_dyga``) equal to its recipe in everything it does
    not name, so changing the recipe changes the variant too.
    """
    if path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: presets name each other as base in a circle ({cycle})")
    own = _parse_yaml(path)
    base_name = own.pop("base", None)
    _check_keys(own, str(path))
    if base_name is None:
        return own
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: 'base' must name a preset or a YAML file; got {base_name!r}")
    relative = path.parent / base_name
    base_path = relative if relative.suffix in (".yaml", ".yml") else None
    try:
        base_path = resolve_preset(base_path or base_name)
    except ConfigError as exc:
        raise ConfigError(f"{path}: base: {exc}") from None
    return _merge_trees(_read_preset(base_path, (*chain, path.resolve())), own)


def _parse_overrides(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} must look like key=value, e.g. train.batch_size=64"
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        valid = _valid_keys()
        if key not in valid:
            raise _unknown_key_error(key, "override")
        if valid[key] is not None:
            raise ConfigError(f"override: {key!r} is a section; set one of its keys")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if _field_type_name(key) in ("str", "str | None") and isinstance(value, bool | int | float):
            value = raw  # a string option: `mixed_precision=no` is "no", not YAML's false
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def load_config(preset: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then a preset name or YAML file, then ``key=value`` overrides; validated."""
    layers = [OmegaConf.structured(Config)]
    sources = ["defaults"]
    if preset is not None:
        path = resolve_preset(preset)
        layers.append(OmegaConf.create(_read_preset(path)))
        sources.append(str(path))
    if overrides:
        layers.append(OmegaConf.create(_parse_overrides(overrides)))
        sources.append("overrides")
    merged = layers[0]
    for layer, source in zip(layers[1:], sources[1:], strict=True):
        try:
            merged = OmegaConf.merge(merged, layer)
        except TypeError as exc:  # OmegaConf: a mapping given for a list, or the reverse
            raise ConfigError(
                f"{source}: a value has the wrong kind of container (a mapping where a list "
                f"is expected, or the reverse): {exc}"
            ) from None
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            expected = _field_type_name(key)
            raise ConfigError(
                f"{source}: bad value for {key!r}: expected {expected} ({str(exc).splitlines()[0]})"
            ) from None
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def _field_type_name(key: str) -> str:
    cls: Any = Config
    for part in key.split("."):
        fields = (
            {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        )
        if part not in fields:
            return "a valid value"
        f = fields[part]
        cls = f.default_factory if dataclasses.is_dataclass(f.default_factory) else f.type
    return str(cls)


def _get(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express; each error names its key."""
    for key in _valid_keys():
        value = _get(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number; got {value}")
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}{hint}")
    from factordiff.metric_registry import resolve

    try:
        resolve(cfg.eval.metrics)
    except MetricInputError as exc:
        raise ConfigError(f"eval.metrics: {exc}") from None
    positive = [
        "model.encoder.n_units",
        "model.encoder.unit_dim",
        "model.unet.model_channels",
        "diffusion.timesteps",
        "diffusion.sample_steps",
        "train.batch_size",
        "train.max_steps",
        "train.grad_accum",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.max_bad_steps",
    ]
    for key in positive:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0; got {_get(cfg, key)}")
    if cfg.train.threads < 0:
        raise ConfigError(f"train.threads must be >= 0 (0: adapt); got {cfg.train.threads}")
    for key in ["train.base_lr", "model.first_stage.lr"]:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0; got {_get(cfg, key)}")
    if cfg.model.family != "diffusion" and cfg.anchoring.enabled:
        raise ConfigError(
            f"anchoring.enabled: DyGA anchors need the diffusion model, not {cfg.model.family}"
        )
    if cfg.model.family != "diffusion" and cfg.train.cache_latents:
        raise ConfigError(
            f"train.cache_latents: only the diffusion model has first-stage latents to cache, "
            f"not {cfg.model.family}"
        )
    if cfg.model.vae.latent_dim <= 0:
        raise ConfigError(f"model.vae.latent_dim must be > 0; got {cfg.model.vae.latent_dim}")
    if cfg.model.encoder.fsq_levels < 0 or cfg.model.encoder.fsq_levels == 1:
        raise ConfigError(
            f"model.encoder.fsq_levels must be 0 (off) or >= 2; got {cfg.model.encoder.fsq_levels}"
        )
    for key in ["model.unet.skip_dropout", "model.unet.dropout"]:
        if not 0.0 <= _get(cfg, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1); got {_get(cfg, key)}")
    if not 0.0 < cfg.diffusion.beta_start < cfg.diffusion.beta_end < 1.0:
        raise ConfigError("diffusion.beta_start < diffusion.beta_end must both lie in (0, 1)")
    if cfg.train.batch_size % cfg.train.grad_accum:
        raise ConfigError(
            f"train.batch_size ({cfg.train.batch_size}) must be divisible by train.grad_accum "
            f"({cfg.train.grad_accum})"
        )
    if cfg.diffusion.sample_steps > cfg.diffusion.timesteps:
        raise ConfigError("diffusion.sample_steps must be <= diffusion.timesteps")
    from factordiff.data.registry import get_spec  # late: data imports nothing from config

    tracker_names(cfg.train.log_with)

    try:
        get_spec(cfg.data.name)
    except Exception as exc:
        raise ConfigError(f"data.name: {exc}") from None


def flat_settings(cfg: Config) -> dict[str, Any]:
    """Every leaf setting by its dotted key (``train.max_steps``: 3500)."""
    return {key: _get(cfg, key) for key, sub in _valid_keys().items() if sub is None}


def config_diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose resolved values differ, with (value in a, value in b)."""
    flat_a, flat_b = flat_settings(a), flat_settings(b)
    return {key: (flat_a[key], flat_b[key]) for key in flat_a if flat_a[key] != flat_b[key]}


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(path)
