"""``hf:PATH_OR_NAME[:key=value,...]``: an image-classification dataset in the Hugging Face ``datasets`` format
(the optional dependency ``pip install 'distillab[hf]'``, imported only when such a spec is loaded).

``PATH_OR_NAME`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
``datasets.load_from_disk``), or a dataset name on the hub (``owner/name``: ``datasets.load_dataset``, from the local
Hugging Face cache or downloaded into it). Options follow after a last colon, as in every other spec (the
issue's ``[:config][@split]`` in the registry's grammar): ``config=NAME`` (a hub dataset's configuration),
``train_split=`` (default ``train``), ``test_split=`` (default ``test``), ``image_column=``, ``label_column=``::

    hf:runs/my-digits
    hf:ylecun/mnist:test_split=test,label_column=label
    hf:/data/pets:train_split=train,test_split=validation,image_column=img

Splits: the named training split; the named test split, or -- when the test split is left at its default and the
dataset has none (or the folder holds one ``Dataset``) -- a seeded fifth of the training split held out, as for
``npz:`` and ``folder:``. Columns: the one ``Image`` feature column (of several, the one named ``image`` or
``img``) and the one ``ClassLabel`` column (of several, or without one, the one named ``label`` or ``labels``,
which then holds whole numbers 0..K-1); class names come from the ``ClassLabel`` feature when there is one.
Images: float (N, C, H, W) in [0, 1], all of one size (mixed sizes are refused, not resized); grey images (PIL
modes 1, L, LA, I;16, I) stay one channel, and if any image is in colour all become RGB (alpha dropped).

Offline: with ``HF_DATASETS_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) set when the spec is loaded -- and whenever
distillab loads without fetching (``fetch=False``) -- a name is looked up in the local Hugging Face cache only; one
that is not there is a one-line error naming the spec, without touching the network. A folder never needs it.

Hostile input: nothing in the dataset is imported or run. Script-based datasets are refused (a folder holding a
``.py`` file, a ``.py`` path; by name, ``trust_remote_code=False``, and ``datasets`` older than 2.16, which ran
loading scripts without asking, loads folders only). Images are decoded here from their stored bytes (or a local
file the row names: never a URL), their sizes read from the image headers and checked against ``MAX_ARRAY_BYTES``
before any pixels are decoded. Any bad input ends in one ``DistillabError`` line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import DistillabError, require
from ...specs import options_from_spec, parse_spec
from ..core import MAX_ARRAY_BYTES, MAX_CLASSES, Dataset, ImageSet, _holdout, _stats
from ..source import DataSource, register_dataset

INSTALL = "pip install 'distillab[hf]' (or pip install datasets)"
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B"}
IMAGE_NAMES, LABEL_NAMES = ("image", "img"), ("label", "labels")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def _import_datasets(where: str):
    try:
        import datasets
    except ImportError:
        raise DistillabError(f"hf:{where} needs the 'datasets' package: {INSTALL}") from None
    return datasets


def _version(datasets) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", getattr(datasets, "__version__", ""))
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _offline_env() -> bool:
    return any(os.environ.get(k, "").upper() in TRUE_VALUES for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


@contextlib.contextmanager
def _offline(datasets):
    """Offline mode for one call: ``datasets`` and ``huggingface_hub`` read their offline switches when imported,
    so setting the variable later would not reach them."""
    targets = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE")]
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants

        targets.append((huggingface_hub.constants, "HF_HUB_OFFLINE"))
    saved = [(m, k, getattr(m, k)) for m, k in targets if hasattr(m, k)]
    try:
        for m, k, _ in saved:
            setattr(m, k, True)
        yield
    finally:
        for m, k, value in saved:
            setattr(m, k, value)


@contextlib.contextmanager
def _quiet_progress(datasets):
    """No progress bars from ``datasets`` while loading (distillab reports through its own reporter)."""
    tqdm = getattr(getattr(datasets, "utils", None), "tqdm", None)
    if tqdm is None or not hasattr(tqdm, "are_progress_bars_disabled") or tqdm.are_progress_bars_disabled():
        yield
        return
    tqdm.disable_progress_bars()
    try:
        yield
    finally:
        tqdm.enable_progress_bars()


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


@register_dataset("hf")
@dataclass
class HF(DataSource):
    """Options after the path or name (``hf:PATH:key=value,...``); see the module's docstring."""

    takes_path = True

    config: str = ""
    train_split: str = "train"
    test_split: str = "test"
    image_column: str = ""
    label_column: str = ""

    def load(self, path, fetch):
        where, opts = self._with_options(path)
        datasets = _import_datasets(where)
        loaded, kind = opts._open(datasets, where, fetch)
        return opts._dataset(datasets, loaded, where, kind)

    # ---- spec ----

    def _with_options(self, text: str) -> tuple[str, "HF"]:
        """PATH_OR_NAME and this source with the options after the last colon (when that part holds '=')."""
        head, colon, tail = text.rpartition(":")
        if not colon or "=" not in tail:
            return text, self
        require(head.strip() != "", f"hf:{text}: no folder or dataset name before the options")
        return head, options_from_spec(type(self), parse_spec("hf:" + tail, "--data").options, f"--data 'hf:{text}'")

    # ---- where the data is ----

    def _open(self, datasets, where: str, fetch: bool):
        """The loaded ``Dataset`` / ``DatasetDict`` and how it was found (``folder`` or ``hub``)."""
        path = Path(where).expanduser()
        if path.exists():
            require(path.is_dir(), f"hf:{where} is a file; hf: takes a folder written by save_to_disk or a dataset "
                                   "name (for arrays use npz:PATH, for image files folder:PATH)")
            require(not self.config, f"hf:{where}: config= names a hub dataset's configuration; a save_to_disk "
                                     "folder has none")
            require(not any(path.glob("*.py")), f"hf:{where} holds a Python file (a dataset loading script); "
                                                "distillab runs no code from data: save the dataset with save_to_disk")
            saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
            require(saved, f"hf:{where} is not a folder written by save_to_disk (no dataset_dict.json or "
                           "state.json); for image files in class folders use folder:PATH")
            try:
                with _quiet_progress(datasets):
                    return datasets.load_from_disk(str(path)), "folder"
            except Exception as e:
                raise DistillabError(f"hf:{where} is not a readable save_to_disk folder ({_first_line(e)})") from None
        require(not where.endswith(".py"), f"hf:{where}: a dataset loading script; distillab runs no code from data")
        require(HUB_NAME.fullmatch(where) is not None,
                f"no such folder: {where} (hf: takes a folder written by save_to_disk or a hub name like owner/name)")
        require(_version(datasets) >= (2, 16), f"hf:{where}: loading by name needs datasets>=2.16 (older versions "
                                               "run a dataset's loading script without asking); upgrade datasets, "
                                               "or give a folder written by save_to_disk")
        offline = not fetch or _offline_env()
        kwargs = {"name": self.config or None, "trust_remote_code": False}
        try:
            with contextlib.ExitStack() as stack:
                if offline:
                    stack.enter_context(_offline(datasets))
                stack.enter_context(_quiet_progress(datasets))
                return datasets.load_dataset(where, **kwargs), "hub"
        except Exception as e:
            if offline:
                why = "offline: HF_DATASETS_OFFLINE is set" if _offline_env() else "offline: no download asked for"
                raise DistillabError(f"hf:{where}: no such folder, and not in the local Hugging Face cache ({why}; "
                                     f"{_first_line(e)}); run it once online to cache it, or give a folder written "
                                     "by save_to_disk") from None
            raise DistillabError(f"hf:{where}: no such folder, and the Hugging Face hub could not load it "
                                 f"({_first_line(e)})") from None

    # ---- splits and columns ----

    def _splits(self, datasets, loaded, where: str):
        """(train split, test split or None for a held-out fifth)."""
        if isinstance(loaded, datasets.Dataset):
            require(self.train_split == "train" and self.test_split == "test",
                    f"hf:{where} holds one dataset, not named splits: leave out train_split= and test_split= "
                    "(a fifth is held out for testing)")
            return loaded, None
        require(isinstance(loaded, datasets.DatasetDict), f"hf:{where}: expected a Dataset or DatasetDict, got "
                                                          f"{type(loaded).__name__}")
        names = ", ".join(loaded) or "none"
        require(self.train_split in loaded, f"hf:{where} has no split '{self.train_split}' (its splits: {names}); "
                                            "name one with train_split=")
        require(self.test_split != self.train_split, f"hf:{where}: train_split and test_split are both "
                                                     f"'{self.train_split}'")
        if self.test_split in loaded:
            return loaded[self.train_split], loaded[self.test_split]
        require(self.test_split == "test", f"hf:{where} has no split '{self.test_split}' (its splits: {names})")
        return loaded[self.train_split], None

    def _columns(self, datasets, split, where: str) -> tuple[str, str, object]:
        """(image column, label column, the ClassLabel feature or None)."""
        features = split.features
        listed = ", ".join(features) or "none"
        if self.image_column:
            require(self.image_column in features, f"hf:{where} has no column '{self.image_column}' (its columns: "
                                                   f"{listed})")
            image = self.image_column
            require(isinstance(features[image], datasets.Image), f"hf:{where}: column '{image}' holds "
                                                                 f"{type(features[image]).__name__}, not images")
        else:
            images = [k for k, f in features.items() if isinstance(f, datasets.Image)]
            named = [k for k in images if k in IMAGE_NAMES]
            require(images, f"hf:{where} has no Image column (its columns: {listed}); image-classification data has "
                            "one")
            require(len(images) == 1 or len(named) == 1, f"hf:{where} has several Image columns "
                                                         f"({', '.join(images)}); name one with image_column=")
            image = images[0] if len(images) == 1 else named[0]
        if self.label_column:
            require(self.label_column in features, f"hf:{where} has no column '{self.label_column}' (its columns: "
                                                   f"{listed})")
            label = self.label_column
        else:
            classlabels = [k for k, f in features.items() if isinstance(f, datasets.ClassLabel)]
            named = [k for k in (classlabels or list(features)) if k in LABEL_NAMES]
            require(classlabels or named, f"hf:{where} has no ClassLabel column and none named label or labels (its "
                                          f"columns: {listed}); name it with label_column=")
            require(len(classlabels) == 1 or len(named) == 1,
                    f"hf:{where} has several label columns ({', '.join(classlabels or named)}); name one with "
                    "label_column=")
            label = classlabels[0] if len(classlabels) == 1 else named[0]
        feature = features[label]
        if isinstance(feature, datasets.ClassLabel):
            return image, label, feature
        require(isinstance(feature, datasets.Value) and re.fullmatch(r"u?int\d+", str(feature.dtype)) is not None,
                f"hf:{where}: label column '{label}' holds "
                f"{feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__}, not "
                "class labels (a ClassLabel or whole numbers 0..K-1)")
        return image, label, None

    # ---- reading ----

    def _dataset(self, datasets, loaded, where: str, kind: str) -> Dataset:
        train_split, test_split = self._splits(datasets, loaded, where)
        image, label, classlabel = self._columns(datasets, train_split, where)
        parts = [("train", train_split)] + ([("test", test_split)] if test_split is not None else [])
        if test_split is not None:
            require(image in test_split.features and label in test_split.features,
                    f"hf:{where}: the test split lacks column '{image}' or '{label}'")
            theirs = test_split.features[label]
            require((classlabel is None) == (not isinstance(theirs, datasets.ClassLabel))
                    and (classlabel is None or list(theirs.names) == list(classlabel.names)),
                    f"hf:{where}: the test split's labels ('{label}') are not the training split's classes")
        budget = _Budget(where)
        rows = [_rows(split, image, label, f"hf:{where} ({part})", budget) for part, split in parts]
        size = rows[0].size
        require(all(r.size == size for r in rows), f"hf:{where}: test images are {rows[-1].size[0]}x"
                                                   f"{rows[-1].size[1]}, training ones {size[0]}x{size[1]}")
        channels = 1 if all(r.grey for r in rows) else 3
        budget.check(sum(len(r) for r in rows) * channels * size[0] * size[1] * 4)
        xs = [r.pixels(channels) for r in rows]
        ys = [r.labels for r in rows]
        if classlabel is not None:
            k = int(classlabel.num_classes)
            require(2 <= k <= MAX_CLASSES, f"hf:{where}: its ClassLabel has {k} classes")
            classes = [str(n) for n in classlabel.names]
        else:
            k = int(ys[0].max()) + 1
            require(k <= MAX_CLASSES, f"hf:{where}: a label of {k - 1} would mean more than {MAX_CLASSES:,} classes")
            classes = [str(i) for i in range(k)]
        for (part, _), y in zip(parts, ys):
            bad = y[(y < 0) | (y >= k)]
            require(len(bad) == 0, f"hf:{where} ({part}): label {int(bad[0]) if len(bad) else 0} is not a class "
                                   f"0..{k - 1}" + (" (-1: a row without a label)" if len(bad) and bad[0] == -1
                                                    else ""))
        train = ImageSet(xs[0], torch.from_numpy(ys[0]))
        if test_split is None:
            require(len(train) >= 3, f"hf:{where} holds {len(train)} rows; at least 3 are needed (train, validation, "
                                     "test)")
            train, test = _holdout(train.x, train.y, 0.2)
        else:
            test = ImageSet(xs[1], torch.from_numpy(ys[1]))
        mean, std = _stats(train.x)
        held = "" if test_split is not None else ", a fifth held out for testing"
        what = "save_to_disk folder" if kind == "folder" else "Hugging Face dataset"
        source = (f"{what} {where}: splits {self.train_split}/{self.test_split if test_split is not None else '-'}"
                  f"{held}, columns {image}/{label}")
        return Dataset(f"hf:{where}", train, test, classes, mean, std, source)


