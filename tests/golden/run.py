"""Fixed quick runs whose outputs must not change when the code is reshaped (tests/test_golden.py).

    python tests/golden/run.py OUT_DIR            # prints the summary as JSON on stdout

Every command goes through the command line, in one process, at one thread, with the CPU's vector units capped
at AVX2 (set before torch loads), so that the same code gives the same bits on every x86 machine we use.
The summary keeps what the runs produced -- a sha256 per tensor of every .safetensors and .npz file, every
training step's loss terms, every epoch record and the printed metrics -- minus wall-clock figures.
"""

import os

for key, value in {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2",
                   "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"}.items():
    os.environ[key] = value

import contextlib  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from distillab.cli import main  # noqa: E402

FAST = ["--data", "digits", "--epochs", "2", "--batch-size", "64"]
T = "teacher/model.safetensors"
CONV = ["--student", "convnet:width=4,depth=2"]
RUNS = [
    ("train-mlp", ["train", *FAST, "--model", "mlp:hidden=32,dropout=0.2", "--augment", "shift:1"]),
    ("teacher", ["train", *FAST, "--model", "convnet:width=8,depth=2", "--select", "best-val", "--schedule", "step"]),
    ("kd-hinton", ["kd", *FAST, "--teacher", T, "--student", "mlp:hidden=16", "--temperature", "3", "--alpha", "0.7"]),
    ("kd-ce", ["kd", *FAST, "--teacher", T, "--student", "mlp:hidden=16", "--loss", "ce:smoothing=0.1"]),
    ("kd-kd-ce", ["kd", *FAST, "--teacher", T, "--student", "mlp:hidden=16", "--loss", "kd:T=2,w=0.5",
                  "--loss", "ce:w=0.5"]),
    ("kd-logit-mse", ["kd", *FAST, "--teacher", T, "--student", "mlp:hidden=16", "--loss", "logit-mse:reduce=mean"]),
    ("kd-rkd", ["kd", *FAST, "--teacher", T, *CONV, "--loss", "ce", "--loss", "rkd:distance=25,angle=50"]),
    ("kd-hint", ["kd", *FAST, "--teacher", T, *CONV, "--loss", "ce", "--loss", "hint:w=1"]),
    ("kd-hint-taps", ["kd", *FAST, "--teacher", T, *CONV, "--loss", "ce", "--loss", "hint",
                      "--tap", "student=features.0", "--tap", "teacher=features.0"]),
    ("kd-at", ["kd", *FAST, "--teacher", T, *CONV, "--loss", "ce", "--loss", "at:w=100,student=features.2,teacher=features.2"]),
    ("kd-live-augmented", ["kd", *FAST, "--teacher", T, "--student", "mlp:hidden=16", "--augment", "shift:1",
                           "--cache-teacher", "no"]),
    ("kd-ensemble", ["kd", *FAST, "--teacher", T, "train-mlp/model.safetensors", "--student", "mlp:hidden=16"]),
    ("predict-probs.npz", ["predict", T, "--output", "probs"]),
    ("predict-top3.npz", ["predict", T, "--output", "probs", "--top-k", "3"]),
    ("kd-blackbox", ["kd", *FAST, "--teacher-outputs", "predict-probs.npz", "--student", "mlp:hidden=16",
                     "--loss", "logit-mse:center=1"]),
    ("kd-blackbox-top3", ["kd", *FAST, "--teacher-outputs", "predict-top3.npz", "--student", "mlp:hidden=16",
                          "--loss", "kd:T=4"]),
    ("kd-chain", ["kd", *FAST, "--chain", T, "mlp:hidden=16", "mlp:hidden=8"]),
    ("train-seeds", ["train", *FAST, "--model", "mlp:hidden=8", "--seeds", "0,1"]),
    ("inspect", ["inspect", T]),
    ("evaluate-model", ["evaluate", "kd-hinton/model.safetensors"]),
    *[(f"condense-{m}", ["condense", "--data", "digits", "--method", m, "--ipc", "2", "--seed", "1"])
      for m in ("random", "herding", "kmeans", "mean")],
    ("condense-dm", ["condense", "--data", "digits", "--method", "dm", "--ipc", "2", "--iterations", "3",
                     "--batch-real", "16", "--model", "convnet:width=8,depth=2"]),
    ("condense-dm-plain", ["condense", "--data", "digits", "--method", "dm", "--ipc", "1", "--iterations", "3",
                           "--batch-real", "8", "--model", "convnet:width=8,depth=2", "--no-dsa", "--init", "noise",
                           "--lr-img", "0.5"]),
    ("condense-bptt-fixed", ["condense", "--data", "digits", "--method", "bptt", "--ipc", "1", "--iterations", "3",
                             "--bptt-steps", "1", "--bptt-epochs", "2", "--batch-real", "64"]),
    ("condense-bptt-random", ["condense", "--data", "digits", "--method", "bptt", "--ipc", "2", "--iterations", "3",
                              "--bptt-steps", "2", "--bptt-epochs", "1", "--batch-real", "64", "--init-net", "random",
                              "--model", "convnet:width=4,depth=2", "--lr-img", "0.02"]),
    ("evaluate-dm", ["evaluate", "condense-dm/synset.safetensors", "--models", "convnet:width=8,depth=2", "mlp:hidden=16",
                     "--runs", "2", "--epochs", "3", "--dsa"]),
    ("evaluate-dm-vectorised", ["evaluate", "condense-dm/synset.safetensors", "--models", "mlp:hidden=16",
                                "--runs", "2", "--epochs", "3", "--vectorise"]),
    ("evaluate-bptt-fixed", ["evaluate", "condense-bptt-fixed/synset.safetensors", "--models", "lenet5",
                             "--runs", "2", "--epochs", "2"]),
    ("evaluate-bptt-random", ["evaluate", "condense-bptt-random/synset.safetensors", "--models",
                              "convnet:width=4,depth=2", "--runs", "2", "--epochs", "2"]),
    ("export.npz", ["export", "condense-kmeans/synset.safetensors", "--to", "export.npz"]),
]
OUT_OF = {"predict": "--out", "export": None, "inspect": None}
VOLATILE = ("seconds", "peak_rss_mb", "iterations_per_second")


