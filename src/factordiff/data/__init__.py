"""Datasets with ground-truth factors: procedural generators and the published files."""

from factordiff.data.base import FactorDataset, GridDataset
from factordiff.data.registry import DATASETS, get_spec, load, load_dataset, names

__all__ = ["DATASETS", "FactorDataset", "GridDataset", "get_spec", "load", "load_dataset", "names"]