class _Budget:
    """What one dataset may make distillab hold: its stored image bytes and its decoded pixels, each counted
    against ``MAX_ARRAY_BYTES`` before it is read or decoded."""

    def __init__(self, where: str):
        self.where, self.stored = where, 0

    def check(self, nbytes: int, what: str = "images") -> None:
        require(nbytes <= MAX_ARRAY_BYTES, f"hf:{self.where} declares {nbytes / 1024 ** 3:.1f} GiB of {what}, more "
                                           f"than the {MAX_ARRAY_BYTES / 1024 ** 3:.0f} GiB distillab reads")

    def store(self, nbytes: int) -> None:
        self.stored += nbytes
        self.check(self.stored, "stored image bytes")


class _Rows:
    """One split as stored: each row's image (Arrow buffers, not copied, or a local file), their common size,
    whether all are grey, and the labels."""

    def __init__(self, blobs: list, size: tuple[int, int], grey: bool, labels: np.ndarray, where: str):
        self.blobs, self.size, self.grey, self.labels, self.where = blobs, size, grey, labels, where

    def __len__(self) -> int:
        return len(self.blobs)

    def pixels(self, channels: int) -> torch.Tensor:
        w, h = self.size
        out = torch.empty((len(self.blobs), channels, h, w), dtype=torch.float32)
        for i, blob in enumerate(self.blobs):
            try:
                with _open_image(blob) as im:
                    require(im.size == self.size, f"{self.where}: row {i} changed size while it was read")
                    out[i] = torch.from_numpy(_to_array(im, channels))
            except DistillabError:
                raise
            except Exception:
                raise DistillabError(f"{self.where}: row {i} is not a readable image") from None
        return out


