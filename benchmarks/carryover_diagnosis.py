"""Where does a factor get lost: in the pixels, in the first stage, or in the units? (issue 30)

For every factor of a run's dataset, at the run's image size:

- **salience**: the mean squared pixel change when only that factor changes, relative to
  the change between two random images (above 1 where random images often share the
  factor's value): how much of the picture the factor moves. Needs a dataset holding every
  combination of factor values (a full grid);
- **pixels / first stage**: a small CNN probe fit on 75 % of the images and scored on the
  other 25 %, once on the images and once, fit afresh, on the first stage's reconstructions
  (encode/decode). A factor the autoencoder blurs away loses accuracy in the second column;
- **units**: probes on the code the metrics score (all units together: linear, and
  gradient-boosted trees), beside the FactorVAE vote accuracy of the run's evaluation,
  which needs one unit that varies least when that factor is fixed. A factor the units
  carry but share fails only the vote (entangled); one they do not carry fails every column
  (ignored).

Also writes ``..._RUN.png`` per run: 12 images (top) over their first-stage reconstructions.

    python benchmarks/carryover_diagnosis.py runs/heldout_seed0 --name heldout_folder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from train_throughput import cpu_name

from factordiff.data import load_dataset
from factordiff.data.loader import to_float, to_uint8
from factordiff.metrics.representation import reduce_representation
from factordiff.pipeline import load_pretrained

RESULTS = Path(__file__).parent / "results"
PROBE_EPOCHS = 20


def sample(dataset, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct images (all of a smaller dataset) and their factor classes."""
    rows = np.sort(np.random.RandomState(seed).permutation(len(dataset))[:n])
    return dataset.images_at(rows), dataset.index_to_factors(rows)


def salience(dataset, images: np.ndarray, factors: np.ndarray, seed: int) -> list[float]:
    """Per factor: E|x - x'|^2 with x' differing from x (uint8 ``images`` of ``factors``) in
    that factor only, over the same for two random images (pixels in [-1, 1])."""
    rng = np.random.RandomState(seed)
    x = to_float(images).numpy()
    between_random = 2 * float(x.var(axis=0).mean())
    out = []
    for k, size in enumerate(dataset.factor_sizes):
        if size == 1:
            out.append(float("nan"))
            continue
        moved = factors.copy()
        moved[:, k] = (moved[:, k] + rng.randint(1, size, len(factors))) % size
        y = to_float(dataset.images(moved)).numpy()
        out.append(float(((x - y) ** 2).mean()) / between_random)
    return out


