"""teacher-service: a teacher behind HTTP on loopback (``distillab serve``), a student distilled through its URL
against the same teacher's local probabilities, the service's throughput and latency, and what augmentation costs
in queries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from ..api import distill, predict
from ..errors import DistillabError
from ..files import file_sha256
from ..models import load_model
from ..service.client import QueryOptions, ServiceClient
from .common import Bench, benchmark, table

SERVICE_RECIPES = {
    "quick": {"teacher": "convnet", "student": "mlp:hidden=64", "kd": dict(epochs=3, temperature=4.0, alpha=0.9),
              "augment": "shift:1", "load": {"requests": 40, "rows": 64}, "concurrency": [1, 4, 16]},
    "full": {"teacher": "convnet", "student": "mlp:hidden=800-800", "kd": dict(epochs=10, temperature=4.0, alpha=0.9),
             "augment": "shift:2", "load": {"requests": 400, "rows": 256}, "concurrency": [1, 4, 16]},
}


def _load_test(url: str, x: torch.Tensor, requests: int, rows: int, concurrency: int) -> dict:
    """``requests`` requests of ``rows`` inputs, ``concurrency`` in flight: throughput and latency percentiles."""
    client = ServiceClient(url, options=QueryOptions(concurrency=concurrency, query_batch=rows))
    batches = [x[(i * rows) % (len(x) - rows):][:rows] for i in range(requests)]

    def timed(batch):
        t0 = time.perf_counter()
        client.answer(batch)
        return time.perf_counter() - t0

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = np.array(list(pool.map(timed, batches)))
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": requests, "rows_per_request": rows,
            "requests_per_second": round(requests / wall, 1), "rows_per_second": round(requests * rows / wall, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2), "seconds": round(wall, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_in_another_process(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``distillab serve`` as its own process (one thread), as a service runs: the client's threads and the
    server's then do not share one interpreter. Returns (process, url) once it answers /health."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "distillab", "serve", str(model), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise DistillabError(f"the teacher service did not start (see {log})")


def _student(result) -> dict:
    m = result.metrics
    keep = ("test_accuracy", "test_errors", "teacher_mode", "teacher_queries", "teacher_requests", "cache_hits",
            "query_seconds", "queries_per_epoch", "train_seconds", "wall_seconds")
    return {**{k: m[k] for k in keep if k in m}, "model_sha256": file_sha256(Path(result.out) / "model.safetensors")}


@benchmark("teacher-service")
def bench_teacher_service(b: Bench) -> dict:
    """The teacher served on 127.0.0.1 by its own process; one student from the URL, one from the same probabilities read locally,
    one from the URL again replaying its cache; throughput at several concurrencies; an augmented student's
    query bill."""
    r = SERVICE_RECIPES["quick" if b.quick else "full"]
    teacher = b.teacher(r["teacher"])
    work = b.run_dir("teacher-service")
    work.mkdir(parents=True)
    kd = dict(data=b.data, student=r["student"], quiet=b.quiet, seed=0, **r["kd"])
    local_probs = work / "teacher-probs.npz"
    predict(teacher, b.data, output="probs", out=local_probs, quiet=True)
    server, url = _serve_in_another_process(teacher, work / "serve.log")
    try:
        students = {
            "local probabilities": _student(distill(teacher_outputs=local_probs, out=work / "local", **kd)),
            "URL": _student(distill(teacher_url=url, out=work / "url", query_cache=work / "queries.sqlite", **kd)),
            "URL, cache replayed": _student(distill(teacher_url=url, out=work / "replay",
                                                    query_cache=work / "queries.sqlite", **kd)),
            "URL with augmentation": _student(distill(teacher_url=url, out=work / "augmented", augment=r["augment"],
                                                      query_cache=work / "augmented.sqlite", **kd)),
        }
        _, meta = load_model(teacher)
        norm = meta["normalisation"]
        x = data_mod.normalise(data_mod.load(b.data).test.x, norm["mean"], norm["std"])
        load = [_load_test(url, x, r["load"]["requests"], r["load"]["rows"], c) for c in r["concurrency"]]
    finally:
        server.terminate()
        server.wait(60)
    replay, fresh = students["URL, cache replayed"], students["URL"]
    result = {"students": students, "load": load, "recipe": r,
              "replay_identical": replay["model_sha256"] == fresh["model_sha256"] and replay["teacher_queries"] == 0,
              "url_minus_local_accuracy": fresh["test_accuracy"] - students["local probabilities"]["test_accuracy"]}
    rows = [(name, f"{100 * s['test_accuracy']:.2f}", f"{s.get('teacher_queries', 0):,}",
             f"{s.get('cache_hits', 0):,}", f"{s['queries_per_epoch']:,}" if "queries_per_epoch" in s else "-",
             s["model_sha256"][:12])
            for name, s in students.items()]
    markdown = table(["student from", "test accuracy %", "rows queried", "cache hits", "queries per epoch",
                      "model sha256"], rows)
    markdown += "\n\n" + table(["concurrency", "requests/s", "rows/s", "p50 ms", "p99 ms"],
                               [(c["concurrency"], c["requests_per_second"], c["rows_per_second"], c["p50_ms"],
                                 c["p99_ms"]) for c in load])
    result["markdown"] = markdown
    return result
