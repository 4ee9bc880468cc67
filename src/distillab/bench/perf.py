"""perf: how close to the machine's peak distillab runs, beside the reference's loops, in one run.

The peak is measured here (a large fp32 matrix multiply); each workload's floating-point work is counted by
torch's FlopCounterMode on one step, so "share of peak" is counted work over measured time. Two baselines:
the ConvNet-3 step written as the dataset-distillation reference code writes it, run in a child process without
distillab's allocator setting, as that code runs; and (``same_process``) the reference's loop bodies
(bench/reference_style.py) timed in this process, at this process's allocator setting, in bursts alternating with
distillab's eager and compiled loops: the lead on the same basis. ``paper_budget``: seconds per iteration of gm,
dsa and dm at their reference recipes (IPC 10 and 50) times the reference's iterations, in hours here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

from .. import data as data_mod
from ..compiling import Compiled
from ..condense import DM, METHODS, condense
from ..condense.methods import dm as dm_mod
from ..condense.methods import gm as gm_mod
from ..dsa import DSA
from ..evaluation import Augmentation, train_sequential
from ..protocols import Protocol
from ..kd import Distillation, ModelTeacher, cache_teacher, hinton_losses
from ..models import build_model
from ..speed import tune_allocator
from ..training import TrainConfig, fit
from . import reference_style
from .common import Bench, benchmark, table

TARGETS = {"share_of_peak": 0.60, "speedup_over_reference_style": 1.3, "cached_kd_over_alone": 1.05}

# The reference-style step: the DD reference's ConvNet-3 and its training step, plainly (no distillab code).
REFERENCE_STYLE = r"""
import json, sys, time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(int(sys.argv[1])); width, images, repeats = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def block(cin): return [nn.Conv2d(cin, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(), nn.AvgPool2d(2)]
class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*block(1), *block(width), *block(width)); self.classifier = nn.Linear(width * 16, 10)
    def forward(self, x):
        x = F.pad(x, (2, 2, 2, 2))  # 28x28 run as 32x32
        return self.classifier(self.features(x).flatten(1))
g = torch.Generator().manual_seed(0)
x, y = torch.randn(images, 1, 28, 28, generator=g), torch.arange(images) % 10
net = ConvNet(); opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
def epoch():
    for i in range(0, images, 256):
        loss = F.cross_entropy(net(x[i:i + 256]), y[i:i + 256]); opt.zero_grad(); loss.backward(); opt.step()
