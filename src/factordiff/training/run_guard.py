"""Guards around a training run on shared machines: one writer per run directory,
pre-emption signals turned into a checkpoint, and a writable run directory with room for
checkpoints checked before any training starts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import torch
from accelerate import Accelerator

from factordiff.errors import FactordiffError

LOCK_FILE = ".lock"


class RunDirError(FactordiffError):
    """The run directory cannot be used: locked by another process, not writable, full."""


class TrainingStoppedError(FactordiffError):
    """Training stopped early on purpose (a signal, or too many non-finite steps).

    ``exit_code`` is what the CLI exits with: 128 + the signal number after a signal
    (what schedulers expect from a job they stopped), 1 otherwise.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _error_text(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


class RunLock:
    """An exclusive POSIX lock (``lockf``) on ``RUN/.lock``, held while a process trains.

    The kernel drops the lock when its holder dies, even by ``kill -9``, so a crashed run
    never blocks its own resume; POSIX locks belong to the process and are not inherited
    by forked data-loader workers (a ``flock`` would be, and would outlive a killed
    trainer while its workers wind down). The file's text (pid, host, start time) names
    the holder for the process that is refused.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.read(fd, 4096).decode(errors="replace").strip() or "unknown owner"
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(f"cannot lock {self.path}: {_error_text(exc)}") from None
            raise RunDirError(
                f"{self.path.parent} is being trained by another process ({owner}); two "
                "writers would corrupt the run. Wait for it, stop it, or use another --out."
            ) from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(owner).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class StopRequest:
    """SIGTERM / SIGINT (pre-emption, Ctrl-C) set a flag instead of killing the process;
    the training loop checks it between steps, writes a checkpoint and stops.

    A second SIGINT stops at once (KeyboardInterrupt), for a user who will not wait.
    Handlers are only installed from the main thread (Python's rule); elsewhere the flag
    simply never rises.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def stopped(self, where: str) -> TrainingStoppedError:
        """The error that ends a stopped run: the signal's name, ``where`` it stopped (step,
        checkpoint, how to resume) and the exit status schedulers expect (128 + signal)."""
        signum = self.signum or signal.SIGTERM
        return TrainingStoppedError(
            f"stopped by {signal.Signals(signum).name} {where}", exit_code=128 + signum
        )

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after this step "
            "(press Ctrl-C again to stop without saving)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()


def check_run_dir(run_dir: Path, checkpoint_bytes: int, keep: int) -> None:
    """Fail before training when ``run_dir`` cannot be written or cannot hold the
    checkpoints: ``keep`` of them plus the one being written, less those already there."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"cannot write to the run directory {run_dir}: {_error_text(exc)}. "
            "Choose a writable --out."
        ) from None
    existing = len(list((run_dir / "checkpoints").glob("step_*")))  # pruned as new ones come
    need = checkpoint_bytes * max(1, keep + 1 - existing)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunDirError(
            f"{run_dir} has {free / 2**20:.0f} MiB free, but {keep} checkpoints of this model "
            f"plus the one being written need about {need / 2**20:.0f} MiB "
            f"({checkpoint_bytes / 2**20:.1f} MiB each). Free space, lower "
            "train.keep_checkpoints, or use another --out."
        )


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` for data-loader workers: SIGTERM / SIGINT sent to the whole
    process group (``scancel``, Ctrl-C) are the trainer's to handle; a worker dying of them
    would make PyTorch abort the step before the checkpoint is written."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_requested(stop: StopRequest, acc: Accelerator) -> bool:
    """Whether any process was asked to stop (the processes must stop together)."""
    if acc.num_processes == 1:
        return stop.requested
    flag = torch.tensor(float(stop.requested), device=acc.device)
    return bool(acc.reduce(flag, "sum").item() > 0)
