"""Experiment trackers for a run (``train.log_with``), through accelerate's tracker classes.

Researchers keep their runs in their own tracker (W&B, MLflow, TensorBoard, Aim, ...);
accelerate already speaks to each of them, so a run logs to whichever the config names,
with the same metric names everywhere: ``train/<key>`` (per-unit lists as
``train/<key>/<unit>``) and ``eval/<metric>``. Figures (the DyGA anchor plots) go to
TensorBoard and W&B as images and to MLflow as artifacts under ``figures/``.

Where each writes, and how a resumed run continues its own record:

* ``tensorboard``: ``RUN/tb`` (events past the checkpoint's step are purged on resume);
* ``wandb``: project ``factordiff``, run named after the run folder, files under
  ``RUN/wandb``; the run id is kept in ``RUN/wandb_run_id`` and resumed. Offline:
  ``WANDB_MODE=offline`` (``wandb sync RUN/wandb/offline-run-*`` uploads it later);
* ``mlflow``: experiment ``factordiff`` (``MLFLOW_EXPERIMENT_NAME`` overrides) at
  ``MLFLOW_TRACKING_URI``, or a local file store in ``RUN/mlruns`` when that is unset
  (``mlflow ui --backend-store-uri RUN/mlruns``); the run id is kept in
  ``RUN/mlflow_run_id`` and resumed;
* the rest of accelerate's trackers (``aim``, ``comet_ml``, ``clearml``, ``dvclive``,
  ``swanlab``, ``trackio``) with a run named after the run folder; scalars only.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from factordiff.choices import TRACKERS
from factordiff.errors import ConfigError


def _kept_id(run_dir: Path, name: str) -> str | None:
    path = run_dir / f"{name}_run_id"
    return path.read_text().strip() if path.is_file() else None


def _keep_id(run_dir: Path, name: str, run_id: str) -> None:
    (run_dir / f"{name}_run_id").write_text(run_id + "\n")


def start_trackers(
    names: list[str], run_dir: Path, step: int, config: dict[str, Any]
) -> list[tuple[str, Any]]:
    """Started accelerate trackers, (name, tracker) each; the run's config is stored as
    hyper-parameters on a fresh run (not TensorBoard: it would add a folder per start)."""
    from accelerate import tracking

    missing = [n for n in names if importlib.util.find_spec(TRACKERS[n].split(".")[0]) is None]
    if missing:
        raise ConfigError(
            f"train.log_with={','.join(names)}: the package for {', '.join(missing)} is not "
            f"installed (pip install {' '.join(TRACKERS[n].replace('_', '-') for n in missing)})"
        )
    started = []
    for name in names:
        if name == "tensorboard":
            tracker = tracking.TensorBoardTracker(
                "tb", run_dir, purge_step=step + 1 if step else None
            )
        elif name == "wandb":
            run_id = _kept_id(run_dir, "wandb")
            resume = "allow" if run_id else None
            tracker = tracking.WandBTracker(
                "factordiff", name=run_dir.name, dir=str(run_dir), id=run_id, resume=resume
            )
        elif name == "mlflow":
            if "MLFLOW_TRACKING_URI" not in os.environ:  # a local store in the run folder
                import mlflow

                # MLflow 3 keeps its file store working only on request; it needs no server
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
            tracker = tracking.MLflowTracker("factordiff", run_name=run_dir.name,
                                             run_id=_kept_id(run_dir, "mlflow"))  # fmt: skip
        else:
            tracker = tracking.LOGGER_TYPE_TO_CLASS[name](run_dir.name)
        if hasattr(tracker, "start"):  # accelerate >= 1.2 starts trackers lazily
            tracker.start()
        if name == "wandb":
            _keep_id(run_dir, "wandb", tracker.run.id)
        elif name == "mlflow":
            _keep_id(run_dir, "mlflow", tracker.active_run.info.run_id)
        if step == 0 and name != "tensorboard":
            tracker.store_init_configuration(config)
        started.append((name, tracker))
    return started


def scalars(prefix: str, values: dict) -> dict[str, float | int | str]:
    """``{prefix/key: value}``; per-unit lists as ``prefix/key/i``; other values dropped."""
    out: dict[str, float | int | str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[f"{prefix}/{key}"] = int(value)
        elif isinstance(value, int | float):
            out[f"{prefix}/{key}"] = value
        elif isinstance(value, list) and all(isinstance(x, int | float) for x in value):
            out.update({f"{prefix}/{key}/{i}": x for i, x in enumerate(value)})
    return out


def log_figure(name: str, tracker: Any, key: str, png: Path, step: int) -> None:
    """A saved PNG figure into one tracker (TensorBoard / W&B images, MLflow artifacts)."""
    if name == "mlflow":
        import mlflow

        mlflow.log_artifact(str(png), artifact_path="figures")
        return
    if name not in ("tensorboard", "wandb"):
        return
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB"))
    if name == "tensorboard":
        tracker.log_images({key: image[None]}, step=step, dataformats="NHWC")
    else:
        tracker.log_images({key: [image]}, step=step)
