"""A command's output folder, written all-or-nothing, resumable, and never shared by two runs.

Everything goes into a hidden sibling folder, ``.NAME.partial``, first; only a command that finishes renames it to
``--out``. A lock in that folder keeps a second run off the same ``--out`` (a one-line error for it). A run that
fails with nothing to resume (bad input found late) leaves nothing behind; one that was stopped (a signal) or that
failed after saving a checkpoint keeps its partial folder, which ``resume=True`` (``--resume OUT``) continues.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml

from . import distributed
from ._version import __version__
from .checkpoint import Checkpoints, Interrupted
from .errors import DistillabError, require
from .files import to_jsonable


def default_out(command: str) -> Path:
    """runs/COMMAND-TIMESTAMP, made unique: repeated calls in one second (a notebook) get -2, -3, ..."""
    base = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists() or path.with_name(f".{path.name}.partial").exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def environment() -> dict:
    """What a run's bits depend on beyond its options and seeds: the software, and the thread count, which sets the
    order of float sums (the same run at 1 and 2 threads drifts apart within tens of optimisation steps)."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "distillab": __version__, "processes": distributed.world(),
            **({"agreement_with_one_process": distributed.AGREEMENT} if distributed.world() > 1 else {})}


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


LOGGERS = ("jsonl", "csv", "tensorboard")
LOCK = ".lock"
CALL = "call.json"
CHECKPOINTS = "checkpoints"
# A finished run's folder carries this file: the command that made it and every path it wrote. --overwrite replaces
# only such a folder, and only while it holds nothing else: a folder of the user's own is never deleted.
MARKER = ".distillab-run"
MARKER_BYTES = 1 << 20


