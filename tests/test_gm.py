"""Gradient matching (gm) and its siamese-augmented form (dsa): the layer-wise distance, the loop sizes of the
reference, zero loss when the synthetic set is the real data, and a run that lowers the matching loss."""

import numpy as np
import pytest
import torch

from distillab import data
from distillab.condense import METHODS, condense
from distillab.condense.methods.gm import GM, gradient_distance, loops_for
from distillab.data import TrainSet
from distillab.errors import DistillabError


def test_the_distance_is_one_minus_cos_per_output_channel_biases_left_out():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g)
    b = torch.randn(4, generator=g)
    assert float(gradient_distance([w, b], [w.clone(), -b])) == pytest.approx(0.0, abs=1e-5)  # bias ignored
    assert float(gradient_distance([w], [-w])) == pytest.approx(8.0, abs=1e-5)  # 4 channels x (1 - (-1))
    assert float(gradient_distance([w], [3 * w])) == pytest.approx(0.0, abs=1e-5)  # scale does not matter
    other = torch.randn(4, 3, 3, 3, generator=g)
    flat_w, flat_o = w.reshape(4, -1), other.reshape(4, -1)
    by_hand = (1 - (flat_w * flat_o).sum(1) / (flat_w.norm(dim=1) * flat_o.norm(dim=1))).sum()
    assert float(gradient_distance([w], [other])) == pytest.approx(float(by_hand), rel=1e-5)


def test_the_reference_loop_sizes():
    assert [loops_for(i) for i in (1, 5, 10, 30, 50, 100)] == [(1, 1), (1, 1), (10, 50), (10, 50), (50, 10), (50, 10)]


@pytest.mark.parametrize("name", ["gm", "dsa"])
def test_a_synthetic_set_equal_to_the_real_data_has_next_to_no_loss(name):
    """One real image per class and a synthetic set starting as those images: the gradients are the same, so the
    distance is only the reference's 1e-6 in the cosine's denominator -- with dsa only if the real and synthetic
    images share each draw. A set started from noise is the yardstick."""
    x = torch.randn(10, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    train = TrainSet(x, torch.arange(10), [str(c) for c in range(10)], (0.0,), (1.0,), {"data": "test"})

    def first_loss(init):
        losses = []
        method = METHODS.get(name)(iterations=1, outer=1, batch_real=1, model="convnet:width=4,depth=2", init=init)
        condense(train, method, 1, progress=lambda it, loss: losses.append(loss))
        return losses[0]

    assert first_loss("real") < 0.02 * first_loss("noise")


def test_gradient_matching_lowers_its_loss_on_digits():
    train = data.split(data.load("digits")).train_set()
    losses = []
    condense(train, GM(iterations=12, outer=1, batch_real=32, model="convnet:width=8,depth=2", lr_img=0.5), 2,
             progress=lambda it, loss: losses.append(loss))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_batch_norm_is_refused_with_a_reason():
    train = data.split(data.load("digits")).train_set()
    with pytest.raises(DistillabError, match="norm=instance"):
        condense(train, GM(iterations=1, model="convnet:width=4,depth=2,norm=batch"), 1)
