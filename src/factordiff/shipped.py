"""Where a model comes from: a user's directory, or a model shipped inside the package.

Shipped models (``src/factordiff/pretrained/<name>/``) are loaded by name
(``from_pretrained("quickstart")``, ``factordiff eval quickstart``) and are read-only:
after ``pip install`` they sit under site-packages, and a command that wrote into them
would overwrite the shipped results for every user of that installation. Outputs of a
command aimed at a shipped model go to ``runs/<name>/`` instead, and an explicit write
into the package is refused. Maintainers regenerating a shipped model set
``FACTORDIFF_ALLOW_PACKAGE_WRITES=1`` (``make quickstart-model`` does).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors import safe_open

from factordiff.errors import CheckpointError, FactordiffError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DIR = PACKAGE_DIR / "pretrained"
ALLOW_WRITES_ENV = "FACTORDIFF_ALLOW_PACKAGE_WRITES"


class ModelNotFoundError(CheckpointError):
    """A model path or name does not lead to a saved model or a run directory."""


def shipped_models() -> list[str]:
    """Names of the models shipped in the package (folders with a config.yaml)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "config.yaml").is_file())


def shipped_name(path: str | Path) -> str | None:
    """The shipped model's name when ``path`` is (inside) one, else None."""
    try:
        rel = Path(path).resolve().relative_to(SHIPPED_DIR)
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


def resolve_model(source: str | Path) -> Path:
    """The directory of a model: ``source`` itself when it is a model folder (a run
    directory or a ``save_pretrained`` folder), else the shipped model of that name.
    The error says what exists instead (a missing path, a folder whose sub-folders hold
    models -- such as the demo's ``runs/demo/train`` --, the shipped names)."""
    path = Path(source).expanduser()
    if (path / "config.yaml").is_file():
        return path
    if str(source) in shipped_models() and not path.exists():
        return SHIPPED_DIR / str(source)
    names = ", ".join(shipped_models()) or "none installed"
    if not path.exists():
        raise ModelNotFoundError(
            f"{path} does not exist: pass a run directory (factordiff train ... --out DIR), "
            f"a save_pretrained folder, or a shipped model name ({names})"
        )
    if not path.is_dir():
        raise ModelNotFoundError(f"{path} is a file; a model is a directory with config.yaml")
    inner = sorted(p.parent for p in path.glob("*/config.yaml"))
    if inner:
        listed = ", ".join(str(p) for p in inner)
        raise ModelNotFoundError(
            f"{path} holds no model itself (no config.yaml); models inside it: {listed} "
            f"(shipped models, by name: {names})"
        )
    raise ModelNotFoundError(
        f"{path} has no config.yaml: not a run directory or a saved model "
        f"(shipped models, by name: {names})"
    )


def refuse_package_write(path: str | Path, what: str) -> None:
    """Raise when ``path`` lies inside the installed package (unless the maintainers'
    environment variable allows it): shipped files must not be overwritten."""
    try:
        Path(path).expanduser().resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return
    if os.environ.get(ALLOW_WRITES_ENV) == "1":
        return
    raise FactordiffError(
        f"refusing to write {what} to {path}: it is inside the installed factordiff package "
        f"({PACKAGE_DIR}), whose shipped models are read-only; choose a directory of your own "
        f"(e.g. --out runs/...)"
    )


def output_path(model_dir: Path, filename: str, out: Path | None) -> tuple[Path, str | None]:
    """Where a command's output goes: ``out`` when given (refused inside the package),
    else ``model_dir/filename``, or ``runs/<name>/filename`` for a shipped model. The
    second value is a note for the user when the default was redirected."""
    if out is not None:
        refuse_package_write(out, filename)
        return out, None
    name = shipped_name(model_dir)
    if name is None or os.environ.get(ALLOW_WRITES_ENV) == "1":
        return model_dir / filename, None
    redirected = Path("runs") / name / filename
    return redirected, f"{name} is a shipped, read-only model: writing {redirected} instead"


#: safetensors metadata key of ``save_pretrained``'s provenance record
PROVENANCE_KEY = "provenance"


def provenance(model_dir: Path, checkpoint: Path | None, config: dict) -> dict:
    """Where a loaded model comes from, for reports and logs: its folder (and shipped
    name), the training step of its weights, the resolved config's hash, and -- for a saved
    model -- what ``save_pretrained`` recorded (step, source run, version, date)."""
    info: dict = {"path": str(model_dir)}
    if (name := shipped_name(model_dir)) is not None:
        info["shipped"] = name
    if checkpoint is not None:
        info["checkpoint"] = checkpoint.name
        from factordiff.checkpoint import load_state  # torch: only once a model is loaded

        info["step"] = load_state(checkpoint).get("step")
    else:
        with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
            saved = (f.metadata() or {}).get(PROVENANCE_KEY)
        if saved:
            info.update(json.loads(saved))
        info.setdefault("step", _last_logged_step(model_dir / "train_log.jsonl"))
    # of the resolved settings, not the file's bytes: a re-saved config hashes the same
    canonical = json.dumps(config, sort_keys=True, default=str).encode()
    info["config_sha256"] = hashlib.sha256(canonical).hexdigest()[:12]
    return info


def _last_logged_step(log: Path) -> int | None:
    """The step of a saved model's copied training log's last record (models saved
    before provenance was recorded, such as the first shipped quick-start model)."""
    if not log.is_file():
        return None
    steps = [json.loads(line).get("step") for line in log.read_text().splitlines() if line]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None
