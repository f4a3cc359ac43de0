"""The exception types of the data package."""

from __future__ import annotations

import re

# What torch's ExceptionWrapper.reraise() hands the exception type when a DataLoader worker raised:
# "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
# followed by the worker's whole formatted traceback.
WORKER_TRACEBACK = re.compile(
    r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n"
)


def worker_message(text: str) -> str:
    """The original message of an exception a DataLoader worker raised, without the traceback torch
    wraps around it (``text`` itself if it is not such a wrapper).

    The wrapper is the worker's formatted traceback: indented frame lines, then the unindented
    ``module.Type: message`` line(s) -- the message may span lines. Chained exceptions never occur
    (the data package raises ``from None``), and the first unindented line starts the message.
    """
    found = WORKER_TRACEBACK.match(text)
    if found is None:
        return text
    lines = text[found.end() :].splitlines()
    for i, line in enumerate(lines):
        if line and not line[0].isspace():
            _, sep, first = line.partition(": ")
            return "\n".join([first if sep else line, *lines[i + 1 :]]).strip() or text
    return text


class DataError(ValueError):
    """A dataset, file, path or data setting that cannot be used; the message says which and why.

    Raised inside a DataLoader worker, it reaches the main process as a new DataError built from
    the worker's whole traceback; the constructor keeps only the original message, so a bad file
    met mid-epoch reads the same with ``data.num_workers`` 0 or 8 (``vaezoo train: error: ...``).
    """

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (worker_message(args[0]),)
        super().__init__(*args)


class BadImageFile(DataError):
    """An image file that cannot be read or decoded (truncated, not an image, damaged).

    ``path`` and ``reason`` (what failed, without the advice) are kept for the warning of
    ``data.bad_files: skip``; they do not cross a worker boundary (only the message does).
    """

    def __init__(self, message: str, path: object = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason


class SkippedFileWarning(UserWarning):
    """An unreadable image file was left out (``data.bad_files: skip``)."""
