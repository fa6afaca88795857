"""Does UDR pick the EncDiff runs the supervised scores prefer? (issue 30)

Reads finished runs that carry their supervised scores (the paired grid's cells:
``runs/dyga_paired/*/cell.json``, each with FactorVAE and DCI-D at the full protocol),
computes the UDR of every run against the others on the same 1000 images (``factordiff
udr``; Lasso, disentanglement_lib's settings) -- once over all runs, once within each arm
(the paper compares runs of one setting) -- and reports the Spearman rank correlation of
UDR with FactorVAE and DCI-D, with a 95 % interval (Fisher z, standard error
1.06 / sqrt(n - 3), Fieller et al. 1957), and whether the run UDR ranks first is the best
by the supervised scores. Writes JSON + markdown + a scatter plot.

    python benchmarks/udr_selection.py --runs runs/dyga_paired --name udr_selection_quickstart
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats
from train_throughput import cpu_name

RESULTS = Path(__file__).parent / "results"
SUPERVISED = {"factorvae/eval_accuracy": "FactorVAE", "dci/disentanglement": "DCI-D"}


def rank_correlation(x: list[float], y: list[float]) -> dict:
    """Spearman's rho with a 95 % Fisher-z interval (SE 1.06 / sqrt(n - 3), the variance
    Fieller et al. give for Spearman's rho); no interval below 4 points."""
    n = len(x)
    rho = float(stats.spearmanr(x, y).statistic)
    if n < 4 or not np.isfinite(rho):
        return {"n": n, "rho": rho, "ci95": [float("nan")] * 2}
    z, half = np.arctanh(np.clip(rho, -0.999999, 0.999999)), 1.96 * 1.06 / np.sqrt(n - 3)
    return {"n": n, "rho": rho, "ci95": [float(np.tanh(z - half)), float(np.tanh(z + half))]}


def finished_cells(root: Path) -> list[tuple[Path, dict]]:
    cells = []
    for done in sorted(root.glob("*/cell.json")):
        cells.append((done.parent, json.loads(done.read_text())["row"]))
    return cells


def selection(cells: list[tuple[Path, dict]], images: int) -> dict:
    from factordiff.selection import udr_of_runs

    runs = [run for run, _ in cells]
    rows = [row for _, row in cells]
    everyone = udr_of_runs(runs, n_images=images, progress=False)
    out: dict = {"runs": [str(r) for r in runs], "arms": [r["variant"] for r in rows],
                 "seeds": [r["seed"] for r in rows], "udr_all": everyone["scores"],
                 "active_units": [sum(a) for a in everyone["active"]],
                 "activity_rule": everyone["activity_rule"], "images": images}  # fmt: skip
    within = [float("nan")] * len(runs)
    for arm in sorted(set(out["arms"])):
        idx = [i for i, a in enumerate(out["arms"]) if a == arm]
        if len(idx) >= 2:
            scores = udr_of_runs([runs[i] for i in idx], n_images=images, progress=False)["scores"]
            for i, s in zip(idx, scores, strict=True):
                within[i] = s
    out["udr_within_arm"] = within
    out["supervised"] = {k: [r[k] for r in rows] for k in SUPERVISED}
    out["correlation"] = {
        f"udr_all vs {SUPERVISED[k]}": rank_correlation(out["udr_all"], out["supervised"][k])
        for k in SUPERVISED
    }
    best = int(np.argmax(out["udr_all"]))
    pick: dict = {"run": out["runs"][best]}
    for key, values in out["supervised"].items():
        rank = 1 + sum(x > values[best] for x in values)
        pick[SUPERVISED[key]] = {"value": values[best], "rank": int(rank)}
    out["udr_pick"] = pick
    return out


def markdown(out: dict) -> str:
    lines = [f"UDR (Lasso, {out['images']} images, {out['activity_rule']}) of {len(out['runs'])} "
             f"finished runs vs their full-protocol scores. Machine: {cpu_name()}.", "",
             "| run | arm | seed | UDR (all runs) | UDR (within arm) | FactorVAE | DCI-D |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    sup = out["supervised"]
    for i, run in enumerate(out["runs"]):
        lines.append(f"| {Path(run).name} | {out['arms'][i]} | {out['seeds'][i]} | "
                     f"{out['udr_all'][i]:.3f} | {out['udr_within_arm'][i]:.3f} | "
                     f"{sup['factorvae/eval_accuracy'][i]:.3f} | "
                     f"{sup['dci/disentanglement'][i]:.3f} |")  # fmt: skip
    lines += ["", "Spearman rank correlation, 95 % Fisher-z interval:", ""]
    for name, c in out["correlation"].items():
        lines.append(f"- {name}: rho {c['rho']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] "
                     f"(n = {c['n']})")  # fmt: skip
    pick = out["udr_pick"]
    fv, dci = pick["FactorVAE"], pick["DCI-D"]
    lines += ["", f"UDR's pick: {Path(pick['run']).name} -- FactorVAE {fv['value']:.3f} (rank "
              f"{fv['rank']} of {len(out['runs'])}), DCI-D {dci['value']:.3f} (rank "
              f"{dci['rank']})."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, (key, name) in zip(axes, SUPERVISED.items(), strict=True):
        for arm in sorted(set(out["arms"])):
            idx = [i for i, a in enumerate(out["arms"]) if a == arm]
            ax.scatter([out["udr_all"][i] for i in idx],
                       [out["supervised"][key][i] for i in idx], label=arm)  # fmt: skip
        c = out["correlation"][f"udr_all vs {name}"]
        ax.set_title(f"{name} vs UDR: rho {c['rho']:+.2f}", fontsize=9)
        ax.set_xlabel("UDR (all runs)")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/dyga_paired"))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--name", default="udr_selection_quickstart")
    args = parser.parse_args()
    cells = finished_cells(args.runs)
    if len(cells) < 3:
        raise SystemExit(f"{args.runs}: {len(cells)} finished runs with scores; UDR needs >= 3")
    out = selection(cells, args.images)
    out["cpu"] = cpu_name()
    stem = RESULTS / args.name
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    table = markdown(out)
    stem.with_suffix(".md").write_text(table)
    plot(out, stem.with_suffix(".png"))
    print(table)
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()
