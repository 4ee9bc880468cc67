import pytest
import torch

from distillab.augmentation import Augmenter, parse_augment, random_shift
from distillab.errors import DistillabError


def test_parse():
    assert parse_augment("none") == [] and parse_augment("shift:2") == [("shift", 2)]
    assert parse_augment("crop:4,flip") == [("crop", 4), ("flip", 0)]
    for bad in ["shift", "shift:x", "rotate:3", "shift:0"]:
        with pytest.raises(DistillabError):
            parse_augment(bad)


def test_shift_moves_content_within_range_and_fills_black():
    x = torch.zeros(200, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre
    fill = torch.tensor([-0.5])
    out = random_shift(x + fill.view(1, 1, 1, 1) * (x == 0), 2, fill, torch.Generator().manual_seed(0))
    pos = (out[:, 0] == 1.0).nonzero()[:, 1:]
    assert len(pos) == 200  # nothing lost: a 2 px shift keeps the centre pixel inside
    assert (pos - 4).abs().max() <= 2 and len({tuple(p.tolist()) for p in pos}) > 10
    assert torch.all((out == 1.0) | (out == -0.5))


def test_augmenter_is_seeded_and_refuses_flip_for_digits():
    aug = Augmenter("shift:2,flip", (0.5,), (0.25,))
    x = torch.randn(16, 1, 8, 8)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x)
    with pytest.raises(DistillabError, match="flip"):
        Augmenter("flip", (0.5,), (0.25,), allow_flip=False)