def _open_image(blob):
    """A PIL image from a row's stored bytes (copied one image at a time) or its local file."""
    from PIL import Image

    return Image.open(blob if isinstance(blob, str) else io.BytesIO(memoryview(blob)))


def _to_array(im, channels: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 1] from a PIL image: 16- and 32-bit grey scaled by 65535 (clipped), the rest read
    as 8 bits (grey as L, colour as RGB)."""
    if im.mode.startswith("I"):
        grey = (np.clip(np.asarray(im, dtype=np.float64), 0, 65535) / 65535.0).astype(np.float32)
        return np.repeat(grey[None], channels, axis=0)
    a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return a[None] if channels == 1 else a.transpose(2, 0, 1).copy()


def _rows(split, image: str, label: str, where: str, budget: _Budget) -> _Rows:
    """One split's image headers and labels, read from the Arrow table's raw columns (``datasets`` decodes
    nothing), every size checked before any pixel is decoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(split)
    require(n >= 1, f"{where}: no rows")
    budget.check(n * 4)  # every image holds at least one float32 pixel
    blobs, labels, size, grey = [], [], None, True
    try:
        for table in split.with_format("arrow").iter(batch_size=1024):
            column = table.column(image).combine_chunks()
            names = {column.type.field(i).name for i in range(column.type.num_fields)} \
                if pa.types.is_struct(column.type) else set()
            require({"bytes", "path"} <= names, f"{where}: column '{image}' is not stored as images (bytes, path)")
            stored, paths = column.field("bytes"), column.field("path")
            budget.store(int(pc.sum(pc.binary_length(stored)).as_py() or 0))
            for i in range(len(column)):
                blob = stored[i].as_buffer() if stored[i].is_valid else _local_file(paths[i].as_py(), where,
                                                                                    len(blobs))
                size, grey = _header(blob, size, grey, where, len(blobs), n, budget)
                blobs.append(blob)
            values = table.column(label)
            require(values.null_count == 0, f"{where}: label column '{label}' has empty rows")
            labels.append(np.asarray(values.to_numpy(), dtype=np.int64))
    except DistillabError:
        raise
    except Exception as e:
        raise DistillabError(f"{where}: could not read its rows ({_first_line(e)})") from None
    return _Rows(blobs, size, grey, np.concatenate(labels), where)


