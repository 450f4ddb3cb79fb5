"""The benchmark models: the very networks of examples/mnist_models.py, built with either library.

    model = build("lenet", torch)          # or build("lenet", cnncy)
    criterion = build_criterion("lenet", torch)

Every model takes MNIST-shaped input (N, 1, 28, 28) and returns 10 class scores per image.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))
from mnist_models import LOSS, build  # noqa: E402,F401  (build is part of this module's interface)

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
MODELS = tuple(LOSS)


def build_criterion(name, lib):
    """The training loss of model `name`: NLL on examplesnet's log-probabilities, cross-entropy otherwise."""
    return getattr(lib.nn.functional, LOSS[name])
