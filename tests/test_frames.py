"""Warnings point at the user's line, whether cnncy's Python layer is compiled or not (cnncy/_frames.py)."""
import warnings

import numpy as np
import pytest

import cnncy
import cnncy.nn as nn
import cnncy.nn.functional as F
from cnncy import optim
from cnncy.utils.data import TensorDataset, random_split


def warning_lines(action):
    """(filename, line) of every warning that action() raises."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        action()
    assert record, "no warning was raised"
    return [(w.filename, w.lineno) for w in record]


def test_implicit_softmax_dim():
    x = cnncy.ones(2, 3)
    for action in (lambda: F.softmax(x), lambda: F.log_softmax(x), lambda: nn.Softmax()(x),
                   lambda: nn.LogSoftmax()(x)):
        assert {filename for filename, _ in warning_lines(action)} == {__file__}


def test_legacy_loss_reduction():
    logits, target = cnncy.ones(2, 3), cnncy.tensor([0, 1])
    assert warning_lines(lambda: F.cross_entropy(logits, target, size_average=True))[0][0] == __file__


def test_duplicate_parameters():
    weight = nn.Parameter(cnncy.ones(2))
    assert warning_lines(lambda: optim.SGD([weight, weight], lr=0.1))[0][0] == __file__


def test_empty_random_split():
    dataset = TensorDataset(cnncy.tensor(np.arange(3.0)))
    assert warning_lines(lambda: random_split(dataset, [0.9, 0.1, 0.0]))[0][0] == __file__


@pytest.mark.parametrize("name", ["autograd", "tensor", "nn.modules.module", "nn.functional.linear", "optim.sgd"])
def test_the_python_layer_is_compiled_unless_asked_not_to(name, monkeypatch):
    """setup.py compiles the hot Python modules; a build made with CNNCY_PURE_PYTHON=1 is exempt."""
    import importlib
    import os
    module = importlib.import_module(f"cnncy.{name}")
    if os.environ.get("CNNCY_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("built with CNNCY_PURE_PYTHON=1")
    assert not module.__file__.endswith(".py"), f"cnncy.{name} runs uncompiled from {module.__file__}"
    assert "compiled by Cython" in cnncy.config.config()["python_layer"]
