"""Batch augmentations on normalised image tensors, drawn from an explicit torch.Generator.

Spec: ``none``, ``shift:2`` (Hinton's +-2 px jitter), ``crop:4`` (pad 4 and crop, for colour data), ``flip``,
or several joined by commas: ``crop:4,flip``. Padding is black in pixel space (the normalised zero).

``DCAugment``: the reference's non-differentiable evaluation augmentation (one of crop, scale, rotate, noise per
image), the protocol's ``augment="dc"``; it pads as the reference does: with the batch's mean or the dataset's
mean (0 after normalising), not black.
"""

from __future__ import annotations

import numpy as np
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


# ----------------------------------------------------------------------------------------------------------------
# The reference's non-differentiable evaluation augmentation ("DC augmentation", docs/reference.md §2)

DC_OPS = ("crop", "scale", "rotate", "noise")


class DCAugment:
    """Per image, ONE op drawn at random from ``strategy``, as the gradient-matching reference (VICO's ``augment``)
    augments the images it trains evaluation models on when DSA is off (its MNIST strategy, ``crop_scale_rotate``,
    is the default). Given the same draws it gives the reference's images (tests/test_reference_equivalence.py):

    - crop:   pad by ``crop`` px with the batch's per-channel mean, then take the window at a random offset in
              [0, 2*crop) per axis, so content moves by -crop+1 .. +crop px (an integer shift);
    - scale:  nearest-neighbour resize (``F.interpolate``) to int(f*H) x int(f'*W), f and f' uniform in
              [1-scale, 1+scale); centred on a square canvas of 0 in normalised space (the dataset mean) and cut back
              to H x W around the canvas centre, with the reference's integer rounding;
    - rotate: whole degrees uniform in [-rotate, rotate), counter-clockwise as displayed, by scipy's cubic-spline
              ``ndimage.rotate`` on an enlarged canvas (the reference's own call), whose centre is cut back out;
              corners filled with the mean of the batch's channel means;
    - noise:  Gaussian noise of std ``noise`` added in normalised space.

    Every draw comes from the generator, a fixed number per image whichever op is chosen, so a replay (``sample``)
    draws exactly what training draws. Resizing and rotating go image by image, as the reference does (on the CPU
    for the rotation). Signals (one row high) crop and scale along their length and never rotate.
    """

    def __init__(self, strategy: str = "crop_scale_rotate", crop: int = 4, scale: float = 0.2, rotate: int = 45,
                 noise: float = 0.001, input_shape: tuple[int, ...] = (1, 28, 28)):
        names = [name for name in strategy.split("_") if name]
        unknown = [name for name in names if name not in DC_OPS]
        require(not unknown, f"unknown DC augmentation op {', '.join(map(repr, unknown))} in strategy '{strategy}'; "
                             f"use ops from {', '.join(DC_OPS)} joined by '_'")
        require(len(input_shape) == 3, f"DC augmentation needs an input shape (C, H, W), got {tuple(input_shape)}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.one_d = self.input_shape[1] == 1
        self.ops = [name for name in dict.fromkeys(names) if not (self.one_d and name == "rotate")]
        require(bool(self.ops), f"DC augmentation strategy '{strategy}' leaves no op"
                                + (" for signals (one row high: no rotation)" if self.one_d else ""))
        require(isinstance(crop, int) and 1 <= crop <= 64, f"DC crop must be a whole number of pixels in 1..64, "
                                                           f"got {crop}")
        require(0.0 < scale < 1.0, f"DC scale must be in (0, 1), got {scale}")
        require(isinstance(rotate, int) and 1 <= rotate <= 180, f"DC rotate must be whole degrees in 1..180, "
                                                                f"got {rotate}")
        require(noise >= 0.0, f"DC noise must be >= 0, got {noise}")
        self.crop, self.scale, self.rotate, self.noise = crop, scale, rotate, noise

    @classmethod
    def for_inputs(cls, input_shape, **options) -> "DCAugment":
        return cls(input_shape=tuple(input_shape), **options)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Parameters for n images, drawn on the generator's device; the same draws whatever ops are chosen.
        ``size``: the resized (rows, columns), int(f * H) and int(f' * W) of factors drawn in float64 as numpy
        draws the reference's."""
        device = generator.device
        _, h, w = self.input_shape
        factor = 1 - self.scale + 2 * self.scale * torch.rand(n, 2, generator=generator, device=device,
                                                              dtype=torch.float64)
        size = (factor * torch.tensor([h, w], dtype=torch.float64, device=device)).floor().long().clamp_min(1)
        if self.one_d:
            size[:, 0] = 1
        params = {
            "op": torch.randint(len(self.ops), (n,), generator=generator, device=device),
            "offset": torch.randint(2 * self.crop, (n, 2), generator=generator, device=device),  # (row, col)
            "size": size,
            "angle": torch.randint(-self.rotate, self.rotate, (n,), generator=generator, device=device),
        }
        if "noise" in self.ops:
            params["noise"] = torch.randn((n, *self.input_shape), generator=generator, device=device)
        return params

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        require(x.dim() == 4 and tuple(x.shape[1:]) == self.input_shape,
                f"DC augmentation was set up for inputs {self.input_shape}, got a batch {tuple(x.shape)}")
        p = {k: v.to(x.device) for k, v in params.items()}
        require(len(p["op"]) == len(x), f"DC parameters drawn for {len(p['op'])} images, the batch has {len(x)}")
        # of the whole batch, before any image changes, channel by channel as the reference takes them
        channel_mean = [float(x[:, c].mean()) for c in range(x.shape[1])]
        out = x.clone()
        for k, name in enumerate(self.ops):
            chosen = p["op"] == k
            if not bool(chosen.any()):
                continue
            if name == "crop":
                out[chosen] = _dc_crop(x[chosen], p["offset"][chosen], self.crop, channel_mean, self.one_d)
            elif name == "noise":
                out[chosen] = x[chosen] + self.noise * p["noise"][chosen].to(x.dtype)
            else:
                for i in torch.nonzero(chosen, as_tuple=True)[0].tolist():
                    out[i] = (_dc_scale(x[i], p["size"][i].tolist()) if name == "scale" else
                              _dc_rotate(x[i], int(p["angle"][i]), float(np.mean(channel_mean))))
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(len(x), generator))


def _dc_crop(x: torch.Tensor, offset: torch.Tensor, pad: int, fill: list[float], one_d: bool) -> torch.Tensor:
    """Pad by ``pad`` with ``fill`` (per channel) and take the H x W window whose top-left corner is ``offset``
    (row, col)."""
    b, c, h, w = x.shape
    shift = offset - pad
    if one_d:
        shift[:, 0] = 0
    rows = torch.arange(h, device=x.device).view(1, h) + shift[:, :1]
    cols = torch.arange(w, device=x.device).view(1, w) + shift[:, 1:]
    inside = ((rows >= 0) & (rows < h)).view(b, 1, -1, 1) & ((cols >= 0) & (cols < w)).view(b, 1, 1, -1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    picked = x.permute(0, 2, 3, 1)[batch, rows.clamp(0, h - 1).view(b, -1, 1), cols.clamp(0, w - 1).view(b, 1, -1)]
    fill = torch.tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return torch.where(inside, picked.permute(0, 3, 1, 2), fill)


def _dc_scale(image: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Nearest-neighbour resize of one (C, H, W) image to ``size``, centred on a square canvas of zeros (side: the
    largest of both sizes), cut back to H x W around the canvas centre; offsets rounded as the reference does."""
    c, h, w = image.shape
    new_h, new_w = size
    resized = torch.nn.functional.interpolate(image[None], [new_h, new_w])[0]
    side = max(new_h, new_w, h, w)
    canvas = image.new_zeros(c, side, side)
    r, q = int((side - new_h) / 2), int((side - new_w) / 2)
    canvas[:, r:r + new_h, q:q + new_w] = resized
    r, q = int((side - h) / 2), int((side - w) / 2)
    return canvas[:, r:r + h, q:q + w]


def _dc_rotate(image: torch.Tensor, degrees: int, fill: float) -> torch.Tensor:
    """Rotate one (C, H, W) image counter-clockwise (as displayed) by whole degrees with scipy's cubic spline onto
    an enlarged canvas filled with ``fill``, and cut its centre back out."""
    from scipy.ndimage import rotate  # scipy comes with scikit-learn; loaded only when an image is rotated

    c, h, w = image.shape
    turned = rotate(image.detach().cpu().numpy(), angle=degrees, axes=(-2, -1), cval=fill)
    r, q = int((turned.shape[-2] - h) / 2), int((turned.shape[-1] - w) / 2)
    return torch.from_numpy(turned[:, r:r + h, q:q + w].copy()).to(image.device, image.dtype)
