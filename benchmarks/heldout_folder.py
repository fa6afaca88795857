"""A held-out image folder for the recipe's carry-over: data it was not tuned on.

Writes ``DIR/*.png`` (64x64) and ``DIR/factors.csv`` from procedural Shapes3D, five factors
of 4-6 values (floor hue 4, object hue 6, scale 4, shape 4, orientation 5; wall hue fixed):
1,920 images, the size of a small user dataset with ground truth. Then train on it as a
user would, changing only the number of units and the image size:

    python benchmarks/heldout_folder.py runs/heldout64
    python benchmarks/time_to_disentangle.py --dataset imagefolder --data-root runs/heldout64 \\
        --variants recipe_at32 --seeds 42,0,1 --steps 3500
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from factordiff.data import load

#: Shapes3D factor -> the values kept (indices into its grid); wall hue (index 1) fixed at 0
KEEP = {
    0: [0, 3, 5, 8],
    2: [0, 2, 4, 5, 7, 9],
    3: [0, 2, 5, 7],
    4: [0, 1, 2, 3],
    5: [0, 3, 7, 11, 14],
}


def write_folder(out: Path) -> int:
    ds = load("shapes3d")
    out.mkdir(parents=True, exist_ok=True)
    grid = np.array(np.meshgrid(*KEEP.values(), indexing="ij")).reshape(len(KEEP), -1).T
    factors = np.zeros((len(grid), len(ds.factor_sizes)), np.int64)
    factors[:, list(KEEP)] = grid
    names = [ds.factor_names[k] for k in KEEP]
    rows = []
    for lo in range(0, len(factors), 256):
        batch = factors[lo : lo + 256]
        for i, (image, f) in enumerate(zip(ds.images(batch), batch, strict=True)):
            name = f"{lo + i:05d}.png"
            Image.fromarray(image).save(out / name)
            rows.append(",".join([name, *map(str, f[list(KEEP)])]))
    (out / "factors.csv").write_text("file," + ",".join(names) + "\n" + "\n".join(rows) + "\n")
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    n = write_folder(ap.parse_args().out)
    print(f"wrote {n} images and factors.csv")


if __name__ == "__main__":
    main()
