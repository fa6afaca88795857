"""The one figure writer: matplotlib on the Agg backend (no display needed), PNG out.

Every figure of the package (grids, charts, attention maps, the report's) is written by
``save_figure``, so layout, folders and closing are done the same way everywhere.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save_figure", "unit_panels"]


def save_figure(fig, out: str | Path, dpi: int) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; returns the path."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def unit_panels(n_units: int, height: float = 2.4):
    """A figure with one panel per unit, 5 to a row (spare panels hidden): (fig, axes)."""
    cols = min(n_units, 5)
    rows = -(-n_units // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n_units:]:
        ax.axis("off")
    return fig, axes.ravel()[:n_units]