epoch(); times = []
for _ in range(repeats):
    t = time.perf_counter(); epoch(); times.append(time.perf_counter() - t)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: one-off allocations stay out of the timing
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def peak_flops(sizes: tuple[int, ...], repeats: int) -> float:
    """fp32 FLOP/s of the fastest size^3 matrix multiply at this process's thread count: the best time of several,
    since a peak is what the machine reaches at its best (a shared machine's speed drifts within a run)."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = max(best, 2 * size ** 3 / (time.perf_counter() - t))
    return best


@benchmark("perf")
def bench_perf(b: Bench) -> dict:
    """Share of the measured fp32 peak, against a reference-style loop: an evaluation epoch, a DM iteration, training
    and KD with a cached teacher; scaling with IPC and real batch."""
    tune_allocator()
    threads = torch.get_num_threads()
    quick = b.quick
    width = 16 if quick else 128
    repeats = 2 if quick else 5
    sizes = (256,) if quick else (1024, 2048)
    peak = peak_flops(sizes, repeats)
    rows, result = [], {"threads": threads, "peak_gflops": round(peak / 1e9, 2), "targets": TARGETS}

    # an evaluation epoch: ConvNet-3 on 100 MNIST-sized images with DSA, the protocol's training loop
    images = 100
    x, y = torch.randn(images, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(images) % 10
    net = build_model(f"convnet:width={width},depth=3", (1, 28, 28), 10)
    proto, g, dsa = Protocol(epochs=1), torch.Generator().manual_seed(0), Augmentation(DSA.for_inputs((1, 28, 28)), False)

    def eval_epoch():
        train_sequential([net], x, y, proto, g, dsa)

    seconds = _median_seconds(eval_epoch, repeats)
    flops = _flops(eval_epoch)
    reference = json.loads(subprocess.run(
        [sys.executable, "-c", REFERENCE_STYLE, str(threads), str(width), str(images), str(repeats)],
        capture_output=True, text=True, check=True, env={**os.environ, "DISTILLAB_NO_MALLOPT": "1"}).stdout)
    result["eval_epoch"] = {"seconds": round(seconds, 4), "gflop": round(flops / 1e9, 3),
                            "share_of_peak": round(flops / seconds / peak, 3),
                            "reference_style_seconds": round(reference, 4),
                            "speedup_over_reference_style": round(reference / seconds, 3)}

    # DM iterations at IPC 10 (IPC 1 and a smaller real batch for the scaling), real images from MNIST-sized noise
    splits_like = data_mod.TrainSet(torch.randn(2560 if quick else 10 * 512, 1, 28, 28), torch.arange(
        2560 if quick else 10 * 512) % 10, [str(c) for c in range(10)], (0.0,), (1.0,), {"data": "noise"})
    result["dm"] = {}
    for ipc, real in ((10, 64 if quick else 256), (1, 64 if quick else 256), (10, 32 if quick else 64)):
        method = DM(iterations=2 if quick else 3, batch_real=real, model=f"convnet:width={width},depth=3")
        ticks = []
        condense(splits_like, method, ipc, progress=lambda it, loss: ticks.append(time.perf_counter()))
        per_iteration = statistics.median(b2 - a2 for a2, b2 in zip(ticks, ticks[1:]))
        one = DM(iterations=1, batch_real=real, model=method.model)
        flops = _flops(lambda: condense(splits_like, one, ipc))
        key = f"ipc{ipc}_real{real}"
        result["dm"][key] = {"seconds_per_iteration": round(per_iteration, 4), "gflop": round(flops / 1e9, 3),
                             "share_of_peak": round(flops / per_iteration / peak, 3)}

    # training and KD with a cached teacher: epoch time of a student alone and distilled
    digits = data_mod.split(data_mod.load("digits" if quick else "mnist"))
    teacher = build_model("mlp:hidden=256-256" if quick else "mlp:hidden=1200-1200", digits.input_shape, 10)
    cached = cache_teacher(ModelTeacher(teacher), digits.train.x)
    cfg = TrainConfig(epochs=1, batch_size=128)
    student = "mlp:hidden=32-32" if quick else "mlp:hidden=800-800"  # kd-speed's student

    def epoch(objective):
        return lambda: fit(build_model(student, digits.input_shape, 10), digits, cfg, objective=objective)

    alone = _median_seconds(epoch(None), repeats)
    distilled = _median_seconds(epoch(Distillation(cached, hinton_losses())), repeats)
    result["kd"] = {"alone_seconds": round(alone, 4), "cached_kd_seconds": round(distilled, 4),
                    "cached_kd_over_alone": round(distilled / alone, 3),
                    "images_per_second_alone": round(len(digits.train) / alone, 1)}
    peak = max(peak, peak_flops(sizes, repeats))  # once more at the end: the best of both
    result["peak_gflops"] = round(peak / 1e9, 2)
    e = result["eval_epoch"]
    e["share_of_peak"] = round(e["gflop"] * 1e9 / e["seconds"] / peak, 3)
    rows.append(("evaluation epoch (100 images, DSA)", f"{e['seconds']:.3f}", f"{e['share_of_peak']:.0%}",
                 f"{e['speedup_over_reference_style']:.2f}x"))
    for key, d in result["dm"].items():
        d["share_of_peak"] = round(d["gflop"] * 1e9 / d["seconds_per_iteration"] / peak, 3)
        ipc, real = key[3:].split("_real")
        rows.append((f"DM iteration, IPC {ipc}, {real} real per class", f"{d['seconds_per_iteration']:.3f}",
                     f"{d['share_of_peak']:.0%}", "-"))
    k = result["kd"]
    rows.append(("KD epoch, cached teacher / student alone", f"{k['cached_kd_seconds']:.3f} / {k['alone_seconds']:.3f}",
                 "-", f"{k['cached_kd_over_alone']:.3f}x"))
    result["same_process"] = _same_process(quick, width, repeats, digits, teacher, student)
    for r in result["same_process"].values():
        fast = (f" / {r['compiled_seconds']:.3f}", f" / {r['compiled_speedup']:.2f}x (compile "
                f"{r['compile_seconds']:.0f} s)") if "compiled_seconds" in r else ("", "")
        rows.append((f"{r['workload']}: reference loop / distillab eager / compiled (same process, same allocator)",
                     f"{r['reference_seconds']:.3f} / {r['eager_seconds']:.3f}{fast[0]}", "-",
                     f"{r['eager_speedup']:.2f}x{fast[1]}"))
    result["paper_budget"] = _paper_budget(quick, width)
    for key, r in result["paper_budget"].items():
        rows.append((f"{key}: s/iteration x {r['paper_iterations']:,} iterations (reference recipe)",
                     f"{r['seconds_per_iteration']:.2f}", "-", f"{r['hours_to_paper_budget']:.1f} h here"))
    result["torchrun"] = _torchrun_against_one_process(b, quick, width)
    for name, r in result["torchrun"].items():
        rows.append((f"{name}: torchrun 2 processes / 1 process {threads} threads",
                     f"{r['torchrun_seconds']:.2f} / {r['one_process_seconds']:.2f}", "-", f"{r['ratio']:.2f}x"))
    if not quick:
        result["target_met"] = {
            "eval_epoch_share": result["eval_epoch"]["share_of_peak"] >= TARGETS["share_of_peak"],
            "dm_share": result["dm"]["ipc10_real256"]["share_of_peak"] >= TARGETS["share_of_peak"],
            "eval_speedup": result["eval_epoch"]["speedup_over_reference_style"] >= TARGETS["speedup_over_reference_style"],
            "cached_kd": result["kd"]["cached_kd_over_alone"] <= TARGETS["cached_kd_over_alone"],
            "torchrun_no_slower": all(r["ratio"] <= 1.0 for r in result["torchrun"].values()),
            **{f"{k}_lead_same_process": max(r["eager_speedup"], r.get("compiled_speedup", 0))
               >= TARGETS["speedup_over_reference_style"]
               for k, r in result["same_process"].items() if k != "kd_epoch"}}
    result["markdown"] = table(["workload", "seconds", "share of fp32 peak", "vs reference style / ratio"], rows)
    return result


def _torchrun_against_one_process(b: Bench, quick: bool, width: int) -> dict:
    """DM and the evaluation protocol, once in this machine's usual process and once as 2 torchrun processes of one
    thread each: their own timings (condensing, training the models), from the runs' metrics."""
    data = "digits" if quick else "mnist"
    folder = b.work / "perf"
    folder.mkdir(parents=True, exist_ok=True)
    method = f"dm:iterations={2 if quick else 10},batch_real={32 if quick else 256},model=[convnet:width={width},depth=3]"
    evaluate = ["--models", f"convnet:width={width},depth=3", "--runs", "2" if quick else "4", "--epochs",
                "2" if quick else "20", "--dsa"]

    def run(args, processes: int):
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else []
        env = {**os.environ, "OMP_NUM_THREADS": "1" if processes > 1 else str(torch.get_num_threads())}
        out = subprocess.run([sys.executable, *launcher, "-m", "distillab", *args, "--quiet", "--json",
                              "--overwrite"], capture_output=True, text=True, env=env, cwd=folder, check=True)
        return json.loads(out.stdout)

    found = {}
    for processes in (1, 2):
        made = run(["condense", "--data", data, "--method", method, "--ipc", "10", "--out", f"dm-{processes}"],
                   processes)
        found.setdefault("dm", {})[processes] = made["condense_seconds"]
        if quick:  # the quick form checks the route; the protocol's spread is tested on its own
            continue
        scored = run(["evaluate", "dm-1/synset.safetensors", *evaluate, "--out", f"eval-{processes}"], processes)
        found.setdefault("evaluation", {})[processes] = next(iter(scored["models"].values()))["seconds"]
    return {name: {"one_process_seconds": t[1], "torchrun_seconds": t[2], "ratio": round(t[2] / t[1], 3)}
            for name, t in found.items()}


