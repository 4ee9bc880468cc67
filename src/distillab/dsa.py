"""Differentiable Siamese Augmentation (DSA; Zhao & Bilen, 2021) for dataset distillation.

Each call picks ONE op family at random and samples its parameters; the same parameters can then be applied to
the real batch and to the synthetic batch ("siamese"), so matching losses compare like with like. Every op is
differentiable w.r.t. the images (synthetic images learn through it): geometric ops use affine_grid/grid_sample,
cutout multiplies by a mask, colour ops are arithmetic.

Siamese use (one parameter set shared by batches of any size)::

    p = dsa.sample(1, generator)
    real_aug, syn_aug = dsa.apply(real, p), dsa.apply(syn, p)

Evaluation-time use (independent parameters per image): ``dsa(x, generator)``.

Images are normalised (N, C, H, W) tensors; "black"/padding is the normalised zero, as in the reference.

Two styles of the crop and cutout ops. ``distillab`` (the default) translates by a fraction of the size with
bilinear resampling and centres cutouts on [0, 1); ``vico`` is the reference's own (VICO's and MTT's DiffAugment):
whole-pixel translations of -k..k px (k = int(size * crop + 0.5)) by a gather with zeros beyond the border, and
cutout squares of int(size * cutout + 0.5) px whose centre row and column are drawn from 0..size (0..size-1 for an
odd side) and clipped at the border. Colour, flip, scale and rotate are the same in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import DistillabError, require

FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
STYLES = ("distillab", "vico")
# The reference's strategy string, every family, and its strategy for digit datasets (no flip)
VICO_STRATEGY = "color_crop_cutout_flip_scale_rotate"
VICO_DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"


@dataclass
class DSAParams:
    """The sampled parameters of one call, so that several batches can be augmented identically.

    ``values`` holds tensors whose first dimension is ``n`` (one row per image, or a single row shared by all):

    - color:  brightness (n,) additive offset; saturation (n,) and contrast (n,) multiplicative factors
    - crop:   shift (n, 2) translation (dx, dy) as a fraction of the image size; positive moves content right/down
              (style vico: pixels (n, 2) whole-pixel offsets (row, col): output[i, j] = input[i + row, j + col])
    - cutout: centre (n, 2) centre (cx, cy) of the zeroed square as a fraction of the size, in [0, 1)
              (style vico: offset (n, 2) centre (row, col) in whole pixels)
    - flip:   flip (n,) bool, flip horizontally where True
    - scale:  scale (n, 2) factors (sx, sy) of the sampling grid; > 1 shrinks the content, < 1 zooms in
    - rotate: angle (n,) degrees
    """

    family: str
    values: dict[str, torch.Tensor]

    @property
    def n(self) -> int:
        return len(next(iter(self.values.values())))

    def to(self, device) -> "DSAParams":
        return DSAParams(self.family, {k: v.to(device) for k, v in self.values.items()})


class DSA:
    """Samples and applies DSA op families; defaults are the reference settings."""

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", allow_flip: bool = True,
                 scale: float = 1.2, rotate_degrees: float = 15.0, crop: float = 0.125, cutout: float = 0.5,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5, one_d: bool = False,
                 style: str = "distillab", image_size: tuple[int, int] | None = None):
        names = [name for name in strategy.split("_") if name]
        unknown = [name for name in names if name not in FAMILIES]
        require(not unknown, f"unknown DSA op family {', '.join(map(repr, unknown))} in strategy '{strategy}'; "
                             f"use op families from {', '.join(FAMILIES)} joined by '_'")
        # Flipping changes the meaning of digits, so it is dropped for them rather than refused. Signals (one row
        # high) keep the ops that make sense along a length: no rotation, no reversal; crop and scale act along it.
        dropped = ({"flip"} if not allow_flip else set()) | ({"flip", "rotate"} if one_d else set())
        self.one_d = one_d
        self.families = [name for name in dict.fromkeys(names) if name not in dropped]
        require(bool(self.families), f"DSA strategy '{strategy}' leaves no op family"
                                     + ("" if allow_flip else " once 'flip' is dropped (allow_flip=False)"))
        require(scale >= 1.0, f"DSA scale must be >= 1, got {scale}")
        require(rotate_degrees >= 0.0, f"DSA rotate_degrees must be >= 0, got {rotate_degrees}")
        require(0.0 <= crop < 1.0, f"DSA crop must be in [0, 1), got {crop}")
        require(0.0 < cutout <= 1.0, f"DSA cutout must be in (0, 1], got {cutout}")
        require(style in STYLES, f"DSA style must be one of {', '.join(STYLES)}, got '{style}'")
        self.style = style
        self.image_size = tuple(image_size) if image_size is not None else None  # (H, W): style vico's draws
        self.scale, self.rotate_degrees, self.crop, self.cutout = scale, rotate_degrees, crop, cutout
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    @classmethod
    def for_inputs(cls, input_shape, strategy: str = "", **options) -> "DSA":
        """The reference settings for inputs of this shape: flips for colour images only, the 1-D ops for signals.
        A ``strategy`` named explicitly is taken as it is (flip included), but for what signals cannot do."""
        channels, height = input_shape[0], input_shape[1]
        size = tuple(input_shape[1:])
        if strategy:
            return cls(strategy=strategy, one_d=height == 1, image_size=size, **options)
        return cls(allow_flip=channels == 3 and height > 1, one_d=height == 1, image_size=size, **options)



    def sample(self, n: int, generator: torch.Generator, device=None, size: tuple[int, int] | None = None
               ) -> DSAParams:
        """Choose one family and draw parameters for n images (n=1: one set to share across batches).

        All randomness comes from ``generator`` (never the global RNG) and is drawn on its device. Style vico draws
        whole pixels, so it needs the images' (H, W) as ``size`` for its crop and cutout.
        """
        require(n >= 1, f"DSA.sample needs n >= 1, got {n}")
        gen_device = generator.device

        def rand(*shape):
            return torch.rand(shape, generator=generator, device=gen_device)

        family = self.families[int(torch.randint(len(self.families), (1,), generator=generator,
                                                 device=gen_device).item())]
        if self.style == "vico" and family in ("crop", "cutout"):
            size = size or self.image_size
            require(size is not None, "DSA style vico draws whole pixels: pass the images' size to sample()")
            if family == "crop":
                reach = [int(s * self.crop + 0.5) for s in size]
                values = {"pixels": torch.stack([torch.randint(-k, k + 1, (n,), generator=generator,
                                                               device=gen_device) for k in reach], 1)}
            else:
                side = [int(s * self.cutout + 0.5) for s in size]
                values = {"offset": torch.stack([torch.randint(0, s + 1 - k % 2, (n,), generator=generator,
                                                               device=gen_device) for s, k in zip(size, side)], 1)}
            params = DSAParams(family, values)
            return params if device is None else params.to(device)
        if family == "color":
            values = {"brightness": (rand(n) - 0.5) * self.brightness,
                      "saturation": rand(n) * self.saturation,
                      "contrast": rand(n) + self.contrast}
        elif family == "crop":
            values = {"shift": (rand(n, 2) * 2 - 1) * self.crop}
        elif family == "cutout":
            values = {"centre": rand(n, 2)}
        elif family == "flip":
            values = {"flip": rand(n) < 0.5}
        elif family == "scale":
            values = {"scale": rand(n, 2) * (self.scale - 1 / self.scale) + 1 / self.scale}
        else:  # rotate
            values = {"angle": (rand(n) * 2 - 1) * self.rotate_degrees}
        params = DSAParams(family, values)
        return params if device is None else params.to(device)

    def apply(self, x: torch.Tensor, params: DSAParams) -> torch.Tensor:
        """Apply exactly ``params`` to x; params drawn for n == len(x), or for n == 1 (shared by every image)."""
        require(x.dim() == 4, f"DSA expects images shaped (N, C, H, W), got shape {tuple(x.shape)}")
        require(params.n in (1, len(x)),
                f"DSA params were sampled for {params.n} images but the batch has {len(x)}; "
                f"sample for len(x) images, or for 1 to share one set across batches")
        # Floating values follow x's dtype (gradcheck in float64, mixed precision); masks stay bool.
        v = {k: t.to(x.device, x.dtype if t.is_floating_point() else t.dtype) for k, t in params.values.items()}
        if params.family == "color":
            return _color(x, v["brightness"], v["saturation"], v["contrast"])
        if params.family == "crop" and "pixels" in v:
            return _shift_pixels(x, v["pixels"], self.one_d)
        if params.family == "cutout" and "offset" in v:
            return _cutout_pixels(x, v["offset"], self.cutout)
        if params.family == "crop":
            shift = v["shift"] * torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device) if self.one_d else v["shift"]
            eye = torch.eye(2, dtype=x.dtype, device=x.device).expand(len(shift), 2, 2)
            # Normalised coordinates span 2, and the grid samples *from* the shifted position, hence -2.
            return _warp(x, torch.cat([eye, -2 * shift.unsqueeze(2)], dim=2))
        if params.family == "cutout":
            return _cutout(x, v["centre"], self.cutout)
        if params.family == "flip":
            return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)
        if params.family == "scale":
            sx, sy = v["scale"].unbind(1)
            if self.one_d:
                sy = torch.ones_like(sy)
            zero = torch.zeros_like(sx)
            return _warp(x, torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1))
        if params.family == "rotate":  # (style vico: degrees to radians in the reference's order of operations)
            a = v["angle"] / 180 * math.pi if self.style == "vico" else v["angle"] * (math.pi / 180)
            cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
            # Rotation in normalised coordinates (as in the reference; exact for square images).
            return _warp(x, torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1))
        raise DistillabError(f"unknown DSA op family '{params.family}'; use one of {', '.join(FAMILIES)}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Independent parameters for every image (evaluation-time augmentation)."""
        return self.apply(x, self.sample(len(x), generator, size=tuple(x.shape[2:])))


