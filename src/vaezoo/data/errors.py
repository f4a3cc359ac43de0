"""The one exception type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset, file, path or data setting that cannot be used; the message says which and why."""