def written_paths(folder: Path) -> list[str]:
    """Every path under ``folder`` (files and folders, relative, sorted), links not followed."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_replaceable(folder: Path) -> None:
    """Refuse, in one line, to replace ``folder`` unless distillab made it as a run's output and it holds only what
    that run wrote (its marker lists every path)."""
    require(not folder.is_symlink(), f"--out {folder} is a symbolic link; --overwrite replaces only a run folder "
                                     "distillab made")
    marker = folder / MARKER
    how = "remove it yourself or choose another --out"
    require(marker.is_file() and not marker.is_symlink(),
            f"--out {folder} was not made by distillab (it has no {MARKER}); --overwrite replaces only run folders "
            f"distillab made: {how}")
    try:
        require(marker.stat().st_size <= MARKER_BYTES, "too large")
        written = json.loads(marker.read_text())["paths"]
        require(isinstance(written, list) and all(isinstance(p, str) for p in written), "not a list of paths")
    except (OSError, ValueError, KeyError, TypeError, DistillabError):
        raise DistillabError(f"--out {folder} has a damaged {MARKER}, so distillab cannot tell what it wrote there: "
                             f"{how}") from None
    extra = sorted(set(written_paths(folder)) - set(written) - {MARKER, LOCK})
    require(not extra, f"--out {folder} holds {len(extra)} path(s) distillab did not write ({', '.join(extra[:3])}"
                       f"{', ...' if len(extra) > 3 else ''}); --overwrite would delete them: move them, or choose "
                       "another --out")


class RunOutput:
    """``with RunOutput(out, command) as run: ... run.path("model.safetensors") ...``

    ``call``: the API call that makes this run (function name and JSON-able arguments), kept in the partial folder
    so that ``distillab.api.resume(out)`` can make it again.
    """

    def __init__(self, out: str | Path | None, command: str, overwrite: bool = False, resume: bool = False,
                 call: dict | None = None, log: tuple[str, ...] | list[str] = ("jsonl",)):
        log = tuple(dict.fromkeys(log or ()))
        bad = [k for k in log if k not in LOGGERS]
        require(not bad, f"--log takes {', '.join(LOGGERS)}; got {', '.join(map(str, bad))}")
        if "tensorboard" in log:
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise DistillabError("--log tensorboard needs the tensorboard package: pip install "
                                     "'distillab[tensorboard]' (or tensorboard)") from None
        self.final = Path(out) if out else default_out(command)
        require(self.final.name not in ("", ".", ".."), f"--out must name a folder to write, not '{self.final}'")
        require(not self.final.is_symlink(), f"--out {self.final} is a symbolic link; name the folder itself")
        self.command, self.overwrite, self.resume, self.call, self.loggers = command, overwrite, resume, call, log
        self._csv: dict[str, tuple] = {}
        self._board = None
        self.writes = distributed.is_main()  # under torchrun, rank 0 writes; the other ranks write nowhere
        require(not self.final.exists() or self.final.is_dir(), f"--out {self.final} is a file, not a folder")
        self.dir = self.final.with_name(f".{self.final.name}.partial")
        finished = self.final.exists() and any(self.final.iterdir())
        require(not finished or overwrite or (resume and self.dir.exists()),
                f"output folder {self.final} already exists and is not empty; "
                + ("that run finished, there is nothing to resume" if resume else
                   "choose another --out or pass --overwrite"))
        if finished and overwrite and self.writes:
            check_replaceable(self.final)  # before any work: the run would delete it at its end
        require(not self.dir.is_symlink(), f"{self.dir} is a symbolic link; distillab writes its runs there itself")
        self._steps = None
        self._lock = None
        self.resumed = False

    # ---- life cycle ----

    def __enter__(self) -> "RunOutput":
        if not self.writes:
            import tempfile

            self._scratch = tempfile.TemporaryDirectory(prefix="distillab-rank")
            self.dir = Path(self._scratch.name)
            return self
        # a partial folder distillab made has its lock file; another one is not emptied (nor touched)
        require(not (self.overwrite and not self.resume and self.dir.is_dir() and not (self.dir / LOCK).exists()
                     and any(self.dir.iterdir())),
                f"{self.dir} was not made by distillab (no {LOCK}); --overwrite deletes only what distillab made: "
                "remove it yourself or choose another --out")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.dir / LOCK, "a")
        except OSError as e:
            raise DistillabError(f"cannot write the output folder {self.final}: {e.strerror or e}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise DistillabError(f"another distillab run is writing {self.final} now; wait for it to finish or "
                                 "choose another --out") from None
        left = [p for p in self.dir.iterdir() if p.name != LOCK]
        if left and self.resume:
            self._check_same_call()
            self.resumed = True
        elif left and self.overwrite:
            for p in left:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif left:
            self._release()
            raise DistillabError(f"an unfinished run left {self.dir}; continue it with --resume {self.final}, or "
                                 "pass --overwrite to start again")
        if not self.resumed and self.call is not None:
            (self.dir / CALL).write_text(json.dumps(to_jsonable(self.call), indent=1) + "\n")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.flush()
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        for handle, _ in self._csv.values():
            handle.close()
        self._csv = {}
        if self._board is not None:
            self._board.close()
            self._board = None
        if not self.writes:
            self._scratch.cleanup()
            return False
        if exc_type is None:
            shutil.rmtree(self.dir / CHECKPOINTS, ignore_errors=True)  # done: nothing left to resume
            try:
                written = [p for p in written_paths(self.dir) if p not in (MARKER, LOCK)]
                (self.dir / MARKER).write_text(json.dumps({"command": self.command, "distillab": __version__,
                                                           "paths": written}) + "\n")
                if self.final.exists():
                    if not self.overwrite and any(self.final.iterdir()):
                        raise DistillabError(f"another run finished writing {self.final} meanwhile; this run's "
                                             f"output stays in {self.dir}")
                    if any(self.final.iterdir()):
                        try:
                            check_replaceable(self.final)  # again: it may have changed while this run ran
                        except DistillabError as e:
                            raise DistillabError(f"{e}; this run's output stays in {self.dir}") from None
                    shutil.rmtree(self.final)
                self.dir.rename(self.final)
                (self.final / LOCK).unlink(missing_ok=True)
            finally:
                self._release()
            return False
        stopped = issubclass(exc_type, (Interrupted, KeyboardInterrupt))
        if stopped and exc is not None:
            exc.resume_out = self.final  # the outermost run's folder is what the user resumes
        if stopped or self.has_checkpoint():
            self._release()  # kept: it can be resumed
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._release()
        return False

    def _release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _check_same_call(self) -> None:
        if self.call is None or not (self.dir / CALL).exists():
            return
        try:
            saved = json.loads((self.dir / CALL).read_text())
        except (OSError, ValueError):
            raise DistillabError(f"{self.dir / CALL} is corrupt; start the run again with --overwrite") from None
        now = to_jsonable(self.call)
        if saved != json.loads(json.dumps(now)):
            keys = sorted(k for k in set(saved.get("kwargs", {})) | set(now.get("kwargs", {}))
                          if saved.get("kwargs", {}).get(k) != now.get("kwargs", {}).get(k))
            raise DistillabError(f"the unfinished run in {self.dir} was started with other options "
                                 f"({', '.join(keys) or saved.get('function')}); resume it with the same ones "
                                 "(--resume OUT alone does), or pass --overwrite to start again")

    # ---- checkpoints ----

    def checkpoints(self, name: str = "loop", every: int = 1) -> Checkpoints | None:
        """The checkpoint file of one loop of this run; the run's logs are cut back to it on resume. None under
        torchrun: a multi-process run is not checkpointed (every rank would need the same file)."""
        if distributed.world() > 1:
            return None
        folder = self.dir / CHECKPOINTS
        folder.mkdir(exist_ok=True)
        return Checkpoints(folder / f"{name}.safetensors", every,
                           logs=[self.path(f) for f in ("metrics.jsonl", "steps.jsonl", "metrics.csv", "steps.csv")],
                           flush=self.flush)

    def has_checkpoint(self) -> bool:
        return (self.dir / CHECKPOINTS).is_dir() and any((self.dir / CHECKPOINTS).glob("*.safetensors"))

    # ---- files ----

    def path(self, name: str) -> Path:
        return self.dir / name

    def flush(self) -> None:
        if self._steps is not None:
            self._steps.flush()
        for handle, _ in self._csv.values():
            handle.flush()
        if self._board is not None:
            self._board.flush()

    def write_config(self, config: dict) -> None:
        with open(self.path("config.yaml"), "w") as f:
            yaml.safe_dump(to_jsonable(config), f, sort_keys=False)

    def log(self, record: dict) -> None:
        """One record per epoch (or iteration, or run): metrics.jsonl, and metrics.csv / TensorBoard on request."""
        with open(self.path("metrics.jsonl"), "a") as f:
            f.write(json.dumps(to_jsonable(record)) + "\n")
        self._extra_loggers("metrics", record, ("epoch", "iteration", "stage", "seed"))

    def log_step(self, record: dict) -> None:
        """Every training step's named loss terms: steps.jsonl, and steps.csv / TensorBoard on request."""
        if self._steps is None:
            self._steps = open(self.path("steps.jsonl"), "a")
        self._steps.write(json.dumps(record) + "\n")
        self._extra_loggers("steps", record, ("step",))

    def log_image(self, tag: str, png: Path) -> None:
        """A figure (the synthetic-set grid) for TensorBoard, when it logs."""
        if "tensorboard" in self.loggers:
            import matplotlib.image

            self._tensorboard().add_image(tag, matplotlib.image.imread(png)[..., :3], dataformats="HWC")

    def _extra_loggers(self, name: str, record: dict, step_keys: tuple) -> None:
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "csv" in self.loggers:
            if name not in self._csv:
                import csv

                path = self.path(f"{name}.csv")
                fresh = not path.exists() or path.stat().st_size == 0
                handle = open(path, "a", newline="")
                writer = csv.DictWriter(handle, fieldnames=list(scalars), extrasaction="ignore")
                if fresh:
                    writer.writeheader()
                self._csv[name] = (handle, writer)
            self._csv[name][1].writerow(scalars)
        if "tensorboard" in self.loggers:
            step = next((int(record[k]) for k in step_keys if isinstance(record.get(k), (int, float))), None)
            for key, value in scalars.items():
                if key not in step_keys:
                    self._tensorboard().add_scalar(f"{'epoch' if name == 'metrics' else 'step'}/{key}", value, step)

    def _tensorboard(self):
        if self._board is None:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(log_dir=str(self.path("tensorboard")))
        return self._board

    def write_metrics(self, metrics: dict) -> None:
        if "tensorboard" in self.loggers:  # the run's final figures beside its curves (test accuracy, ...)
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard().add_scalar(f"final/{key}", value)
        with open(self.path("metrics.json"), "w") as f:
            json.dump(to_jsonable({**metrics, "environment": environment()}), f, indent=2)
            f.write("\n")
