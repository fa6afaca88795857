"""The package version, in a leaf module: everything that records it (saved models,
eval.json, reports, ``--version``) imports it from here, never from the package root."""

__version__ = "0.3.0"
