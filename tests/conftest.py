import os
import sys

import numpy as np
import pytest

# Tests import their shared helper (torch_compare) as a top-level module.
sys.path.insert(0, os.path.dirname(__file__))

import cnncy  # noqa: E402


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def threads():
    """Restores cnncy's thread count after a test that changes it."""
    before = cnncy.get_num_threads()
    yield cnncy.set_num_threads
    cnncy.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
