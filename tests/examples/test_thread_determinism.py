"""Whole training steps of the example networks give bitwise identical parameters with 1, 2 or 3 threads.

The batch is large enough that every kernel (conv, fused conv-pool, linear, relu, pooling, dropout,
loss, SGD) takes its parallel path; ExamplesNet's dropout masks come from the seed alone.
"""
import os
import sys

import numpy as np
import pytest

import cnncy
import cnncy.nn.functional as F

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
sys.path.insert(0, EXAMPLES)
from mnist_models import LOSS, build  # noqa: E402


def parameters_after_training(name, steps=3, batch=32):
    cnncy.manual_seed(0)
    model = build(name, cnncy)
    images = cnncy.randn(batch, 1, 28, 28)
    labels = cnncy.randint(0, 10, (batch,))
    loss_fn = getattr(F, LOSS[name])
    optimizer = cnncy.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("name", ["simple", "lenet", "examplesnet"])
def test_parameters_are_bitwise_equal_for_any_thread_count(name, threads):
    threads(1)
    single = parameters_after_training(name)
    for count in (2, 3):
        threads(count)
        for expected, actual in zip(single, parameters_after_training(name)):
            np.testing.assert_array_equal(actual, expected)