def cnn_probe(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int) -> float:
    """Test accuracy of a 3-layer CNN (float NCHW images in [-1, 1]) trained on rows ``tr``:
    nonlinear and translation-tolerant, as telling a factor from pixels needs."""
    torch.manual_seed(seed)
    n_cls = int(y.max()) + 1
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, n_cls),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    rng = np.random.RandomState(seed)
    for _ in range(PROBE_EPOCHS):
        for batch in np.array_split(rng.permutation(tr), max(1, len(tr) // 64)):
            loss = torch.nn.functional.cross_entropy(net(xt[batch]), yt[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((net(xt[te]).argmax(1) == yt[te]).float().mean())


def code_probe(
    codes: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, kind: str
) -> float:
    """Test accuracy of a linear or gradient-boosted probe of all units together."""
    scaler = StandardScaler().fit(codes[tr])
    if kind == "linear":
        clf = LogisticRegression(max_iter=300, C=1.0)
    else:
        clf = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    clf.fit(scaler.transform(codes[tr]), y[tr])
    return float(clf.score(scaler.transform(codes[te]), y[te]))


def reconstruction_strip(model, dataset, n: int, seed: int) -> np.ndarray:
    """uint8 image: ``n`` images at the model's size above their first-stage reconstructions."""
    images, _ = sample(dataset, n, seed)
    rows = [to_uint8(model.prepare_images(images)), model.autoencode(images)]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def vote_accuracy(run: Path) -> list[float] | None:
    """The FactorVAE per-factor vote accuracy the run's evaluation wrote, if any."""
    for name in ("cell.json", "eval.json"):
        path = run / name
        if path.is_file():
            data = json.loads(path.read_text())
            data = data.get("row", data)
            found = data.get("factorvae_per_factor") or data.get("factorvae", {}).get(
                "eval_accuracy_per_factor"
            )
            if found:
                return [float(v) for v in found]
    return None


def diagnose(run: Path, n_images: int, seed: int, trained_units: bool) -> dict:
    model = load_pretrained(run)
    dataset = load_dataset(model.config.data)
    images, factors = sample(dataset, n_images, seed)
    split = np.random.RandomState(seed + 1).permutation(len(images))
    tr, te = split[: len(split) * 3 // 4], split[len(split) * 3 // 4 :]
    pixels = model.prepare_images(images).cpu().numpy()
    recon = to_float(model.autoencode(images)).numpy()
    codes = None
    if trained_units:
        represent, _ = reduce_representation(
            model.represent, images[tr[:1000]], model.config.eval.representation
        )
        codes = np.asarray(represent(images))
    rows = []
    sal = salience(dataset, images, factors, seed)
    votes = vote_accuracy(run) if trained_units else None
    for k, name in enumerate(dataset.factor_names):
        if dataset.factor_sizes[k] == 1:
            continue
        y = factors[:, k]
        row = {
            "factor": name,
            "values": int(dataset.factor_sizes[k]),
            "salience": sal[k],
            "chance": float(np.bincount(y[te]).max() / len(te)),
        }
        row["pixels_cnn"] = cnn_probe(pixels, y, tr, te, seed)
        row["first_stage_cnn"] = cnn_probe(recon, y, tr, te, seed)
        if codes is not None:
            row["units_linear"] = code_probe(codes, y, tr, te, "linear")
            row["units_trees"] = code_probe(codes, y, tr, te, "trees")
        if votes is not None:
            row["factorvae_vote"] = votes[k]
        rows.append(row)
    strip = reconstruction_strip(model, dataset, 12, seed + 2)
    return {
        "strip": strip,
        "run": str(run),
        "dataset": model.config.data.name,
        "image_size": model.image_size,
        "images": len(images),
        "seed": seed,
        "represents": model.representation_of if codes is not None else None,
        "cpu": cpu_name(),
        "factors": rows,
    }


COLUMNS = [
    ("salience", "salience"),
    ("pixels_cnn", "pixels, CNN"),
    ("first_stage_cnn", "first stage's reconstructions, CNN"),
    ("units_linear", "units, linear"),
    ("units_trees", "units, trees"),
    ("factorvae_vote", "FactorVAE vote"),
    ("chance", "chance"),
]


def markdown(out: dict) -> str:
    cols = [(k, t) for k, t in COLUMNS if any(k in r for r in out["factors"])]
    lines = [
        f"{out['run']} ({out['dataset']}, {out['image_size']}x{out['image_size']}, "
        f"{out['images']} images drawn with sampling seed {out['seed']}; {out['cpu']}). Probe "
        "accuracies and chance are on the held-out quarter; the FactorVAE vote is the run's "
        "own evaluation.",
        "",
        "| factor | values | " + " | ".join(t for _, t in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for r in out["factors"]:
        cells = [f"{r[k]:.3f}" if k in r else "" for k, _ in cols]
        lines.append(f"| {r['factor']} | {r['values']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run directories (or saved models)")
    ap.add_argument("--name", required=True, help="results/carryover_diagnosis_NAME.{json,md}")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--first-stage-only",
        action="store_true",
        help="the runs' units are untrained (a first stage alone): skip the unit probes",
    )
    args = ap.parse_args()
    results = [diagnose(r, args.images, args.seed, not args.first_stage_only) for r in args.runs]
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"carryover_diagnosis_{args.name}"
    for run, r in zip(args.runs, results, strict=True):
        strip = r.pop("strip").repeat(3, axis=0).repeat(3, axis=1)
        Image.fromarray(strip).save(f"{stem}_{run.name}.png")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = "\n".join(markdown(r) for r in results)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
