"""A transfer set: the images a data-free method made from the teacher alone, labelled by the teacher, and the
splits a student learns from it with."""

from __future__ import annotations

import dataclasses

import torch

from .. import data as data_mod
from .. import seeds
from ..condense.synset import SyntheticSet


def transfer_set(made: dict, method, seed: int, splits, teacher_file: str) -> SyntheticSet:
    """``made`` (what ``synthesize`` returns) as a synthetic set of the data ``splits`` describe: the teacher's
    argmax as labels, its logits kept, the method and its budget in the metadata."""
    return SyntheticSet(images=made["images"], labels=made["teacher_logits"].argmax(1), classes=list(splits.classes),
                        mean=tuple(splits.mean), std=tuple(splits.std), label_logits=made["teacher_logits"],
                        meta={"method": method.name, "recipe": {**method.describe(), "seed": seed},
                              "made_as": made["labels"].tolist(), "source": {"teacher": teacher_file, "data": None},
                              "budget": {"synthesis_seconds": made["seconds"], **made["peak"],
                                         "real_images_read": 0},
                              **({"layout": splits.layout} if getattr(splits, "layout", None) else {})})


def transfer_splits(splits, transfer: SyntheticSet, seed: int):
    """``splits`` with the transfer images as the training split and a tenth of them (at most 1,000, drawn by
    ``seed``) held out as the validation split, where the student's agreement with the teacher is measured: no real
    image is used but the test split's, measured once at the end."""
    n_val = min(1000, max(1, len(transfer.labels) // 10))
    order = torch.randperm(len(transfer.labels), generator=seeds.generator(seed))
    held, used = order[:n_val].sort().values, order[n_val:].sort().values
    return dataclasses.replace(splits, train=data_mod.ImageSet(transfer.images[used], transfer.labels[used]),
                               val=data_mod.ImageSet(transfer.images[held], transfer.labels[held]), val_size=n_val,
                               train_index=torch.arange(len(used)))
