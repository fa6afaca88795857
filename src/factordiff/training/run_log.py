"""What a run records: ``metrics.jsonl`` + the experiment trackers of ``train.log_with``
(TensorBoard by default; training/trackers.py), and the clock of its training time."""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

from factordiff.checkpoint import latest_checkpoint
from factordiff.choices import tracker_names
from factordiff.training.run_guard import RunDirError
from factordiff.training.trackers import log_figure, start_trackers
from factordiff.training.trackers import scalars as tracker_scalars


class TrainClock:
    """Wall seconds spent training, both phases, periodic evaluation excluded: the time
    axis of time-to-quality curves. Kept in checkpoints, so it adds up across resumes."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.restart_at(seconds)

    def restart_at(self, seconds: float) -> None:
        self._base, self._start = seconds, time.perf_counter()

    def seconds(self) -> float:
        return self._base + time.perf_counter() - self._start

    @contextmanager
    def paused(self):
        held = self.seconds()
        try:
            yield
        finally:
            self.restart_at(held)


def _logged_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line; a line torn by a killed process counts as
    past every checkpoint, so it is dropped on resume."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def _plain(value):
    """JSON-friendly: ints, lists and text as they are, tensors and numpy scalars as floats."""
    return value if isinstance(value, int | list | str) else float(value)


class RunLogger:
    """``metrics.jsonl`` (one JSON object per line) + the trackers named by ``log_with``
    (accelerate's: tensorboard, wandb, mlflow, ...), main process only.

    On resume, lines past the checkpoint's step are dropped: they belong to steps that
    will be trained again.
    """

    def __init__(
        self,
        run_dir: Path,
        step: int,
        enabled: bool,
        log_with: str = "tensorboard",
        config: dict | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.trackers: list = []
        if not enabled:
            return
        if self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines() if _logged_step(ln) <= step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            tmp.replace(self.path)
        self.trackers = start_trackers(tracker_names(log_with), run_dir, step, config or {})

    def keep_first_stage_until(self, step: int) -> None:
        """Drop the first-stage lines past ``step``: the resumed phase logs them again."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [ln for ln in lines if json.loads(ln).get("first_stage_step", 0) <= step]
        if len(kept) < len(lines):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            tmp.replace(self.path)

    def _write(self, record: dict) -> None:
        try:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:  # disk full mid-run: say so, the checkpoints are intact
            newest = latest_checkpoint(self.path.parent)
            raise RunDirError(
                f"cannot append to {self.path}: {exc.strerror or exc}. Checkpoints up to "
                f"{newest.name if newest else 'none'} are intact; free space and rerun to resume."
            ) from None

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._write({"step": step, **{k: _plain(v) for k, v in values.items()}})
        self._track(tracker_scalars("train", values), step)

    def log_eval(self, step: int, scores: dict, train_s: float) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "train_s": train_s, "eval": scores})
        finite = {
            k: v for k, v in scores.items() if isinstance(v, int | float) and math.isfinite(v)
        }
        self._track(tracker_scalars("eval", finite), step)

    def log_figure(self, key: str, png: Path, step: int) -> None:
        """A figure the run saved (DyGA anchors) into the trackers that take images."""
        for name, tracker in self.trackers:
            log_figure(name, tracker, key, png, step)

    def _track(self, values: dict, step: int) -> None:
        if values:
            for _, tracker in self.trackers:
                tracker.log(values, step=step)

    def close(self) -> None:
        for _, tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def close(self) -> None:
    if self.writer is not None:
        self.writer.close()