def _color(x: torch.Tensor, brightness: torch.Tensor, saturation: torch.Tensor,
           contrast: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation and contrast in sequence, as in the reference."""
    x = x + brightness.view(-1, 1, 1, 1)
    # Saturation: scale each pixel's deviation from its channel mean (a no-op for one channel, where x == m).
    m = x.mean(dim=1, keepdim=True)
    x = m + (x - m) * saturation.view(-1, 1, 1, 1)
    # Contrast: scale the deviation from the image mean.
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return m + (x - m) * contrast.view(-1, 1, 1, 1)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample x through the affine map theta (one per image, or one shared); zeros outside the image."""
    theta = theta.expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _cutout(x: torch.Tensor, centre: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero a square of side fraction*size around each centre (clipped at the border), via a mask."""
    _, _, h, w = x.shape
    side_h, side_w = max(1, round(fraction * h)), max(1, round(fraction * w))
    # Integer pixel bounds; the mask is constant, so gradients flow to every kept pixel.
    top = (centre[:, 1] * h).floor().long().view(-1, 1) - side_h // 2
    left = (centre[:, 0] * w).floor().long().view(-1, 1) - side_w // 2
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + side_h)  # (n, h)
    in_cols = (cols >= left) & (cols < left + side_w)  # (n, w)
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))  # (n, h, w)
    return x * keep.unsqueeze(1).to(x.dtype)


def _shift_pixels(x: torch.Tensor, pixels: torch.Tensor, one_d: bool) -> torch.Tensor:
    """output[i, j] = x[i + row, j + col] (whole pixels, one offset per image or one shared), 0 beyond the border:
    a gather from x framed by one pixel of zeros, indices clamped into the frame -- which also gives the result the
    reference's memory layout (channels last), so its convolutions round as the reference's do."""
    b, _, h, w = x.shape
    pixels = pixels.long().expand(b, 2).clone()
    if one_d:
        pixels[:, 0] = 0
    framed = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device).view(1, h) + pixels[:, :1] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + pixels[:, 1:] + 1).clamp(0, w + 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return framed.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)


def _cutout_pixels(x: torch.Tensor, offset: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero the square of int(size * fraction + 0.5) px per side whose first row and column are offset - side // 2,
    clipped at the border (one offset per image or one shared)."""
    b, _, h, w = x.shape
    side_h, side_w = int(h * fraction + 0.5), int(w * fraction + 0.5)
    offset = offset.long().expand(b, 2)
    top, left = (offset[:, :1] - side_h // 2), (offset[:, 1:] - side_w // 2)
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + side_h)
    in_cols = (cols >= left) & (cols < left + side_w)
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)