def _local_file(path, where: str, row: int) -> str:
    """A row that stores a file's path instead of its bytes: a local regular file only (never a URL)."""
    require(isinstance(path, str) and path != "", f"{where}: row {row} holds neither image bytes nor a file")
    require("://" not in path and "::" not in path, f"{where}: row {row} names a remote image ({path[:80]}); "
                                                    "distillab reads no URLs from data")
    require(Path(path).is_file(), f"{where}: row {row} names an image file that is not here ({path[:120]})")
    return path


def _header(blob, size, grey, where: str, row: int, n: int, budget: _Budget):
    """The image's size and whether it is grey, from its header alone; every image must have the first's size."""
    try:
        with _open_image(blob) as im:
            this, mode = im.size, im.mode
    except Exception:
        raise DistillabError(f"{where}: row {row} is not a readable image") from None
    require(mode != "F", f"{where}: row {row} is a floating-point image (mode F); save 8- or 16-bit images")
    if size is None:
        require(this[0] >= 1 and this[1] >= 1, f"{where}: row {row} is an empty image")
        budget.check(n * 3 * this[0] * this[1] * 4)  # float32 RGB, before grey images keep one channel
        size = this
    require(this == size, f"{where}: images differ in size ({size[0]}x{size[1]} and {this[0]}x{this[1]} at row "
                          f"{row}); resize them to one size")
    return size, grey and mode in GREY_MODES
