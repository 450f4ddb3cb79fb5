import os
import sys

import numpy as np
import pytest

# Tests import their shared helper (torch_compare) as a top-level module.
sys.path.insert(0, os.path.dirname(__file__))

import cnncy  # noqa: E402


def _stale_compiled_modules():
    """In an in-place build, the compiled Python-layer modules older than their .py: Python imports
    the compiled one, so an edit to the .py would go untested until `python setup.py build_ext --inplace`."""
    package = os.path.dirname(cnncy.__file__)
    if not os.path.exists(os.path.join(package, os.pardir, "setup.py")):
        return []  # an installed package: its file times say nothing
    stale = []
    for folder, _, files in os.walk(package):
        for name in files:
            stem, _, suffix = name.partition(".")
            source = os.path.join(folder, stem + ".py")
            if suffix.endswith(("so", "pyd")) and os.path.exists(source) and \
                    os.path.getmtime(source) > os.path.getmtime(os.path.join(folder, name)):
                stale.append(os.path.relpath(source, os.path.dirname(package)))
    return stale


if _stale_compiled_modules():
    pytest.exit(f"edited since last compiled: {', '.join(_stale_compiled_modules())}; run "
                "`python setup.py build_ext --inplace` first", returncode=4)


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
