"""User-facing errors.

Anything a user can cause (a missing file, a bad key, a wrong shape) raises a subclass of
:class:`FactordiffError`. The CLI prints such errors as one line and exits non-zero, so
the message itself must say which file/key was wrong and what was expected.
"""

from __future__ import annotations


class FactordiffError(Exception):
    """Base class for errors caused by user input; the message is shown as-is."""


class DatasetError(FactordiffError):
    """A dataset is unknown, missing, corrupt or not in the published layout."""


class ConfigError(FactordiffError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class MetricInputError(FactordiffError, ValueError):
    """Codes/factors/attributes of the wrong shape, length or content, or an unknown metric."""


class CheckpointError(FactordiffError):
    """A checkpoint is missing, incomplete or does not fit the model."""


class DownloadError(FactordiffError):
    """A download failed or its checksum did not match."""
