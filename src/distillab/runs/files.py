"""What works on files without a long run: a model's outputs for a black box (``predict``), pseudo-labels
(``pseudolabel``), datasets (``data_fetch``, ``data_info``), serving a model (``serve``), exporting and importing
(``export``, ``export_synset``, ``import_synset``) and loading (``load``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import data as data_mod
from .. import seeds
from ..condense import SyntheticSet
from ..condense.synset import SYNSET_FORMAT
from ..errors import DistillabError, require
from ..files import atomic_path, final_path, load_tensors, read_meta
from ..models import MODEL_FORMAT, FromSignals, Renormalise, SignalShapes, load_model
from ..reporting import Reporter
from ..training import predict_logits, resolve_device
from .training import model_and_data


def predict(model_path, data: str | None = None, *, split: str = "train", output: str = "probs",
            top_k: int | None = None, out=None, device: str = "cpu", overwrite: bool = False, quiet: bool = False,
            trust_code: bool = False) -> dict:
    """Write a model's outputs as a black-box API would give them: ``probs`` or ``logits``, optionally only the
    top-k probabilities. Rows follow the dataset's own order (``index``), so any validation split can use them; the
    file also records the dataset, its size and its labels, so a student can check the rows are its own."""
    require(output in ("probs", "logits"), f"--output must be probs or logits, got {output}")
    require(split in ("train", "test"), f"--split must be train or test, got {split}")
    require(top_k is None or output == "probs", "--top-k goes with --output probs")
    device = resolve_device(device)
    out = Path(out) if out else Path("runs") / f"predict-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    require(out.suffix == ".npz", f"--out for predict must end in .npz, got {out}")
    require(not out.exists() or overwrite, f"{out} exists; choose another --out or pass --overwrite")
    model, meta, data, ds = model_and_data(model_path, data, "model", trust_code)
    require(top_k is None or 1 <= top_k < ds.num_classes, f"--top-k must be between 1 and {ds.num_classes - 1}")
    norm = meta["normalisation"]
    images = ds.train if split == "train" else ds.test
    logits = predict_logits(model, data_mod.normalise(images.x, norm["mean"], norm["std"]), device=device)
    arrays = {"index": np.arange(len(images), dtype=np.int64), "labels": images.y.numpy().astype(np.int64),
              "dataset": np.array(data), "split": np.array(split)}
    if output == "logits":
        arrays["logits"] = logits.numpy()
    elif top_k is None:
        arrays["probs"] = torch.softmax(logits, 1).numpy()
    else:
        p, i = torch.softmax(logits, 1).topk(top_k, dim=1)
        arrays["topk_prob"], arrays["topk_index"] = p.numpy(), i.numpy().astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npz") as tmp:
        np.savez(tmp, **arrays)
    info = {"out": str(out), "rows": len(images), "output": output, "top_k": top_k, "split": split, "data": data}
    Reporter(quiet).info(f"wrote {out}: {len(images)} rows of {'top-%d ' % top_k if top_k else ''}{output}")
    return info


def pseudolabel(teacher, data: str, *, transforms: str | None = None, threshold: float | None = None,
                soft: bool | None = None, out=None, overwrite: bool = False, device: str = "cpu",
                quiet: bool = False, trust_code: bool = False) -> dict:
    """Omni-supervised pseudo-labels (Radosavovic et al. 2018): ``teacher`` (a model file) labels the images of
    ``data`` (``npz:PATH`` without ``y``, ``folder:PATH`` of image files, or a labelled dataset whose labels are not
    used) by its class probabilities averaged over the views of ``transforms``; images whose averaged top
    probability reaches ``threshold`` keep the argmax, or with ``soft`` the probabilities. Writes the file ``out``
    (.npz: positions, labels, the data's spec and hash) that ``train``/``distill`` take as ``pseudo``. Options not
    given keep ``pseudolabel.PseudoLabelConfig``'s defaults."""
    from .. import pseudolabel as pl

    started = time.time()
    given = {k: v for k, v in (("transforms", transforms), ("threshold", threshold), ("soft", soft)) if v is not None}
    config = pl.PseudoLabelConfig(**given).check()
    require(isinstance(teacher, (str, Path)), "the teacher must be a model file (.safetensors)")
    device = resolve_device(device)
    out = Path(out) if out else Path("runs") / f"pseudolabel-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    require(out.suffix == ".npz", f"--out for pseudolabel must end in .npz, got {out}")
    require(not out.exists() or overwrite, f"{out} exists; choose another --out or pass --overwrite")
    model, meta = load_model(teacher, trust_code=trust_code)
    unlabeled = data_mod.load_unlabeled(data)
    labels = pl.pseudolabel(model.to(device), meta, unlabeled, config, teacher_path=teacher, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npz") as tmp:
        labels.save(tmp)
    counts = torch.bincount(labels.labels, minlength=len(meta["classes"])).tolist()
    info = {"out": str(out), "data": unlabeled.spec, "images": len(unlabeled), "kept": len(labels),
            "kept_fraction": round(len(labels) / len(unlabeled), 6), "labels": "soft" if config.soft else "hard",
            "threshold": config.threshold, "transforms": labels.meta["transforms"],
            "views": len(labels.meta["views"]), "mean_confidence": float(labels.confidence.mean()),
            "per_class": dict(zip(labels.meta["classes"], counts)), "teacher": final_path(teacher),
            "data_had_labels": unlabeled.labelled, "wall_seconds": round(time.time() - started, 2)}
    Reporter(quiet).info(f"wrote {out}: {len(labels)} of {len(unlabeled)} images of {unlabeled.spec} pseudo-labelled "
                         f"({info['labels']}, {info['views']} views: {labels.meta['transforms']})"
                         + ("; the data's own labels were not used" if unlabeled.labelled else ""))
    return info


def data_fetch(name: str) -> dict:
    return data_mod.info(data_mod.load(name, fetch=True))


def data_info(name: str) -> dict:
    return data_mod.info(data_mod.load(name, fetch=False))


def data_export(name: str, *, split: str = "train", out=None, overwrite: bool = False, quiet: bool = False) -> dict:
    """A dataset's rows in its own order, for a teacher outside distillab to answer: its answers, saved beside the
    same ``index``, ``labels`` and ``split`` as 'probs' or 'logits' (``distill(teacher_outputs=...)``'s table), find
    their rows whatever validation split a student carves. Writes ``out`` (.npz): ``x`` (the raw values as the data
    holds them: pixels in [0, 1] as (N, C, H, W), 1-D signals as (N, L) or (N, C, L); ``layout`` says which), ``index`` (the
    rows' positions), ``labels``, ``dataset`` (its spec) and ``split``. The training split is the whole training
    data, the rows a student's validation split is carved from included."""
    require(split in ("train", "test"), f"--split must be train or test, got {split}")
    out = Path(out) if out else Path("runs") / f"data-{split}-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    require(out.suffix == ".npz", f"--out for data export must end in .npz, got {out}")
    require(not out.exists() or overwrite, f"{out} exists; choose another --out or pass --overwrite")
    ds = data_mod.load(name)
    rows = ds.train if split == "train" else ds.test
    x, layout = data_mod.to_natural(rows.x, ds.layout), ds.layout or "NCHW"  # 1-D signals as the data has them
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npz") as tmp:
        np.savez(tmp, x=x.numpy().astype(np.float32), layout=np.array(layout),
                 index=np.arange(len(rows), dtype=np.int64), labels=rows.y.numpy().astype(np.int64),
                 dataset=np.array(ds.spec), split=np.array(split))
    Reporter(quiet).info(f"wrote {out}: {len(rows)} rows of {ds.spec}'s {split} split, {layout} "
                         f"{tuple(x.shape[1:])}, in its own order")
    return {"out": str(out), "data": ds.spec, "split": split, "rows": len(rows), "layout": layout,
            "shape": list(x.shape[1:])}


def serve(model, *, host: str | None = None, port: int | None = None, output: str | None = None, token_file=None,
          max_batch: int | None = None, rate: float | None = None, noise: float | None = None,
          round: int | None = None, seed: int | None = None, request_timeout: float | None = None,
          max_connections: int | None = None, device: str = "cpu", block: bool = False, quiet: bool = False,
          trust_code: bool = False):
    """Serve a model file's outputs over HTTP (Starlette on uvicorn): ``GET /info`` (input shape, classes, the
    normalisation a client applies -- never the weights), ``POST /predict`` (probabilities, ``topk:K`` or labels;
    JSON or safetensors bodies), ``GET /health``, ``GET /metrics``. ``token_file``: bearer-token auth; ``max_batch``,
    ``rate`` (requests per second): limits; ``noise``, ``round``: defences against extraction; ``request_timeout``
    (seconds a client has to send a whole request), ``max_connections`` (open at once; beyond: 503) keep slow or idle
    clients from holding the service. Options left out take ``service.server.ServeOptions``'s defaults (the port: a
    free one; with ``block=True``, ``FOREGROUND_PORT``, 8000). Returns a handle (``.url``, ``.stop()``), or with
    ``block=True`` (the CLI) serves until SIGINT/SIGTERM."""
    from ..service.server import ServeOptions, serve_forever, start_service
    from ..service.tokens import read_token_file

    net, meta = load_model(model, trust_code=trust_code)
    given = {"host": host, "port": port, "output": output, "max_batch": max_batch, "rate": rate, "noise": noise,
             "round": round, "seed": seed, "request_timeout": request_timeout, "max_connections": max_connections}
    options = ServeOptions(**{k: v for k, v in given.items() if v is not None},
                           token=read_token_file(token_file) if token_file else None)
    options.check(len(meta["classes"]))
    device = resolve_device(device)
    if block:
        serve_forever(net, meta, options, device=device, reporter=Reporter(quiet))
        return None
    return start_service(net, meta, options, device=device)


MODEL_EXPORTS = (".pt2", ".ts", ".onnx")


def export(path, to, *, overwrite: bool = False, trust_code: bool = False) -> dict:
    """A synthetic set as .npz or a PNG grid (``export_synset``); a model file as something plain PyTorch (or an
    ONNX runtime) runs without distillab: ``.pt2`` (torch.export), ``.ts`` (TorchScript) or ``.onnx`` (one
    self-contained file, input ``x``, output ``logits``). The exported model takes inputs as the data holds them
    (pixels in [0, 1], or a signal's own values): its normalisation is built in. Images are (B, C, H, W); 1-D signals
    (a file that records their layout) are (B, L) for data given as (N, L), or (B, C, L): the shape the returned
    ``input_shape`` gives without the batch, which may be any size. Another shape fails with an error that names
    the size expected (torch.export's guard, ONNX Runtime's check; in .ts, the model's own message)."""
    held = read_meta(path).get("format")
    if held == SYNSET_FORMAT:
        return export_synset(path, to, overwrite=overwrite)
    target = Path(to)
    require(target.suffix in MODEL_EXPORTS, f"a model exports to {', '.join(MODEL_EXPORTS)}; got {target}")
    require(not target.exists() or overwrite, f"{target} exists; choose another --to or pass --overwrite")
    require(target.parent.exists(), f"folder {target.parent} does not exist")
    if target.suffix == ".onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401  (torch.onnx.export's exporter needs it)
        except ImportError:
            raise DistillabError("exporting to .onnx needs the onnx and onnxscript packages (pip install onnx "
                                 "onnxscript); .pt2 and .ts need nothing more") from None
    require(held == MODEL_FORMAT, f"{path} holds a {held!r} file, not a model or a set")
    model, meta = load_model(path, trust_code=trust_code)  # without load()'s reshaping hook: FromSignals does it
    norm = meta["normalisation"]
    layout = meta.get("layout")
    shape = list(data_mod.natural_shape(meta["input_shape"], layout))
    front = FromSignals(layout, meta["input_shape"]) if layout else None
    if front is not None and target.suffix == ".ts":
        front = torch.jit.script(front)  # the shape check kept in the traced program
    wrapped = nn.Sequential(*([front] if front is not None else []),
                            Renormalise.from_pixels(norm["mean"], norm["std"]), model).eval()
    example = torch.rand(2, *shape, generator=seeds.generator(0))  # the global RNG untouched
    with atomic_path(target, target.suffix) as tmp, torch.no_grad():
        if target.suffix == ".pt2":
            program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, str(tmp))
        elif target.suffix == ".ts":
            torch.jit.trace(wrapped, example).save(str(tmp))
        else:
            _export_onnx(wrapped, example, tmp)
    described = f"(B, {', '.join(map(str, shape))}), B any batch size"
    kind = f"1-D signals ({layout} data)" if layout else "images"
    return {"model": final_path(path), "to": str(target), "input_shape": shape,
            "inputs": f"{kind} {described}, unnormalised (the normalisation is built in)",
            "classes": meta["classes"], **({"layout": layout} if layout else {})}


def _export_onnx(wrapped: nn.Module, example: torch.Tensor, tmp: Path) -> None:
    """torch.onnx.export as torch 2.9+ does it (through torch.export): the batch dimension dynamic, the weights
    inside the one file (by default they go to a side file named after the temporary one, ``X.part.onnx.data``,
    which a renamed or moved .onnx loses), and without the exporter's progress lines or its logged and warned
    notices about optional packages (torchvision) and internal deprecations."""
    import logging
    import warnings

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    require(version >= (2, 6), f"exporting to .onnx needs torch 2.6 or newer (its torch.export-based exporter); this "
                               f"is torch {torch.__version__}: .pt2 and .ts need nothing more")
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapped, (example,), str(tmp), input_names=["x"], output_names=["logits"],
                              dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
    finally:
        quiet.setLevel(level)


def export_synset(path, to, *, overwrite: bool = False) -> dict:
    """A synthetic set as .npz (pixel-space images and labels: the npz: data format; 1-D signals in the data's own
    layout, (N, L) or (N, C, L), which ``layout`` and ``shape`` give) or as a PNG grid."""
    target = Path(to)
    require(target.suffix in (".npz", ".png"), f"--to must end in .npz or .png, got {target}")
    require(not target.exists() or overwrite, f"{target} exists; choose another --to or pass --overwrite")
    synset = SyntheticSet.load(path)
    require(target.parent.exists(), f"folder {target.parent} does not exist")
    (synset.export_npz if target.suffix == ".npz" else synset.save_grid)(target)
    signals = {"layout": synset.layout, "shape": list(synset.pixels().shape[1:])} if synset.layout else {}
    return {"synset": str(path), "to": str(target), "images": len(synset.labels), "ipc": synset.ipc, **signals}


def import_synset(path, *, format: str, data: str, out, overwrite: bool = False, experiment: int | None = None,
                  labels=None, quiet: bool = False) -> dict:
    """A synthetic set made by the reference code, as a distillab ``synset.safetensors`` (``out``) that
    ``evaluate`` takes: ``format`` ``vico`` (a ``res_*.pt`` of DC/DSA/DM; ``experiment``: which of its runs, default
    0) or ``mtt`` (``images_best.pt``/``images_N.pt``; ``labels``: its labels file, default the one beside it).
    ``data``: the dataset it was made from (the file does not say). Read with ``torch.load(weights_only=True)``
    only; see ``distillab.condense.importing``."""
    from ..condense.importing import read

    target = Path(out)
    require(target.suffix == ".safetensors", f"--out must be a FILE.safetensors, got {target}")
    require(not target.exists() or overwrite, f"{target} exists; choose another --out or pass --overwrite")
    require(target.parent.is_dir(), f"folder {target.parent} does not exist")
    ds = data_mod.load(data)
    synset = read(path, format, ds, experiment=experiment, labels=labels)
    synset.save(target)
    source = synset.meta["source"]
    Reporter(quiet).info(f"imported {source['imported_from']} ({format}) as {len(synset.labels)} images, IPC "
                         f"{synset.ipc}, of {ds.spec}{' (reordered class-major)' if source['reordered'] else ''}; "
                         f"wrote {target}")
    return {"synset": str(target), **{k: v for k, v in source.items() if k != "imported_from"},
            "imported_from": str(path), "ipc": synset.ipc, "images": len(synset.labels)}


def load(path, *, into: nn.Module | None = None, trust_code: bool = False):
    """What a distillab file holds: a model file as an ``nn.Module`` in eval mode, its metadata in
    ``model.distillab``; a synthetic-set file as a ``SyntheticSet``. ``into``: load a model file's weights into
    this module (for models built in Python, which a file cannot rebuild). A model of 1-D signals (of input_shape
    (C, 1, L), whose file records their ``layout``) takes them as (B, L) (one channel), (B, C, L) or (B, C, 1, L)
    (a forward pre-hook, ``models.SignalShapes``, reshapes them; another shape is one clear error)."""
    meta = read_meta(path)
    if meta.get("format") == SYNSET_FORMAT:
        require(into is None, f"{path} holds a synthetic set, not model weights")
        return SyntheticSet.load(path)
    require(meta.get("format") == MODEL_FORMAT, f"{path} holds a {meta.get('format')!r} file, not a model or a set")
    if into is None:
        model, meta = load_model(path, trust_code=trust_code)
        if meta.get("layout"):  # 1-D signals: also (B, L) or (B, C, L), as the user has them
            model.register_forward_pre_hook(SignalShapes(meta["input_shape"]))
    else:
        tensors, meta = load_tensors(path, MODEL_FORMAT)
        try:
            into.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise DistillabError(f"{path}: its weights do not fit {type(into).__name__} "
                                 f"({str(e).splitlines()[0][:100]})") from None
        model = into.eval()
    model.distillab = meta
    return model