def _digest(array) -> list:
    """[sha256 of the bytes, sum, projection on a fixed pattern]: the bits, and two figures that another CPU's
    rounding moves only slightly while any real change of the computation moves them a lot."""
    if np.asarray(array).dtype.kind in "US":  # text (a file's record of its dataset): the bits only
        return [hashlib.sha256(np.asarray(array).tobytes()).hexdigest()[:16]]
    flat = np.asarray(array, dtype=np.float64).ravel()
    pattern = np.cos(np.arange(flat.size) * 0.7)
    return [hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16], float(flat.sum()),
            float(flat @ pattern)]


def _tensors(path: Path) -> dict:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: _digest(z[k]) for k in sorted(z.files)}
    from safetensors.torch import load_file
    return {k: _digest(v.numpy()) for k, v in sorted(load_file(str(path)).items())}


def _steady(value):
    """Drop wall-clock figures, recursively."""
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if not any(k.endswith(s) for s in VOLATILE)}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def _summarise(path: Path) -> dict:
    if path.is_file():
        return {"tensors": {path.name: _tensors(path)}}
    out = {"tensors": {str(p.relative_to(path)): _tensors(p) for p in sorted(path.rglob("*"))
                       if p.suffix in (".safetensors", ".npz")}}
    for p in sorted(path.rglob("steps.jsonl")):
        records = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        out.setdefault("steps", {})[str(p.relative_to(path))] = {
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16], "first": records[0], "last": records[-1],
            "count": len(records)}
    for p in sorted(path.rglob("metrics.jsonl")):
        out.setdefault("epochs", {})[str(p.relative_to(path))] = [
            _steady(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]
    return out


def run_all(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    summary = {}
    for name, args in RUNS:
        flag = OUT_OF.get(args[0], "--out")
        argv = list(args) + ([flag, name] if flag else [])
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv + ["--quiet", "--json"])
        assert code == 0, (name, code)
        entry = {"printed": _steady(json.loads(stdout.getvalue()))}
        if Path(name).exists():
            entry.update(_summarise(Path(name)))
        summary[name] = entry
    return summary


def machine() -> str:
    """Where bits can be expected to repeat: the same CPU model and the same torch."""
    fields = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "cpu family", "model", "model name") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    return f"{' / '.join(fields.values())} / torch {torch.__version__}"


if __name__ == "__main__":
    summary = run_all(Path(sys.argv[1]).resolve())
    print(json.dumps({"machine": machine(), "runs": summary}, indent=1, sort_keys=True))
