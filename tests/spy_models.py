"""Models for tests that watch what a protocol feeds them (imported by tests as ``import:spy_models:...``)."""

from torch import nn

FORWARDS: list[tuple[int, bool, int]] = []  # (model id, training mode, data_ptr of the input's storage)


def spy_mlp(input_shape, num_classes):
    """A small MLP that logs every forward pass: which model, in which mode, on which storage."""
    import math

    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 16), nn.ReLU(), nn.Linear(16, num_classes))

    def log(module, inputs):
        FORWARDS.append((id(module), module.training, inputs[0].untyped_storage().data_ptr()))

    model.register_forward_pre_hook(log)
    return model
