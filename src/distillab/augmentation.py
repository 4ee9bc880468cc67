"""Batch augmentations on normalised image tensors, drawn from an explicit torch.Generator.

Spec: ``none``, ``shift:2`` (Hinton's +-2 px jitter), ``crop:4`` (pad 4 and crop, for colour data), ``flip``,
or several joined by commas: ``crop:4,flip``. Padding is black in pixel space (the normalised zero).
"""

from __future__ import annotations

import torch

from .errors import DistillabError, require


def parse_augment(text: str | None) -> list[tuple[str, int]]:
    if text is None or text in ("", "none"):
        return []
    ops = []
    for item in text.split(","):
        name, _, arg = item.strip().partition(":")
        if name in ("shift", "crop"):
            try:
                amount = int(arg)
            except ValueError:
                raise DistillabError(f"--augment {name}:N needs a whole number of pixels, got '{item}'") from None
            require(0 < amount <= 16, f"--augment {name}:N: N must be between 1 and 16, got {amount}")
            ops.append((name, amount))
        elif name == "flip" and not arg:
            ops.append(("flip", 0))
        else:
            raise DistillabError(f"unknown augmentation '{item}'; use none, shift:N, crop:N or flip (comma-joined)")
    return ops


def random_shift(x: torch.Tensor, pixels: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own integer offset in [-pixels, pixels]^2, filling the border with ``fill``."""
    b, c, h, w = x.shape
    offsets = torch.randint(-pixels, pixels + 1, (2, b), generator=generator, device=generator.device).to(x.device)
    if h == 1:  # a signal (one row high) shifts along its length only
        offsets[0] = 0
    fill = fill.view(1, c, 1, 1).to(x)
    padded = torch.nn.functional.pad(x - fill, (pixels,) * 4)
    rows = torch.arange(h, device=x.device).view(1, h) + pixels + offsets[0].view(b, 1)
    cols = torch.arange(w, device=x.device).view(1, w) + pixels + offsets[1].view(b, 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (b, h, w, c)
    return out.permute(0, 3, 1, 2) + fill


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


class Augmenter:
    """Applies a parsed augmentation spec to normalised batches."""

    def __init__(self, spec: str | None, mean, std, allow_flip: bool = True):
        self.ops = parse_augment(spec)
        self.spec = spec or "none"
        if not allow_flip:
            require(all(op != "flip" for op, _ in self.ops), "--augment flip is not meaningful for digits; drop it")
        # pixel value 0 in normalised space
        self.fill = -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for name, amount in self.ops:
            if name in ("shift", "crop"):
                x = random_shift(x, amount, self.fill, generator)
            elif name == "flip":
                x = random_flip(x, generator)
        return x
