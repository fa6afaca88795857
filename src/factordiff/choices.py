"""Every string option's allowed values, declared once. Config validation (with "did you
mean"), the networks' own checks, the model-family table and the CLI help read them here;
a leaf module, so anything may import it. Metrics have their own table
(``metric_registry``), datasets theirs (``data.registry``)."""

from __future__ import annotations

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