def _interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each of ``fns``, timed in alternating bursts (a shared machine's drift hits all alike);
    each is called once first (warm-up, and the compile of a compiled one: its first call's seconds are kept)."""
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), first[name]) for name, t in times.items()}


def _row(workload: str, found: dict) -> dict:
    (ref, _), (eager, _) = found["reference"], found["eager"]
    row = {"workload": workload, "reference_seconds": round(ref, 4), "eager_seconds": round(eager, 4), "eager_speedup": round(ref / eager, 3)}
    if "compiled" in found:
        fast, first = found["compiled"]
        row.update(compiled_seconds=round(fast, 4), compile_seconds=round(max(first - fast, 0.0), 1),
                   compiled_speedup=round(ref / fast, 3))
    return row


def _same_process(quick: bool, width: int, repeats: int, digits, teacher, student) -> dict:
    """The reference's evaluation epoch and DM iteration beside distillab's eager and compiled ones, and a KD epoch
    eager beside compiled, all in this process. The quick form leaves the compiled loops out (a compile takes
    10-30 s; tests/test_compiling.py runs them)."""
    compiled = (lambda fn: {}) if quick else (lambda fn: {"compiled": fn})
    spec = f"convnet:width={width},depth=3"
    g = torch.Generator().manual_seed(0)
    out = {}
    # the evaluation epoch: 100 images, DSA drawn per batch, SGD (VICO's evaluate_synset at IPC 10)
    x, y = torch.randn(100, 1, 28, 28, generator=g), torch.arange(100) % 10
    proto, dsa = Protocol(epochs=1), Augmentation(DSA.for_inputs((1, 28, 28)), False)
    nets = {k: build_model(spec, (1, 28, 28), 10, g) for k in ("reference", "eager", "compiled")}
    opt = torch.optim.SGD(nets["reference"].parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    out["eval_epoch"] = _row("evaluation epoch, 100 images, DSA", _interleaved({
        "reference": lambda: reference_style.protocol_epoch(nets["reference"], opt, x, y, dsa, g),
        "eager": lambda: train_sequential([nets["eager"]], x, y, proto, g, dsa),
        **compiled(lambda: train_sequential([nets["compiled"]], x, y, proto, g, dsa, compiled=True))}, repeats))
    # the DM iteration at IPC 10, 256 real images per class (64 quick), the reference's augmentation
    real_n, ipc = (32 if quick else 256), 10
    reals = [torch.randn(real_n, 1, 28, 28, generator=g) for _ in range(10)]
    net = build_model(spec, (1, 28, 28), 10, g).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    dsa_op = DSA.for_inputs((1, 28, 28), strategy=DM.recipe_options("vico")["dsa_strategy"], style="vico")
    draws = [dsa_op.sample(1, g) for _ in range(10)]
    syn = {k: torch.randn(10 * ipc, 1, 28, 28, generator=g).requires_grad_(True) for k in nets}
    opts = {k: torch.optim.SGD([v], lr=1.0, momentum=0.5) for k, v in syn.items()}
    fast = Compiled(dm_mod._embed)
    out["dm_iteration"] = _row(f"DM iteration, IPC {ipc}, {real_n} real per class", _interleaved({
        "reference": lambda: reference_style.dm_iteration(net, syn["reference"], opts["reference"], reals, ipc,
                                                          dsa_op, draws),
        "eager": lambda: dm_mod.matching_step(net, syn["eager"], ipc, reals, opts["eager"], dsa_op, draws),
        **compiled(lambda: dm_mod.matching_step(net, syn["compiled"], ipc, reals, opts["compiled"], dsa_op, draws,
                                                embed=fast))}, repeats))
    out["gm_iteration"] = _gm_same_process(quick, spec, g)
    # a KD epoch has no reference loop: eager against compiled only (the same figure twice in "reference")
    cached = cache_teacher(ModelTeacher(teacher), digits.train.x)

    def kd_epoch(mode):
        cfg = TrainConfig(epochs=1, batch_size=128, compile=mode)
        return lambda: fit(build_model(student, digits.input_shape, 10), digits, cfg,
                           objective=Distillation(cached, hinton_losses()))
    if not quick:
        kd = _interleaved({"eager": kd_epoch("off"), "compiled": kd_epoch("on")}, repeats)
        out["kd_epoch"] = _row("KD epoch, cached teacher (no reference loop: eager twice)",
                               {"reference": kd["eager"], **kd})
    return out


def _gm_same_process(quick: bool, spec: str, g: torch.Generator) -> dict:
    """A gradient-matching iteration at IPC 10 (vico recipe: 256 real per class, 10 matching steps, 50 inner epochs
    over the set between them), the reference's loop beside distillab's, from one matching step and one inner loop
    of each (timed once after a warm-up: a full-size matching step takes tens of seconds)."""
    ipc, real_n = 10, (16 if quick else 256)
    outer, inner = gm_mod.loops_for(ipc)
    reals = [torch.randn(real_n, 1, 28, 28, generator=g) for _ in range(10)]
    labels = torch.arange(10).repeat_interleave(ipc)
    sides = ("reference", "eager") + (() if quick else ("compiled",))
    nets = {k: build_model(spec, (1, 28, 28), 10, g).train() for k in sides}
    syn = {k: torch.randn(10 * ipc, 1, 28, 28, generator=g).requires_grad_(True) for k in sides}
    opt_img = {k: torch.optim.SGD([syn[k]], lr=0.1, momentum=0.5) for k in sides}
    opt_net = {k: torch.optim.SGD(nets[k].parameters(), lr=0.01) for k in sides}
    fast = Compiled(gm_mod._forward)

    def matching(k):
        if k == "reference":
            return lambda: reference_style.gm_matching_step(nets[k], syn[k], opt_img[k], reals, ipc,
                                                            gm_mod.gradient_distance)
        return lambda: gm_mod.matching_step(nets[k], syn[k], ipc, reals, opt_img[k])

    def inner_loop(k):
        pool = syn[k].detach()
        if k == "reference":
            return lambda: [reference_style.protocol_epoch(nets[k], opt_net[k], pool, labels, None, g)
                            for _ in range(inner)]
        batches = [(pick, None) for _ in range(inner) for pick in torch.randperm(len(pool), generator=g).split(256)]
        return lambda: gm_mod.network_steps(nets[k], opt_net[k], pool, labels, batches,
                                            forward=fast if k == "compiled" else None)
    match = _interleaved({k: matching(k) for k in sides}, 1)
    loops = _interleaved({k: inner_loop(k) for k in sides}, 1)
    iteration = {k: outer * match[k][0] + (outer - 1) * loops[k][0] for k in sides}
    # (seconds, "first call"): the compile shows as the inner loop's first call beyond its steady time
    found = {k: (iteration[k], iteration[k] + loops[k][1] - loops[k][0]) for k in sides}
    row = _row(f"gm iteration, IPC {ipc}, {real_n} real per class (10 matching steps, 9 inner loops)", found)
    row.update(matching_step_seconds={k: round(match[k][0], 3) for k in sides},
               inner_loop_seconds={k: round(loops[k][0], 3) for k in sides})
    return row


def _paper_budget(quick: bool, width: int) -> dict:
    """Seconds per iteration at each reference recipe (the network narrowed in the quick form), from its parts:
    gm and dsa time one matching step and one inner loop and count them as an iteration runs them (outer
    matching steps, outer - 1 inner loops); dm times whole iterations. Hours = seconds x the recipe's iterations."""
    g = torch.Generator().manual_seed(0)
    per_class = 300 if quick else 600
    train = data_mod.TrainSet(torch.randn(10 * per_class, 1, 28, 28, generator=g), torch.arange(10 * per_class) % 10,
                              [str(c) for c in range(10)], (0.0,), (1.0,), {"data": "noise"})
    real = 32 if quick else 256
    model = f"convnet:width={width},depth=3"
    out = {}
    for name in ("gm", "dsa", "dm"):
        cls = METHODS.resolve(name)
        paper = cls.recipe_options("vico")["iterations"]
        for ipc in ((10,) if quick else (10, 50)):
            cfg = cls.from_recipe("vico", model=model, batch_real=real, iterations=2 if name == "dm" else 1)
            if name == "dm":
                ticks = []
                condense(train, cfg, ipc, progress=lambda it, loss: ticks.append(time.perf_counter()))
                seconds, parts = ticks[1] - ticks[0], {}
            else:
                seconds, parts = _gm_iteration_seconds(cfg, train, ipc, g)
            out[f"{name} IPC {ipc}"] = {"seconds_per_iteration": round(seconds, 3), "paper_iterations": paper,
                                        "hours_to_paper_budget": round(seconds * paper / 3600, 2), **parts}
    return out


def _gm_iteration_seconds(cfg, train, ipc: int, g: torch.Generator) -> tuple[float, dict]:
    """One gradient-matching iteration's seconds from one matching step and one inner loop, as gm's loop runs
    them (gm.gradient_matching): outer matching steps with an inner loop between each two. Each part is timed once,
    cold (a full-size matching step takes tens of seconds), so the figure leans high by their first-call cost."""
    outer, inner = gm_mod.loops_of(cfg, ipc)
    k = train.num_classes
    augment = gm_mod.siamese_augmentation(train.input_shape, cfg) if cfg.dsa else None
    syn = torch.randn(k * ipc, *train.input_shape, generator=g).requires_grad_(True)
    labels = torch.arange(k).repeat_interleave(ipc)
    net = build_model(cfg.model, train.input_shape, k, g).train()
    opt_img = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
    reals = [gm_mod.real_batch(train, idx, cfg.batch_real, cfg.real_draw, g) for idx in train.class_indices()]
    draws = [augment.sample(1, g) if augment is not None else None for _ in reals]
    t0 = time.perf_counter()
    gm_mod.matching_step(net, syn, ipc, reals, opt_img, augment, draws)
    match = time.perf_counter() - t0
    pool = syn.detach().clone()
    batches = [(pick, augment.sample(len(pick), g) if augment is not None else None)
               for pick in gm_mod.inner_batches(len(pool), cfg, g, inner)]
    t0 = time.perf_counter()
    gm_mod.network_steps(net, opt_net, pool, labels, batches, augment)
    inner_seconds = time.perf_counter() - t0
    return outer * match + (outer - 1) * inner_seconds, {"outer": outer, "inner": inner,
                                                          "matching_step_seconds": round(match, 3),
                                                          "inner_loop_seconds": round(inner_seconds, 3)}
