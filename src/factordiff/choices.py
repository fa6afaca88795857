"""Every string option's allowed values, declared once. Config validation (with "did you
mean"), the networks' own checks, the model-family table and the CLI help read them here;
a leaf module (it knows only ``errors``), so anything may import it. Metrics have their own table
(``metric_registry``), datasets theirs (``data.registry``)."""

from __future__ import annotations

from factordiff.errors import ConfigError

VAE_FAMILIES = ("betavae", "betatcvae", "factorvae")
#: ``model.family``: each is served by one class of ``factordiff.pipeline`` (its ``families``)
FAMILIES = ("diffusion", *VAE_FAMILIES)
FIRST_STAGE_KINDS = ("vq", "kl", "unshuffle", "none")
LAM_RULES = ("spread", "official")
REPRESENTATIONS = ("auto", "scalars", "pca", "flatten")

#: config key -> allowed values
CHOICES: dict[str, tuple[str, ...]] = {
    "model.family": FAMILIES,
    "model.first_stage.kind": FIRST_STAGE_KINDS,
    "model.first_stage.loss": ("l1", "l2"),
    "model.encoder.kind": ("encdiff", "dyga"),
    "diffusion.beta_schedule": ("scaled_linear", "linear"),
    "diffusion.prediction": ("epsilon", "v_prediction", "sample"),
    "diffusion.loss": ("l1", "l2"),
    "diffusion.t_sampling": ("uniform", "cosmap"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.lr_schedule": ("constant", "cosine"),
    "eval.representation": REPRESENTATIONS,
    "anchoring.mode": ("hard", "gumbel"),
    "anchoring.lam_rule": LAM_RULES,
    "anchoring.space": ("tokens", "scalars"),
    "anchoring.split_rule": ("bic", "distance"),
}

#: tracker name -> the package it needs
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
            "aim": "aim", "comet_ml": "comet_ml", "clearml": "clearml",
            "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}  # fmt: skip


def tracker_names(log_with: str) -> list[str]:
    """``train.log_with`` ("tensorboard", "wandb,mlflow", "none") as a checked list."""
    names = [n.strip() for n in log_with.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(
            f"train.log_with: unknown tracker(s) {', '.join(unknown)}; choose from "
            f"{', '.join(TRACKERS)} (comma-separated) or none"
        )
    return names
