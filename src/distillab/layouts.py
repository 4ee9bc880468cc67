"""How examples are laid out: N examples, C channels, H x W pixels or L samples. Signals become (N, C, 1, L)
inside distillab -- images one row high, which every model family takes (the ConvNet turns 1-D for them). What a user
gets back (a loaded model, an export, a synthetic set's .npz, a function teacher's input) takes and gives them in
their own layout again: (B, L) or (B, C, L). Used by the data and the models alike, so it sits below both."""

from __future__ import annotations

import torch

SIGNAL_LAYOUTS = ("NL", "NCL")


def natural_shape(input_shape, layout: str | None) -> tuple:
    """The shape of one example as the user has it: (L,) for NL signals, (C, L) for NCL ones; for images (no
    layout) the (C, H, W) distillab holds."""
    c, _, length = input_shape
    return {"NL": (length,), "NCL": (c, length)}.get(layout, tuple(input_shape))


def to_natural(x: torch.Tensor, layout: str | None) -> torch.Tensor:
    """Examples (N, C, 1, L) as the data has them: (N, L) for NL, (N, C, L) for NCL; images unchanged."""
    return {"NL": lambda a: a[:, 0, 0, :], "NCL": lambda a: a[:, :, 0, :]}.get(layout, lambda a: a)(x)


def from_natural(x: torch.Tensor, layout: str | None) -> torch.Tensor:
    """The inverse of ``to_natural``: (N, L) or (N, C, L) signals as the (N, C, 1, L) distillab holds inside."""
    return {"NL": lambda a: a[:, None, None, :], "NCL": lambda a: a[:, :, None, :]}.get(layout, lambda a: a)(x)
