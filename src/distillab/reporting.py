"""One voice: everything the library tells the user goes through a Reporter, handed down from the API.

Messages go to the ``distillab`` logger (Python ``logging``); progress to one bar per run, covering all of it with
an ETA: a tqdm bar on a terminal, and without one (a log file, a scheduler) a plain line at a steady interval
(``DISTILLAB_PROGRESS_SECONDS``, default 30), so a redirected log is never silent for long. Warnings go to
``warnings`` (the CLI prints them as ``distillab: warning: ...``). ``Reporter(quiet=True)`` -- the default below
the API -- says nothing. Nothing else in the library prints.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
import weakref

logger = logging.getLogger("distillab")
PROGRESS_SECONDS = 30.0


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is when a message comes (test runners swap it), above any progress bar."""

    def emit(self, record):
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)
        sys.stderr.flush()


def log_to_stderr(level: int | str = logging.INFO) -> None:
    """Messages of the ``distillab`` logger go to stderr, as lines of their own (the CLI's choice)."""
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(level.upper() if isinstance(level, str) else level)
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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class _LineBar(_NoBar):
    """Progress without a terminal: one plain log line every ``interval`` seconds, and one at the end."""

    def __init__(self, total: int | None, desc: str, unit: str, interval: float):
        self.total, self.desc, self.unit, self.interval = total or None, desc, unit, interval
        self.done, self.started = 0, time.monotonic()
        self.last, self.said = self.started, False
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.said = now, True
            logger.info(self._line(now))

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        if self.total:
            eta = elapsed / max(self.done, 1) * (self.total - self.done)
            head = f"{self.desc}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), " \
                   f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}"
        else:
            head = f"{self.desc}: {self.done} {self.unit}, {_duration(elapsed)} elapsed"
        return head + (f"; {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        if self.said:  # a run that spoke along the way also says when it is done
            logger.info(f"{self.desc}: done, {self.done} {self.unit} in {_duration(time.monotonic() - self.started)}")


class Reporter:
    def __init__(self, quiet: bool = False):
        # under torchrun only rank 0 speaks (the RANK variable torchrun sets; no torch.distributed needed here)
        self.quiet = quiet or os.environ.get("RANK", "0") != "0"

    def info(self, message: str) -> None:
        if not self.quiet:
            _ensure_handler()
            logger.info(message)

    def warn(self, message: str) -> None:
        """A warning the user should act on: shown even when quiet (as a Python warning), every time it happens
        (not once per process: a second run in a notebook records its own)."""
        caller = sys._getframe(2)
        warnings.warn_explicit(message, UserWarning, caller.f_code.co_filename, caller.f_lineno,
                               module=caller.f_globals.get("__name__"), registry={})

    def bar(self, total: int | None, desc: str, unit: str = "steps", leave: bool = True):
        """Progress over a whole run: ``update(n)``, ``set_postfix(**values)``, ``close()``. A tqdm bar on a
        terminal, plain lines at a steady interval elsewhere, nothing when quiet."""
        if self.quiet or not logger.isEnabledFor(logging.INFO):
            return _NoBar()
        _ensure_handler()
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit=unit.rstrip("s") or "it", leave=leave, dynamic_ncols=True)
        interval = float(os.environ.get("DISTILLAB_PROGRESS_SECONDS", PROGRESS_SECONDS))
        return _LineBar(total, desc, unit, interval)


SILENT = Reporter(quiet=True)


# What keeps the warnings shown while it lives (a run, for its metrics.json), by the thread it runs in: each hears
# every warning shown in its own thread (two runs in two threads keep their own).
_KEEPERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def keep_warnings(keeper) -> None:
    """From now on, while ``keeper`` lives, ``keeper.kept_warning(message)`` hears every warning shown in this
    thread (whoever raised it: a plug-in's ``warnings.warn`` too -- once per place in the process, as Python shows
    such warnings; ``Reporter.warn`` every time), and the warning is shown as before."""
    shown = warnings.showwarning
    if not getattr(shown, "tells_keepers", False):  # installed once (again after a test runner restores its own)

        def show(message, category, filename, lineno, file=None, line=None):
            here = threading.get_ident()
            for other, thread in list(_KEEPERS.items()):
                if thread == here:
                    other.kept_warning(str(message))
            shown(message, category, filename, lineno, file, line)

        show.tells_keepers = True
        warnings.showwarning = show
    _KEEPERS[keeper] = threading.get_ident()
