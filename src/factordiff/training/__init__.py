"""Training (``factordiff train``): ``loop.train`` and what it stands on.

- ``loop``: the loop, read top to bottom;
- ``batches``: which rows each (step, chunk) trains on, loaders, cached latents;
- ``first_stage``: phase 1, the autoencoder;
- ``state``: what a checkpoint holds and restores;
- ``precision``: the precision a run trains in (bf16 only where the machine has it);
- ``optim``: AdamW, the learning-rate schedule, compilation with an eager fallback;
- ``dyga``: the anchors' refit schedule and refit;
- ``periodic_eval``: scores and a swap grid during training;
- ``run_dir``, ``run_log``, ``run_guard``: the run directory's rules, what a run records,
  and the guards of shared machines (lock, signals, room on disk).
"""

from factordiff.training.loop import train

__all__ = ["train"]
