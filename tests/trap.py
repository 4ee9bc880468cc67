"""A module that files try to make distillab import. Importing it is running code: tests check it stays unloaded
unless the user passed --trust-code."""

CALLS = []


def make(input_shape, num_classes):
    from distillab.models import MLP

    CALLS.append((tuple(input_shape), num_classes))
    return MLP(input_shape, num_classes, hidden=[8])
