"""What a phase-2 checkpoint holds and restores: weights, EMA, the optimisers (one per
parameter group the family declares) and their learning rate schedules, the step reached,
and the counters that make a resumed run continue as an unbroken one.

File names: the model's optimiser is ``optimizer.safetensors`` (state keys ``optimizer`` /
``lr_scheduler``), another group's ``optimizer_<group>.safetensors`` (keys with the same
suffix), so a one-optimiser run's checkpoint is what it always was."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch import nn

from factordiff.checkpoint import (
    load_into,
    load_state,
    load_tensors,
    optimizer_state_tensors,
    restore_optimizer,
    save_checkpoint,
)
from factordiff.config import Config
from factordiff.errors import ConfigError
from factordiff.pipeline import ImageModel
from factordiff.training.batches import StepBatches
from factordiff.training.dyga import refit_due, refit_scheduled
from factordiff.training.optim import lr_multiplier, make_adamw
from factordiff.training.run_log import TrainClock


@dataclass
class TrainState:
    model: ImageModel
    params: list[nn.Parameter]  # what the optimisers train (and the gradient clip sees)
    #: per the family's parameter group, the model's first; unwrapped (accelerate's wrapper
    #: keeps its state here)
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR]
    ema: EMAModel
    data: StepBatches
    clock: TrainClock = field(default_factory=TrainClock)
    step: int = 0
    bad_steps: int = 0  # non-finite steps skipped so far
    refit_pending: bool = False  # a DyGA refit scheduled at the step a resumed run stopped at
    #: the precision a resumed checkpoint was trained in (None: fresh, or written before 0.4.0)
    resumed_precision: str | None = None

    @classmethod
    def fresh(cls, cfg: Config, model: ImageModel, n_images: int) -> TrainState:
        t = cfg.train
        lr = t.base_lr * (t.batch_size if t.scale_lr else 1)
        groups = model.optimizer_groups()
        optimizers = {
            g.name: make_adamw(g.params, lr, t.weight_decay if g.weight_decay is None
                               else g.weight_decay, g.betas)
            for g in groups
        }  # fmt: skip
        return cls(
            model=model,
            params=[p for g in groups for p in g.params],
            optimizers=optimizers,
            schedulers={
                name: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, t))
                for name, opt in optimizers.items()
            },
            ema=EMAModel(model.ema_module.parameters(), decay=t.ema_decay),
            data=StepBatches(n_images, t.batch_size, t.seed),
        )

    def lr(self) -> float:
        """The model's learning rate now (what the logs show)."""
        return self.schedulers["model"].get_last_lr()[0]

    def resume(self, ckpt: Path, cfg: Config, acc: Accelerator) -> None:
        """Weights, EMA, optimiser, schedule and counters from ``ckpt``; the data follows
        from the step."""
        state = load_state(ckpt)
        load_into(self.model, load_tensors(ckpt, "model"), str(ckpt / "model.safetensors"))
        ema_tensors = load_tensors(ckpt, "ema")
        names = [n for n, _ in self.model.ema_module.named_parameters()]
        self.ema.shadow_params = [ema_tensors[n].to(acc.device) for n in names]
        self.ema.optimization_step = state["ema_step"]
        # Every group is checked before any is restored: in a checkpoint of the shared
        # optimiser the model's state covers the discriminator's weights too, and restoring
        # it first would fail inside torch instead of here.
        missing = [name for name in self.optimizers if _key("optimizer", name) not in state]
        if missing:
            raise ConfigError(
                f"{ckpt} holds no state for the {missing[0]!r} optimiser this family trains "
                f"(factordiff 0.3.0 trained FactorVAE's discriminator with the "
                f"model's optimiser); train the run again from scratch"
            )
        for name, opt in self.optimizers.items():
            key = _key("optimizer", name)
            restore_optimizer(opt, load_tensors(ckpt, key), state[key])
            self.schedulers[name].load_state_dict(state[_key("lr_scheduler", name)])
        self.model.load_anchors(ckpt)
        self.step = state["step"]
        self.bad_steps = state.get("bad_steps", 0)
        self.refit_pending = state.get("refit_pending", False)
        self.clock = TrainClock(state.get("train_s", 0.0))
        if acc.is_main_process:
            print(f"resuming {ckpt.parent.parent} from {ckpt.name} (step {self.step})")
            _note_chunking(state, acc.num_processes, cfg.train.grad_accum)
        self.resumed_precision = state.get("mixed_precision")

    def save(self, run_dir: Path, cfg: Config, acc: Accelerator) -> None:
        """A checkpoint of the step reached (rank 0 writes; every rank waits for it)."""
        acc.wait_for_everyone()
        if acc.is_main_process:
            t, model, step = cfg.train, self.model, self.step
            ema_names = [n for n, _ in model.ema_module.named_parameters()]
            ema = dict(zip(ema_names, self.ema.shadow_params, strict=True))
            tensors = {"model": model.state_dict(), "ema": ema}
            optimisers = {}
            for name, opt in self.optimizers.items():
                tensors[_key("optimizer", name)], optimisers[_key("optimizer", name)] = (
                    optimizer_state_tensors(opt)
                )
                optimisers[_key("lr_scheduler", name)] = self.schedulers[name].state_dict()
            if model.anchors is not None:
                tensors["anchors"] = model.anchors.state_tensors()
            save_checkpoint(
                run_dir, step,
                tensors,
                {"step": step, "images_seen": step * t.batch_size, **self.data.position(step),
                 "seed": t.seed, "rng": "per (seed, step, chunk); see factordiff.training",
                 "ema_step": self.ema.optimization_step, **optimisers,
                 "processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
                 "grad_accum": t.grad_accum,
                 "bad_steps": self.bad_steps, "train_s": self.clock.seconds(),
                 "refit_pending": refit_scheduled(cfg, step, self.data.per_epoch)
                 and not refit_due(cfg, step, self.data.per_epoch)},
                keep=t.keep_checkpoints,
            )  # fmt: skip
        acc.wait_for_everyone()


def _key(kind: str, group: str) -> str:
    """``optimizer`` / ``lr_scheduler`` for the model's group, ``<kind>_<group>`` else."""
    return kind if group == "model" else f"{kind}_{group}"


def _note_chunking(state: dict, world: int, grad_accum: int) -> None:
    """Say when the checkpoint cut its global batch into other chunks than this run will:
    the same batch, other noise draws than an unbroken run."""
    saved = state.get("processes", world) * state.get("grad_accum", grad_accum)
    if saved == world * grad_accum:
        return
    exact = (
        f" Set train.grad_accum={saved // world} to continue it exactly." if saved % world == 0
        else ""
    )  # fmt: skip
    print(
        f"note: the checkpoint was trained as {saved} chunks per step (processes x "
        f"grad_accum), this run uses {world} x {grad_accum}: the global batch is the same, "
        f"the noise draws differ from an unbroken run.{exact}"
    )
