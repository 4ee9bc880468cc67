"""A command's output folder, written all-or-nothing.

Everything goes into a hidden sibling folder first; only a command that finishes renames it to ``--out``.
A command that fails (bad input found late, Ctrl-C) leaves no half-written output behind.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path

import yaml

from .errors import require
from .files import to_jsonable


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class RunOutput:
    def __init__(self, out: str | Path | None, command: str, overwrite: bool = False):
        self.final = Path(out) if out else default_out(command)
        exists = self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir()))
        require(not exists or overwrite, f"output folder {self.final} already exists and is not empty; "
                                         "choose another --out or pass --overwrite")
        require(not self.final.exists() or self.final.is_dir(), f"--out {self.final} is a file, not a folder")
        self.dir = self.final.with_name(f".{self.final.name}.partial")
        self._steps = None

    def __enter__(self) -> "RunOutput":
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if exc_type is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return False
        if self.final.exists():
            shutil.rmtree(self.final)
        self.dir.rename(self.final)
        return False

    def path(self, name: str) -> Path:
        return self.dir / name

    def write_config(self, config: dict) -> None:
        with open(self.path("config.yaml"), "w") as f:
            yaml.safe_dump(to_jsonable(config), f, sort_keys=False)

    def log(self, record: dict) -> None:
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")

    def log_step(self, record: dict) -> None:
        """Every training step's named loss terms, in steps.jsonl."""
        if self._steps is None:
            self._steps = open(self.path("steps.jsonl"), "a")
        self._steps.write(json.dumps(record) + "\n")

    def write_metrics(self, metrics: dict) -> None:
        with open(self.path("metrics.json"), "w") as f:
            json.dump(to_jsonable(metrics), f, indent=2)
            f.write("\n")
