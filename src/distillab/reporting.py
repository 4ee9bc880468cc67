"""One voice: everything the library tells the user goes through a Reporter, handed down from the API.

Messages go to the ``distillab`` logger (Python ``logging``), progress to tqdm bars; warnings to ``warnings``
(the CLI prints them as ``distillab: warning: ...``). ``Reporter(quiet=True)`` -- the default below the API --
says nothing. Nothing else in the library prints.
"""

from __future__ import annotations

import logging
import sys
import warnings

logger = logging.getLogger("distillab")


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a message comes (test runners swap it)."""

    def emit(self, record):
        sys.stderr.write(self.format(record) + "\n")
        sys.stderr.flush()


def log_to_stderr() -> None:
    """Messages of the ``distillab`` logger go to stderr, as lines of their own (the CLI's choice)."""
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _ensure_handler() -> None:
    """Messages reach stderr even when the application configured no logging (scripts using the API)."""
    if not logger.handlers and not logging.getLogger().handlers:
        log_to_stderr()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Reporter:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            _ensure_handler()
            logger.info(message)

    def warn(self, message: str) -> None:
        """A warning the user should act on: shown even when quiet (as a Python warning)."""
        warnings.warn(message, stacklevel=3)

    def bar(self, total: int | None, desc: str, leave: bool = True):
        """A progress bar (tqdm; off without a terminal and when quiet): ``update()``, ``set_postfix()``, ``close()``."""
        if self.quiet:
            return _NoBar()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=leave, disable=None)


SILENT = Reporter(quiet=True)
