"""Figures (matplotlib, Agg, PNG), all written by ``figure.save_figure``.

- ``grids``: labelled image grids (factor sweeps, latent interchange, traversals, samples,
  reconstructions);
- ``plots``: charts of a run (DCI importance, training curves, unit histograms, DyGA
  anchors, downstream accuracy);
- ``attention_maps``: which image regions attend to each unit's token.
"""

from factordiff.viz.figure import save_figure, unit_panels
from factordiff.viz.grids import (
    as_rgb,
    factor_sweep,
    save_factor_sweep,
    save_grid,
    save_reconstruction_grid,
    save_sample_grid,
    save_swap_grid,
    save_traverse_grid,
    swap_grid,
    traverse_units,
)
from factordiff.viz.plots import save_anchor_plot

__all__ = [
    "as_rgb",
    "factor_sweep",
    "save_anchor_plot",
    "save_factor_sweep",
    "save_figure",
    "save_grid",
    "save_reconstruction_grid",
    "save_sample_grid",
    "save_swap_grid",
    "save_traverse_grid",
    "swap_grid",
    "traverse_units",
    "unit_panels",
]
