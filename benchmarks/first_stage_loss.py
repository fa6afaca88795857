"""What the quick-start first stage keeps of the objects: L1 against L2 reconstruction loss.

Trains the quick-start preset's first stage once per loss (``factordiff train`` with one
diffusion step, so the real training path and its calibration run), then reconstructs every
image and reports the error over all pixels and over the object's pixels only (those that
differ from the background), with a figure: originals, L1 reconstructions, L2
reconstructions. Small objects are a few percent of the pixels, so the error over all
pixels hides what the diffusion model is later asked to generate.

    python benchmarks/first_stage_loss.py            # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from factordiff.data import load
from factordiff.pipeline import FactorDiffusion

HERE = Path(__file__).parent
LOSSES = ("l1", "l2")


def train_first_stage(loss: str, work: Path, seed: int) -> Path:
    run = work / f"{loss}-s{seed}"
    if not (run / "checkpoints").is_dir():
        cmd = [sys.executable, "-m", "factordiff", "train", "quickstart", "--out", str(run),
               f"model.first_stage.loss={loss}", f"train.seed={seed}", "train.max_steps=1",
               "train.eval_every=0"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return run


@torch.no_grad()
def reconstruct(run: Path, images: np.ndarray) -> np.ndarray:
    model = FactorDiffusion.from_pretrained(run)
    fs = model.first_stage
    out = [
        fs.decode(fs.encode(model.prepare_images(images[i : i + 256]))).clamp(-1, 1)
        for i in range(0, len(images), 256)
    ]
    return torch.cat(out).permute(0, 2, 3, 1).numpy()


def errors(x: np.ndarray, recon: np.ndarray) -> dict:
    background = np.median(x.reshape(-1, 3), axis=0)
    obj = np.abs(x - background).max(axis=-1) > 0.1  # the object's pixels
    diff = np.abs(recon - x)
    return {"l1_all": float(diff.mean()), "mse_all": float((diff**2).mean()),
            "l1_object": float(diff[obj].mean()), "object_share": float(obj.mean())}  # fmt: skip


def figure(images: np.ndarray, recons: dict, out: Path) -> None:
    from PIL import Image

    rows = [images] + [((recons[k] + 1) * 127.5).round().astype(np.uint8) for k in LOSSES]
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/first_stage_loss")
    args = ap.parse_args()
    dataset = load("quickstart")
    rows = np.arange(len(dataset))
    x = dataset.images_at(rows).astype(np.float32) / 127.5 - 1
    recons, record = {}, {"seed": args.seed, "images": len(rows)}
    for loss in LOSSES:
        run = train_first_stage(loss, Path(args.work), args.seed)
        recons[loss] = reconstruct(run, dataset.images_at(rows))
        record[loss] = errors(x, recons[loss])
    pick = np.random.RandomState(0).choice(len(rows), 16, replace=False)
    pick = pick[np.argsort(dataset.index_to_factors(pick)[:, 0], kind="stable")]  # by shape
    figure(dataset.images_at(pick), {k: v[pick] for k, v in recons.items()},
           HERE / "results" / "first_stage_loss.png")  # fmt: skip
    (HERE / "results" / "first_stage_loss.json").write_text(json.dumps(record, indent=1))
    print("| loss | L1 all pixels | MSE all pixels | L1 object pixels |")
    print("|---|---|---|---|")
    for loss in LOSSES:
        r = record[loss]
        print(f"| {loss} | {r['l1_all']:.4f} | {r['mse_all']:.5f} | {r['l1_object']:.4f} |")
    print(f"object pixels: {record['l1']['object_share']:.1%} of all")


if __name__ == "__main__":
    main()
