"""Scale-out with torchrun: ``torchrun --nproc_per_node=N -m distillab train|kd|condense|evaluate ...``.

Every rank runs the same command on the same data with the same seeds, so random draws agree everywhere; work is
split, not decided, per rank:
- training (``fit``): each global batch is cut into one shard per rank; gradients are summed over ranks, each
  weighted by its shard's share of the batch, which is the single-process gradient of the whole batch;
- distribution matching: each class's real batch is cut into shards; the embedding sums are summed over ranks;
- the evaluation protocol: the models are dealt out to the ranks, each replaying the random draws of the models
  before its own, so every model trains as it would in one process.
Rank 0 writes the output folder; the others write nothing. Backend: nccl on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """True inside a torchrun launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "cpu") -> None:
    """Join the process group torchrun set up (once)."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


# How a run on several processes compares with one process's: the same computation with float sums in another
# order (tests/test_torchrun.py measures it).
AGREEMENT = "within float rounding of one process's (parameters within 1e-5: sums in another order), not bit for bit"


def is_main() -> bool:
    return rank() == 0


def shard(n: int) -> slice:
    """This rank's contiguous part of ``n`` items (the first ranks take one more when it does not divide)."""
    size, r = world(), rank()
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks, in place (a no-op in one process)."""
    if world() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather(value) -> list:
    """Every rank's ``value`` (any picklable Python value made by this program, never read from a file)."""
    if world() == 1:
        return [value]
    out = [None] * world()
    dist.all_gather_object(out, value)
    return out


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
